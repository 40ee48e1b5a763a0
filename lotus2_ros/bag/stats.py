"""Counters and stage timings of a bag run, and the end-of-run summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..perception.pipeline import FORWARD_STAGES

_FORWARD_PREFIXES = tuple(FORWARD_STAGES)


def is_forward(stage: str) -> bool:
    """True for stages that run the network (``refined_`` stages included)."""
    return stage.removeprefix("refined_").startswith(_FORWARD_PREFIXES)


@dataclass
class RunStats:
    """What a run did; carried across ``--resume`` so the summary covers the whole bag.

    Attributes:
        images_total: Image messages in the bag.
        frames_processed: Images whose outputs were written.
        frames_refined: Of those, how many also got detail-sharpened outputs.
        skipped: Images without outputs, by reason.
        reference_missing: Processed frames without metric reference data, by reason.
        fits: Scale fits by kind: ``core_valid``, ``core_invalid``, ``refined_valid``, ``refined_invalid``,
            and frames whose own fit was not used by reason: ``core_not_used:<reason>`` (``FitReason``
            labels, e.g. ``core_not_used:too_few_inliers``).
        stage_ms: Per-frame wall time of each stage, ms (pipeline stages, ``refined_…`` for the
            sharpened pass, and the bag stages ``read``, ``decode``, ``write_wait`` on the processing
            thread, ``write_bg`` (message building, serialisation, writing) and ``export_bg`` on the
            writer thread).
        frame_overhead_ms: Per processed frame, the wall time outside network forwards on the
            processing thread, ms (from the end of the previous frame: reading inputs included;
            the writer thread's work is in ``write_bg`` / ``export_bg`` / ``copy_ms_total``).
        messages_copied, messages_written, bytes_written: Output bag traffic.
        copy_ms_total: Writer-thread time spent copying input messages, ms.
        index_ms_total: Time of the first pass (stamps of camera_info / reference, TF), ms.
        wall_s: Wall time of all attempts, seconds.
        attempts: 1 + the number of resumes.
    """

    images_total: int = 0
    frames_processed: int = 0
    frames_refined: int = 0
    skipped: Counter = field(default_factory=Counter)
    reference_missing: Counter = field(default_factory=Counter)
    fits: Counter = field(default_factory=Counter)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    frame_overhead_ms: list[float] = field(default_factory=list)
    messages_copied: int = 0
    copy_ms_total: float = 0.0
    index_ms_total: float = 0.0
    messages_written: int = 0
    bytes_written: int = 0
    wall_s: float = 0.0
    attempts: int = 0

    def add_stages(self, timings_ms: dict[str, float], prefix: str = "") -> None:
        for k, v in timings_ms.items():
            self.stage_ms.setdefault(prefix + k, []).append(float(v))

    @property
    def frames_skipped(self) -> int:
        return sum(self.skipped.values())

    def fit_rate(self, kind: str = "core") -> tuple[int, int]:
        """``(valid, attempted)`` scale fits of ``kind`` (``core`` or ``refined``)."""
        valid = self.fits[f"{kind}_valid"]
        return valid, valid + self.fits[f"{kind}_invalid"]

    def stage_medians_ms(self) -> dict[str, float]:
        return {k: float(np.median(v)) for k, v in self.stage_ms.items() if v}

    def summary(self) -> str:
        """Human-readable end-of-run report."""
        lines = [f"frames processed: {self.frames_processed} of {self.images_total} images"
                 f" ({self.frames_refined} with detail-sharpened outputs)"]
        if self.skipped:
            lines.append(f"frames skipped: {self.frames_skipped} — "
                         + "; ".join(f"{n}× {why}" for why, n in self.skipped.most_common()))
        else:
            lines.append("frames skipped: 0")
        if self.reference_missing:
            lines.append("frames without metric reference: "
                         + "; ".join(f"{n}× {why}" for why, n in self.reference_missing.most_common()))
        for kind in ("core", "refined"):
            valid, total = self.fit_rate(kind)
            if total:
                lines.append(f"scale fits ({kind}): {valid}/{total} valid ({100.0 * valid / total:.1f} %)")
                not_used = {k.split(":", 1)[1]: n for k, n in self.fits.items() if k.startswith(f"{kind}_not_used:")}
                if not_used:
                    lines.append("  frames whose own fit was not used: " + "; ".join(
                        f"{n}× {why.replace('_', ' ')}" for why, n in sorted(not_used.items(), key=lambda i: -i[1])))
        if self.wall_s > 0 and self.frames_processed:
            lines.append(f"throughput: {self.frames_processed / self.wall_s:.2f} frames/s over {self.wall_s:.1f} s"
                         + (f" in {self.attempts} attempts" if self.attempts > 1 else ""))
        if self.frame_overhead_ms:
            lines.append(f"time outside network forwards: median {np.median(self.frame_overhead_ms):.1f} ms/frame "
                         "on the processing thread")
        if "write_bg" in self.stage_ms and self.frames_processed:
            lines.append(f"writer thread (overlaps the forwards): median {np.median(self.stage_ms['write_bg']):.1f} "
                         f"ms/frame for output messages, {self.copy_ms_total / self.frames_processed:.1f} ms/frame "
                         "for input copies")
        if self.frames_processed:
            lines.append(f"first pass (stamps, TF): {self.index_ms_total / self.frames_processed:.1f} ms/frame")
        med = self.stage_medians_ms()
        if med:
            lines.append("median ms per frame by stage (* = network forward):")
            for k in sorted(med, key=lambda k: (k.startswith("refined_"), -med[k])):
                lines.append(f"  {k:<24}{med[k]:>10.1f}{' *' if is_forward(k) else ''}")
        lines.append(f"output: {self.messages_written} messages written ({self.bytes_written / 2**20:.1f} MiB), "
                     f"{self.messages_copied} input messages copied")
        return "\n".join(lines)
