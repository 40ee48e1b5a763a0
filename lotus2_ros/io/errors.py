"""The error raised for a malformed or unsupported message."""

from __future__ import annotations

__all__ = ["MessageError"]


class MessageError(ValueError):
    """A message cannot be converted: malformed (wrong size, step, NaN) or unsupported.

    The text names the message type and field and shows the bad value, e.g.
    ``Image.step 1000 is smaller than width 640 x 3 bytes per pixel (1920) for 'rgb8'``. Callbacks
    catch it, log it (throttled), count it and drop the frame.

    Attributes:
        reason: A short code for the counters in ``/diagnostics`` where one kind of rejection
            deserves its own (``"too_large"``, ``"too_small"``), else None.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason
