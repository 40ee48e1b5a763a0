"""Interrupted runs: the input stays untouched, nothing looks complete, --resume finishes identically."""

from __future__ import annotations

import json

import pytest
from bag_helpers import TINY_SETTINGS, canonical, fixed_config, folder_digest, lidar_config, process_into, read_bag

from lotus2_ros.bag import (
    ALL_OUTPUTS,
    Interrupted,
    OutputExistsError,
    ProcessBagOptions,
    ResumeError,
    partial_path,
    plan_bag_run,
    process_bag,
    run_bag,
)

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")


class Boom(RuntimeError):
    pass


def _stop_after(n: int):
    """``(should_stop, on_frame)`` that ask to stop once ``n`` images are done (like a SIGINT then)."""
    state = {"stop": False}

    def on_frame(done: int) -> None:
        state["stop"] = done >= n

    return (lambda: state["stop"]), on_frame


def _crash_after(n: int):
    def on_frame(done: int) -> None:
        if done == n:
            raise Boom(f"injected failure after {n} images")

    return on_frame


def test_stop_crash_and_kill_then_resume_give_the_uninterrupted_bag(lidar_bag, tiny_engine, tmp_path):
    """One frame, a SIGINT-like stop; one more frame, a crash; a killed attempt; then the rest.

    With a LiDAR fit and its temporal filter, and the sharpener (which has a filter of its own),
    the restored filter state matters: the result must equal an uninterrupted run.
    """
    src = lidar_bag.path
    config = lidar_config(tasks=["depth"])
    reference = process_into(lidar_bag, tiny_engine, config, tmp_path / "reference")
    assert reference.stats.fits["core_valid"] >= 1, "no valid fit: the filter state would not be exercised"
    out, export = tmp_path / "out", tmp_path / "export"
    full = dict(write_core=True, outputs=ALL_OUTPUTS)  # as process_into writes the reference
    options = ProcessBagOptions(src, out, config, export_dir=export, **full)
    partial = partial_path(out)

    should_stop, on_frame = _stop_after(1)
    with pytest.raises(Interrupted, match="--resume"):
        run_bag(plan_bag_run(options, TINY_SETTINGS), tiny_engine, should_stop=should_stop, on_frame=on_frame)
    assert not out.exists()  # nothing at the output path looks complete
    journal = json.loads((partial / "journal.json").read_text())
    assert [c["images_done"] for c in journal["checkpoints"]] == [1]
    assert not journal["checkpoints"][0]["complete"]
    assert folder_digest(src) == reference.input_digest

    # Without --resume or --force an interrupted run is not silently overwritten.
    with pytest.raises(OutputExistsError, match="--resume"):
        run_bag(plan_bag_run(options, TINY_SETTINGS), tiny_engine)

    resume = ProcessBagOptions(src, out, config, export_dir=export, resume=True, **full)
    with pytest.raises(Boom):
        run_bag(plan_bag_run(resume, TINY_SETTINGS), tiny_engine, on_frame=_crash_after(2))
    assert not out.exists()
    journal = json.loads((partial / "journal.json").read_text())
    assert [c["images_done"] for c in journal["checkpoints"]] == [1, 2]

    # A process killed without cleaning up leaves a segment no checkpoint names: it is redone.
    killed = partial / "segment_002"
    killed.mkdir()
    (killed / "garbage.db3").write_bytes(b"half a database")

    stats = run_bag(plan_bag_run(resume, TINY_SETTINGS), tiny_engine)
    assert out.is_dir() and not partial.exists()
    assert canonical(read_bag(out)) == canonical(read_bag(reference.output))
    assert folder_digest(export) == folder_digest(reference.export)
    assert folder_digest(src) == reference.input_digest
    # The summary covers the whole bag, over the three attempts that did work.
    assert (stats.frames_processed, stats.frames_refined, stats.attempts) == (3, 3, 3)
    assert stats.fits == reference.stats.fits
    assert stats.messages_copied == reference.stats.messages_copied


def test_resume_refuses_other_settings_and_force_starts_over(small_bag, tiny_engine, tmp_path):
    out = tmp_path / "out"
    config = fixed_config()
    should_stop, on_frame = _stop_after(1)
    with pytest.raises(Interrupted):
        process_bag(ProcessBagOptions(small_bag.path, out, config, copy_inputs=False), tiny_engine,
                    should_stop=should_stop, on_frame=on_frame)
    other = ProcessBagOptions(small_bag.path, out, config.replace(fixed_shift=0.2), copy_inputs=False, resume=True)
    with pytest.raises(ResumeError, match="config"):
        process_bag(other, tiny_engine)
    assert partial_path(out).exists() and not out.exists()
    stats = process_bag(ProcessBagOptions(small_bag.path, out, config, copy_inputs=False, force=True), tiny_engine)
    assert stats.attempts == 1 and stats.frames_processed == 2 and out.is_dir()
    # --resume on a finished output has nothing to do and says so.
    with pytest.raises(OutputExistsError, match="complete"):
        process_bag(ProcessBagOptions(small_bag.path, out, config, copy_inputs=False, resume=True), tiny_engine)


def test_resume_without_a_partial_run_starts_from_the_beginning(small_bag, tiny_engine, tmp_path):
    stats = process_bag(ProcessBagOptions(small_bag.path, tmp_path / "out", fixed_config(), copy_inputs=False,
                                          resume=True), tiny_engine)
    assert stats.frames_processed == 2 and stats.attempts == 1


def test_a_finished_run_whose_rename_failed_is_completed_by_resume(small_bag, tiny_engine, tmp_path, monkeypatch):
    from lotus2_ros.bag.journal import PartialRun

    out = tmp_path / "out"
    config = fixed_config()
    options = ProcessBagOptions(small_bag.path, out, config, copy_inputs=False)
    finalize = PartialRun.finalize

    def fail(self, *args):
        raise OSError("disk went away")

    monkeypatch.setattr(PartialRun, "finalize", fail)
    with pytest.raises(OSError):
        process_bag(options, tiny_engine)
    assert not out.exists()
    monkeypatch.setattr(PartialRun, "finalize", finalize)
    calls = []
    monkeypatch.setattr(type(tiny_engine), "predict", lambda *a, **k: calls.append(1))
    stats = process_bag(ProcessBagOptions(small_bag.path, out, config, copy_inputs=False, resume=True), tiny_engine)
    assert calls == [] and stats.frames_processed == 2  # nothing recomputed, only renamed
    assert len([m for m in read_bag(out) if m[0].endswith("/disparity")]) == 2


def test_a_resumed_run_restores_the_relative_alignment_too(lidar_bag, tiny_engine, tmp_path):
    """A fixed metric scale: relative outputs are aligned over time (``relative_alignment: auto``), so
    the aligner's running reference must survive the stop for the resumed frames to be the same.
    (The tiny random model's frames hardly agree: no scene-change reset here.)"""
    config = fixed_config(relative_alignment="on", alignment_min_inliers=0.0)
    reference = process_into(lidar_bag, tiny_engine, config, tmp_path / "reference")
    frames = sorted(reference.export.glob("*.json"))
    alignment = [json.loads(f.read_text())["relative_alignment"] for f in frames]
    assert alignment[0]["reset"] and not alignment[1]["reset"] and alignment[1]["scale"] != 1.0
    out, export = tmp_path / "out", tmp_path / "export"
    should_stop, on_frame = _stop_after(1)
    with pytest.raises(Interrupted):
        run_bag(plan_bag_run(ProcessBagOptions(lidar_bag.path, out, config, export_dir=export), TINY_SETTINGS),
                tiny_engine, should_stop=should_stop, on_frame=on_frame)
    run_bag(plan_bag_run(ProcessBagOptions(lidar_bag.path, out, config, export_dir=export, resume=True),
                         TINY_SETTINGS), tiny_engine)
    assert canonical(read_bag(out)) == canonical(read_bag(reference.output))
    assert folder_digest(export) == folder_digest(reference.export)
