"""The perception pipeline (ROS-free): the front door every front end goes through.

One frame → :class:`PerceptionOutput` (:mod:`.pipeline`), which outputs a configuration yields
(:mod:`.outputs`), messages (:mod:`.messages`), per-frame files (:mod:`.export`), and the
configuration (:mod:`.config`, importable without torch: the names below load on first use).
"""

from lotus2_ros.perception.config import ConfigError, PerceptionConfig

_LAZY = {name: "lotus2_ros.perception.pipeline" for name in (
    "Frame", "PerceptionOutput", "PerceptionPipeline", "Refinement", "load_model", "load_pipeline")}

__all__ = ["ConfigError", "PerceptionConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
