"""The temporary folder of a run, its progress journal, and the final rename.

A run never writes at the output path until it has finished. It works in ``<output>.partial/``::

    <output>.partial/
        journal.json          settings, input fingerprint, committed checkpoints
        state.pkl             pipeline state (temporal scale filters) and counters at the last checkpoint
        segment_000/<name>/   the bag written by the first attempt
        segment_001/<name>/   the bag written by a resumed attempt, …

Each attempt writes one *segment* bag. When it stops early — SIGINT/SIGTERM (after the current
frame), or an exception — it closes its segment at a consistent point (no half-written frame)
and commits a :class:`Checkpoint`: how many input messages it has read (and copied) and how many
images are done, plus the state needed to continue exactly (the temporal filters). ``--resume``
re-reads the input from the start, skips what was copied and the finished images, restores the
state, and writes the next segment. On success, a single segment is renamed to the output; several
are merged into one bag first, so a resumed run gives the same messages as an uninterrupted one.
A process killed without a chance to clean up (SIGKILL, power loss) leaves a segment that no
checkpoint names; it is discarded and its frames are redone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import OutputExistsError, ResumeError
from .writer import NO_COMPRESSION, BagCompression, merge_bags

log = logging.getLogger("lotus2.process_bag")

PARTIAL_SUFFIX = ".partial"
JOURNAL_FORMAT = 1


@dataclass
class Checkpoint:
    """A consistent point of a run.

    Attributes:
        segment: The folder (under the partial folder) of the segment bag this attempt wrote.
        messages_read: Input messages consumed, in the reader's order (all copied, when copying).
        images_done: Image messages finished (outputs written, or skipped for a reason).
        complete: True when the whole input has been processed.
    """

    segment: str
    messages_read: int
    images_done: int
    complete: bool = False


@dataclass
class Journal:
    format: int
    settings: dict
    checkpoints: list[Checkpoint] = field(default_factory=list)


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class PartialRun:
    """``<output>.partial/``: segments, journal and state of one output bag."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = partial_path(self.output)
        self.journal: Journal | None = None

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.pkl"

    # ------------------------------------------------------------------ start / resume
    def check(self, *, force: bool, resume: bool) -> None:
        """Raise :class:`OutputExistsError` if starting would overwrite something (no side effects)."""
        if self.output.exists() and not force:
            hint = "it is complete (nothing to resume); " if resume else ""
            raise OutputExistsError(f"output {self.output} exists; {hint}pass --force to replace it")
        if self.path.exists() and not (resume or force):
            raise OutputExistsError(f"an interrupted run left {self.path}; pass --resume to continue it "
                                    "or --force to start over")

    def start(self, settings: dict, *, force: bool, resume: bool) -> tuple[Checkpoint | None, bytes | None]:
        """Claim the output: a fresh partial folder, or the last checkpoint of the existing one.

        Returns:
            ``(checkpoint, state)`` to continue from, or ``(None, None)`` for a fresh run.

        Raises:
            OutputExistsError: The output or a partial run exists and neither ``force`` nor ``resume``.
            ResumeError: The partial run was made from another input or with other settings.
        """
        settings = _normalise(settings)
        self.check(force=force, resume=resume)
        if self.path.exists():
            if resume and not force:
                return self._load(settings)
            shutil.rmtree(self.path)
        elif resume:
            log.info("nothing to resume for %s: starting from the beginning", self.output)
        self.path.mkdir(parents=True)
        self.journal = Journal(JOURNAL_FORMAT, settings)
        self._write_journal()
        return None, None

    def _load(self, settings: dict) -> tuple[Checkpoint | None, bytes | None]:
        try:
            doc = json.loads(self.journal_path.read_text(encoding="utf-8"))
            journal = Journal(doc["format"], doc["settings"], [Checkpoint(**c) for c in doc["checkpoints"]])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ResumeError(f"cannot resume {self.output}: {self.journal_path} is unreadable ({err}); "
                              "pass --force to start over") from err
        if journal.format != JOURNAL_FORMAT:
            raise ResumeError(f"cannot resume {self.output}: journal format {journal.format} "
                              f"(this version writes {JOURNAL_FORMAT}); pass --force to start over")
        if journal.settings != settings:
            keys = sorted(k for k in set(settings) | set(journal.settings)
                          if settings.get(k) != journal.settings.get(k))
            raise ResumeError(f"cannot resume {self.output}: the interrupted run used other inputs or settings "
                              f"({', '.join(keys)} differ); run with the same ones, or --force to start over")
        self.journal = journal
        committed = {c.segment for c in journal.checkpoints}
        for d in self.path.glob("segment_*"):
            if d.name not in committed:  # an attempt that died without a checkpoint
                log.info("discarding %s (no checkpoint: the process was killed)", d)
                shutil.rmtree(d)
        if not journal.checkpoints:
            return None, None
        state = self.state_path.read_bytes() if self.state_path.exists() else None
        return journal.checkpoints[-1], state

    # ------------------------------------------------------------------ segments / checkpoints
    def next_segment(self) -> tuple[str, Path]:
        """``(segment name, bag folder)`` for the next attempt."""
        assert self.journal is not None
        name = f"segment_{len(self.journal.checkpoints):03d}"
        seg = self.path / name
        if seg.exists():
            shutil.rmtree(seg)
        seg.mkdir()
        return name, seg / self.output.name

    def commit(self, checkpoint: Checkpoint, state: bytes) -> None:
        """Record a closed segment and the state after it (state first: the journal is the commit)."""
        assert self.journal is not None
        _atomic_write(self.state_path, state)
        self.journal.checkpoints.append(checkpoint)
        self._write_journal()

    def remove_if_empty(self) -> None:
        """Remove the partial folder if no checkpoint was ever committed (there is nothing to resume)."""
        if self.journal is not None and not self.journal.checkpoints and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def discard_segment(self, name: str) -> None:
        shutil.rmtree(self.path / name, ignore_errors=True)

    def _write_journal(self) -> None:
        assert self.journal is not None
        doc = asdict(self.journal)
        _atomic_write(self.journal_path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))

    # ------------------------------------------------------------------ finish
    def finalize(self, storage: str, typestore: Any, compression: BagCompression = NO_COMPRESSION) -> None:
        """Move the finished bag to the output path (merging segments first) and remove the partial folder."""
        assert self.journal is not None and self.journal.checkpoints and self.journal.checkpoints[-1].complete
        segments = [self.path / c.segment / self.output.name for c in self.journal.checkpoints]
        if len(segments) == 1:
            final = segments[0]
        else:
            final = self.path / "merged" / self.output.name
            if final.parent.exists():
                shutil.rmtree(final.parent)
            final.parent.mkdir()
            n = merge_bags(segments, final, storage, typestore, compression)
            log.info("merged %d segments (%d messages) into one bag", len(segments), n)
        if self.output.exists():  # --force: the old output goes only once the new one is complete
            old = self.path / "replaced"
            os.replace(self.output, old)
        os.replace(final, self.output)
        shutil.rmtree(self.path)
