"""Quieter third-party libraries for command-line output (progress bars, advisory warnings)."""

from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    """Silence progress bars and advisory warnings of diffusers/transformers/peft, and torch's exit statistics."""
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
    logging.getLogger("torch").setLevel(logging.WARNING)  # torch's exit-time cache statistics
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - both are install requirements
        pass
