"""Row bands and row chunks on the host threads (``geometry.bands``): every row once, any thread count."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lotus2_ros.geometry import bands
from lotus2_ros.geometry.bands import MIN_CHUNK_PIXELS, for_row_chunks, row_bands, row_chunks, submit


@pytest.fixture
def threads():
    """Sets the host threads for a test and restores the default afterwards."""
    yield bands.set_host_threads
    bands.set_host_threads(0)


@pytest.mark.parametrize("height, width", [(1, 1), (7, 3), (720, 1280), (1000, 1)])
def test_bands_cover_every_row_once_in_order(height, width):
    rows = [r for band in row_bands(height, width) for r in range(band.start, band.stop)]
    assert rows == list(range(height))
    inner = list(row_bands(height, width, rows=slice(3 % height, height)))
    assert [r for band in inner for r in range(band.start, band.stop)] == list(range(3 % height, height))


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_chunks_cover_every_row_once_and_small_images_stay_whole(count):
    chunks = row_chunks(720, 1280, count)
    assert len(chunks) == count
    assert [r for c in chunks for r in range(c.start, c.stop)] == list(range(720))
    assert row_chunks(100, 100, count) == [slice(0, 100)]  # 10k pixels: below MIN_CHUNK_PIXELS
    assert len(row_chunks(2, MIN_CHUNK_PIXELS, count)) == min(count, 2)  # never more chunks than rows


def test_work_split_over_threads_gives_the_same_result_as_one_call(threads):
    rng = np.random.default_rng(0)
    x = rng.random((720, 1280), dtype=np.float32)
    results = {}
    for count in (1, 2, 3):
        threads(count)
        out = np.full_like(x, np.nan)
        seen = []

        def work(rows, out=out, seen=seen):
            seen.append((rows, threading.get_ident()))
            np.sqrt(x[rows], out=out[rows])

        for_row_chunks(*x.shape, work)
        assert sorted(r.start for r, _ in seen) == [c.start for c in row_chunks(720, 1280, count)]
        results[count] = out
        if count > 1:  # the calling thread takes the first chunk, the pool at least one other
            assert len({ident for _, ident in seen}) >= 2
    assert np.array_equal(results[1], np.sqrt(x))
    assert np.array_equal(results[2], results[1]) and np.array_equal(results[3], results[1])


def test_an_error_in_any_chunk_is_raised_once_every_chunk_has_finished(threads):
    threads(2)
    finished = []

    def work(rows):
        if rows.start == 0:
            raise RuntimeError("first chunk failed")
        threading.Event().wait(0.05)
        finished.append(rows)

    with pytest.raises(RuntimeError, match="first chunk failed"):
        for_row_chunks(720, 1280, work)
    assert len(finished) == 1  # the other chunk was not abandoned


def test_work_on_a_host_thread_runs_its_chunks_itself_instead_of_waiting_for_the_pool(threads):
    threads(2)  # one pool thread: a pool task waiting for the pool would never return
    idents = []

    def outer():
        for_row_chunks(720, 1280, lambda rows: idents.append(threading.get_ident()))
        return threading.get_ident()

    worker = submit(outer).result(timeout=10)
    assert worker != threading.get_ident() and set(idents) == {worker}


def test_submit_runs_in_the_background_or_at_once_with_one_thread(threads):
    threads(2)
    started, release = threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait(10)
        return threading.get_ident()

    future = submit(job)
    assert started.wait(10) and not future.done()
    release.set()
    assert future.result(timeout=10) != threading.get_ident()
    threads(1)
    inline = submit(job)
    assert inline.done() and inline.result() == threading.get_ident()
    failing = submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_host_threads_default_to_the_cores_up_to_four_and_refuse_negative_counts(threads):
    assert 1 <= bands.host_threads() <= 4
    threads(3)
    assert bands.host_threads() == 3
    with pytest.raises(ValueError, match="host threads must be >= 0"):
        bands.set_host_threads(-1)
