"""Diagnostics figures: sliding-window rates, latency statistics, counters (synthetic clock)."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import pytest

from lotus2_ros.perception import stats
from lotus2_ros.perception.stats import NodeStats, RateWindow


class FakeClock:
    """A monotonic clock the test advances by hand (seconds)."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    """Replaces the stats module's clock (only that module's view of ``time``)."""
    fake = FakeClock()
    monkeypatch.setattr(stats, "time", SimpleNamespace(monotonic=fake))
    return fake


# ----------------------------------------------------------------------------- RateWindow
def test_rate_of_evenly_spaced_events_is_their_frequency():
    rate = RateWindow(window_s=5.0)
    for i in range(30):
        rate.add(100.0 + i * 0.1)  # 10 Hz for 2.9 s
    assert rate.rate_hz(now=102.9) == pytest.approx(10.0)


def test_rate_counts_only_events_inside_the_window():
    rate = RateWindow(window_s=2.0)
    for i in range(10):
        rate.add(i * 1.0)  # 1 Hz, t = 0..9
    for i in range(1, 21):
        rate.add(9.0 + i * 0.05)  # then 20 Hz, t = 9.05..10.0
    # Window [8, 10]: events at 8, 9 and the 20 burst ones -> 21 intervals over 2 s.
    assert rate.rate_hz(now=10.0) == pytest.approx(21 / 2.0)


def test_rate_is_zero_with_fewer_than_two_events_in_the_window():
    rate = RateWindow(window_s=1.0)
    assert rate.rate_hz(now=0.0) == 0.0
    rate.add(5.0)
    assert rate.rate_hz(now=5.0) == 0.0
    rate.add(5.5)
    assert rate.rate_hz(now=5.5) == pytest.approx(2.0)
    assert rate.rate_hz(now=20.0) == 0.0  # both expired


# ----------------------------------------------------------------------------- NodeStats
def test_snapshot_reports_input_and_output_rates_from_the_clock(clock):
    node = NodeStats(window_s=5.0)
    for i in range(21):  # inputs at 20 Hz for 1 s, every second frame published (10 Hz)
        clock.t = 1000.0 + i * 0.05
        node.input()
        if i % 2 == 0:
            node.output(latency_ms=30.0, refined=False)
        if i % 10 == 0:
            node.output(latency_ms=500.0, refined=True)  # refined at 2 Hz
    snap = node.snapshot()
    assert snap["input_rate_hz"] == pytest.approx(20.0)
    assert snap["output_rate_hz"] == pytest.approx(10.0)
    assert snap["refined_rate_hz"] == pytest.approx(2.0)
    assert snap["frames_received"] == 21.0
    assert snap["frames_published"] == 11.0
    assert snap["refined_published"] == 3.0


def test_latency_median_and_max_cover_core_frames_only(clock):
    node = NodeStats()
    for latency in (40.0, 10.0, 30.0, 20.0):
        node.output(latency, refined=False)
    node.output(900.0, refined=True)
    snap = node.snapshot()
    assert snap["latency_median_ms"] == 25.0
    assert snap["latency_max_ms"] == 40.0


def test_latency_keeps_only_the_most_recent_samples(clock):
    node = NodeStats(latency_samples=3)
    for latency in (1000.0, 5.0, 7.0, 6.0):
        node.output(latency, refined=False)
    snap = node.snapshot()
    assert (snap["latency_median_ms"], snap["latency_max_ms"]) == (6.0, 7.0)


def test_counters_accumulate_by_reason(clock):
    node = NodeStats()
    node.count("dropped_frames")
    node.count("dropped_frames", 4)
    node.count("bad_messages/encoding")
    snap = node.snapshot()
    assert snap["dropped_frames"] == 5.0
    assert snap["bad_messages/encoding"] == 1.0


def test_snapshot_without_data_has_nan_latency_and_infinite_input_age(clock):
    snap = NodeStats().snapshot()
    assert set(snap) == {"input_rate_hz", "output_rate_hz", "refined_rate_hz", "latency_median_ms",
                         "latency_max_ms", "seconds_since_input"}
    assert math.isnan(snap["latency_median_ms"]) and math.isnan(snap["latency_max_ms"])
    assert snap["seconds_since_input"] == math.inf
    assert snap["input_rate_hz"] == snap["output_rate_hz"] == snap["refined_rate_hz"] == 0.0


def test_seconds_since_input_follows_the_clock(clock):
    node = NodeStats()
    node.input()
    clock.t += 2.5
    assert node.snapshot()["seconds_since_input"] == pytest.approx(2.5)


def test_snapshot_values_are_floats(clock):
    node = NodeStats()
    node.input()
    node.output(12.0, refined=False)
    node.count("bad_messages")
    assert all(type(v) is float for v in node.snapshot().values())


def test_counts_from_several_threads_add_up():
    node = NodeStats()

    def work():
        for _ in range(2000):
            node.count("dropped_frames")
            node.input()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = node.snapshot()
    assert snap["dropped_frames"] == 8000.0
    assert snap["frames_received"] == 8000.0


# ----------------------------------------------------------------------------- after a pause (#13.3)
def test_a_stream_that_stopped_reads_a_decaying_rate_not_its_old_one():
    rate = RateWindow(window_s=5.0)
    for i in range(251):
        rate.add(i / 25.0)  # 25 Hz for 10 s, last event at t = 10
    assert rate.rate_hz(now=10.02) == pytest.approx(25.0)  # mid-interval of a live stream: exact
    assert rate.rate_hz(now=11.0) == pytest.approx(100 / 4.96, rel=1e-6)  # 1 s after: 100 intervals over 4.96 s
    assert rate.rate_hz(now=14.8) < 1.5  # 4.8 s after the last frame (was 25 Hz)
    assert rate.rate_hz(now=15.1) == 0.0


def test_a_stream_slower_than_the_window_reads_its_rate_and_zero_once_it_stopped():
    """A node at 0.2 Hz (one result every 5 s) in a 5 s window: its rate, not 0 (make demo showed
    output_rate_hz=0.000 while publishing every ~4 s)."""
    rate = RateWindow(window_s=5.0)
    for t in (0.0, 5.0, 10.0, 15.0):
        rate.add(t)
    assert rate.rate_hz(now=15.0) == pytest.approx(0.2)
    assert rate.rate_hz(now=19.9) == pytest.approx(0.2)  # one event in the window: the last two measure it
    assert rate.rate_hz(now=22.5) == pytest.approx(1 / 7.5)  # a late one: decays
    assert rate.rate_hz(now=25.1) == 0.0  # no event for more than twice its interval: stopped
    rate.add(26.0)
    assert rate.rate_hz(now=26.0) == pytest.approx(1 / 11.0)  # back: measured from the last two events


def test_node_rates_and_the_starved_sharpener_figures_decay_after_the_stream_stops(clock):
    s = NodeStats(window_s=5.0)
    for _ in range(100):
        s.input()
        s.output(10.0, refined=False)
        clock.t += 0.04
    assert s.snapshot()["output_rate_hz"] == pytest.approx(25.0, rel=0.02)
    clock.t += 4.8
    snap = s.snapshot()
    assert snap["input_rate_hz"] < 1.5 and snap["output_rate_hz"] < 1.5
