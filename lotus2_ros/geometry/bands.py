"""Row bands and row chunks for per-pixel work that takes several passes over an image.

A chain of numpy passes over a 1280x720 float32 plane (3.7 MB) reads and writes main memory on
every pass; on the 2-core CI machine that traffic, not the arithmetic, is most of the node's
post-processing time. Run over bands of rows that fit the L2 cache together with their
temporaries, only the first read and the last write of each band reach memory: the same
operations in the same order (bit-identical results). In the node's loop at 1280x720
(``benchmarks/node_overhead.py``, 2-core CI machine): normalising the normals 7.0 → 5.2 ms,
colourising them 6.4 → 3.4 ms, points from depth 4.3 → 2.8 ms (medians).

One core cannot draw the machine's memory bandwidth on its own (on the CI machine a 30 MB copy
takes 4.1 ms on one thread and 3.0 ms on two), so large images are also split into contiguous
row chunks that run concurrently (:func:`for_row_chunks`): numpy and OpenCV release the GIL
inside their loops. Every pixel is still computed by the same operations, so the results do not
depend on the number of threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["BAND_ELEMENTS", "MIN_CHUNK_PIXELS", "for_row_chunks", "host_threads", "row_bands", "set_host_threads",
           "submit"]

T = TypeVar("T")

#: Pixels per band: 48k float32 pixels are 192 KiB per plane, so a band of three input planes,
#: their temporaries and the interleaved output stays within a 1-2 MiB L2 cache.
BAND_ELEMENTS = 48 * 1024

#: Pixels per row chunk at least: below this a thread hand-off (~50 µs) costs more than it saves.
MIN_CHUNK_PIXELS = 128 * 1024

#: Default number of threads: more than 4 stop paying off for memory-bound passes.
_MAX_DEFAULT_THREADS = 4

_lock = threading.Lock()
_threads = 0  # 0: not set, the default
_pool: ThreadPoolExecutor | None = None
_local = threading.local()  # .in_pool: this thread runs pool work (which must not wait for the pool)


def row_bands(height: int, width: int, elements: int = BAND_ELEMENTS, rows: slice | None = None) -> Iterator[slice]:
    """Consecutive row slices covering ``rows`` (default ``range(height)``), each about ``elements`` pixels (≥ 1 row)."""
    step = max(1, elements // max(1, width))
    start, stop = (0, height) if rows is None else (rows.start, rows.stop)
    for first in range(start, stop, step):
        yield slice(first, min(first + step, stop))


def default_host_threads() -> int:
    """The machine's cores (as this process may use them), up to 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_DEFAULT_THREADS))


def host_threads() -> int:
    """Threads the per-pixel host stages use (:func:`set_host_threads`; default :func:`default_host_threads`)."""
    return _threads or default_host_threads()


def set_host_threads(threads: int) -> None:
    """Sets how many threads :func:`for_row_chunks` splits a large image over (0: the default; 1: none).

    Raises:
        ValueError: ``threads`` is negative.
    """
    global _threads, _pool
    threads = int(threads)
    if threads < 0:
        raise ValueError(f"host threads must be >= 0 (0: the default), got {threads}")
    with _lock:
        if threads != _threads and _pool is not None:
            _pool.shutdown(wait=False)  # running chunks finish; new calls get a pool of the new size
            _pool = None
        _threads = threads


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != workers:  # noqa: SLF001 - our own pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lotus2-host",
                                       initializer=_mark_pool_thread)
        return _pool


def _mark_pool_thread() -> None:
    _local.in_pool = True


def _in_pool() -> bool:
    return getattr(_local, "in_pool", False)


def submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Runs ``fn(*args)`` on a host thread while the caller goes on; ``result()`` joins it.

    With one host thread (:func:`set_host_threads`), or from a host thread itself, it runs at once
    on the calling thread (the future is then done). For independent work of a few milliseconds
    (a thread hand-off costs ~0.1 ms), e.g. one task's post-processing next to another's.
    """
    if host_threads() > 1 and not _in_pool():
        return _executor(max(1, host_threads() - 1)).submit(fn, *args)
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as err:  # noqa: BLE001 - handed to the caller through result()
        future.set_exception(err)
    return future


def row_chunks(height: int, width: int, threads: int | None = None) -> list[slice]:
    """Contiguous row slices covering ``range(height)``: one per thread, none below ``MIN_CHUNK_PIXELS``."""
    threads = host_threads() if threads is None else max(1, int(threads))
    count = max(1, min(threads, height * width // MIN_CHUNK_PIXELS, height))
    bounds = [height * i // count for i in range(count + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(count)]


def for_row_chunks(height: int, width: int, work: Callable[[slice], None], threads: int | None = None) -> None:
    """Calls ``work(rows)`` for contiguous row chunks covering ``range(height)``, concurrently.

    ``work`` must write only its own rows of the result (and use its own scratch memory). The
    calling thread takes the first chunk, the pool the others; the first exception raised by any
    chunk is raised here once all have finished. Small images (or one thread) run as one call.
    """
    chunks = row_chunks(height, width, 1 if _in_pool() else threads)  # pool work never waits for the pool
    if len(chunks) == 1:
        work(chunks[0])
        return
    # The calling thread takes a chunk too, so the pool has one thread fewer than host_threads().
    pool = _executor(max(1, host_threads() - 1))
    futures = [pool.submit(work, rows) for rows in chunks[1:]]
    error = None
    try:
        work(chunks[0])
    except BaseException as err:  # noqa: BLE001 - re-raised after the other chunks are done
        error = err
    for future in futures:
        try:
            future.result()
        except BaseException as err:  # noqa: BLE001
            error = error or err
    if error is not None:
        raise error
