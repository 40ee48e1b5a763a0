"""Counters, rates and latencies for diagnostics (thread-safe, ROS-free)."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, deque


class RateWindow:
    """Events per second over a sliding time window (seconds, monotonic clock)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, t: float | None = None) -> None:
        self._times.append(time.monotonic() if t is None else t)

    def rate_hz(self, now: float | None = None) -> float:
        """Events per second in the window ending at ``now``; it decays while no event comes.

        The intervals between the window's events are divided by the time they span, which
        counts the open gap since the last event once that gap exceeds their mean interval: a
        steady stream reads its exact rate at any moment, a stream that stopped reads ever less
        (25 Hz that stopped 4.8 s ago reads 1 Hz in a 5 s window, not 25 Hz).

        A stream slower than two events per window (a heavy model on a small GPU, 0.2 Hz) is
        measured on its last two events, so it reads its rate instead of 0; it reads 0 once no
        event came for longer than the window and twice that last interval (stopped).
        """
        now = time.monotonic() if now is None else now
        # Expired events go, but the last two stay: they measure a stream slower than the window.
        while len(self._times) > 2 and self._times[0] < now - self.window_s:
            self._times.popleft()
        n = len(self._times)
        if n < 2:
            return 0.0
        first, last = self._times[0], self._times[-1]
        mean_gap = (last - first) / (n - 1)
        if first < now - self.window_s and now - last > max(self.window_s, 2.0 * mean_gap):
            return 0.0  # fewer than two events in the window and none for a long time: stopped
        span = max(last - first, now - first - mean_gap)
        return (n - 1) / max(span, 1e-9)


class NodeStats:
    """What ``/diagnostics`` reports: input/output rates, latency, drops and bad messages by reason."""

    def __init__(self, window_s: float = 5.0, latency_samples: int = 100):
        self._lock = threading.Lock()
        self.inputs = RateWindow(window_s)
        self.outputs = RateWindow(window_s)
        self.refined = RateWindow(window_s)
        self.latency_ms: deque[float] = deque(maxlen=latency_samples)
        self.counts: Counter[str] = Counter()
        self.stage_ms: dict[str, deque[float]] = {}
        self._latency_samples = latency_samples
        self.last_input_monotonic: float | None = None

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def input(self) -> None:
        with self._lock:
            self.inputs.add()
            self.counts["frames_received"] += 1
            self.last_input_monotonic = time.monotonic()

    def output(self, latency_ms: float, refined: bool) -> None:
        with self._lock:
            (self.refined if refined else self.outputs).add()
            self.counts["refined_published" if refined else "frames_published"] += 1
            if not refined:
                self.latency_ms.append(latency_ms)

    def stages(self, timings_ms: dict[str, float]) -> None:
        """Record one frame's stage times (ms) for the per-stage medians in the snapshot."""
        with self._lock:
            for name, ms in timings_ms.items():
                self.stage_ms.setdefault(name, deque(maxlen=self._latency_samples)).append(ms)

    def snapshot(self) -> dict[str, float]:
        """Current figures: rates in Hz, latency in ms (median / max of recent frames), totals."""
        with self._lock:
            lat = list(self.latency_ms)
            snap = {
                "input_rate_hz": self.inputs.rate_hz(),
                "output_rate_hz": self.outputs.rate_hz(),
                "refined_rate_hz": self.refined.rate_hz(),
                "latency_median_ms": statistics.median(lat) if lat else float("nan"),
                "latency_max_ms": max(lat) if lat else float("nan"),
                "seconds_since_input": (time.monotonic() - self.last_input_monotonic
                                        if self.last_input_monotonic is not None else float("inf")),
            }
            snap.update({k: float(v) for k, v in self.counts.items()})
            snap.update({f"stage_{k}_ms": statistics.median(v) for k, v in self.stage_ms.items() if v})
            return snap
