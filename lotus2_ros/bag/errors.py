"""Errors of the bag tool. Each names the bag (and topic, where one is involved)."""

from __future__ import annotations


class BagError(Exception):
    """Base class: the bag tool cannot go on; the message says what to do."""


class BagReadError(BagError):
    """An input bag is missing, unreadable or corrupt (names the bag, and the topic if known)."""


class BagTopicError(BagError):
    """A topic the run needs is not in the bag, or it is ambiguous (names the bag and the topic)."""


class OutputExistsError(BagError):
    """The output (or an interrupted run's partial output) exists and neither --force nor --resume was given."""


class ResumeError(BagError):
    """``--resume`` cannot continue the partial output (none there, or made with other inputs/settings)."""


class Interrupted(BagError):
    """The run stopped early on request (SIGINT/SIGTERM); the partial output can be resumed."""

    def __init__(self, message: str, partial_dir: str):
        super().__init__(message)
        self.partial_dir = partial_dir
