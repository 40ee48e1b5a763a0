"""docs/NODE.md lists every parameter exactly as the configuration classes define it."""

from __future__ import annotations

from pathlib import Path

from lotus2_ros.config_fields import parameters_markdown
from lotus2_ros.perception.config import PerceptionConfig
from lotus2_ros.synthetic.stream import SyntheticCameraConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "NODE.md"


def test_node_docs_hold_the_current_parameter_tables():
    text = DOC.read_text()
    for cls in (PerceptionConfig, SyntheticCameraConfig):
        assert parameters_markdown(cls) in text, f"regenerate the {cls.__name__} table in docs/NODE.md"
