"""--config reads the node's parameter file into PerceptionConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from lotus2_ros.bag.config_file import load_perception_config
from lotus2_ros.perception.config import ConfigError, PerceptionConfig

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_perception_yaml_gives_the_defaults_and_overrides_apply():
    assert load_perception_config(REPO / "config" / "perception.yaml") == PerceptionConfig()
    config = load_perception_config(REPO / "config" / "perception.yaml", device="cpu", weights="/w")
    assert (config.device, config.weights) == ("cpu", "/w")


@pytest.mark.parametrize("text", [
    "lotus2_perception:\n  ros__parameters:\n    metric_source: lidar\n    fit_min_points: 12\n",
    "metric_source: lidar\nfit_min_points: 12\n",
])
def test_node_sections_and_flat_files_are_accepted(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    config = load_perception_config(path)
    assert (config.metric_source, config.fit_min_points) == ("lidar", 12)


def test_unknown_names_and_bad_values_are_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    metric_sauce: lidar\n")
    with pytest.raises(ConfigError, match="metric_sauce"):
        load_perception_config(path)
    path.write_text("/**:\n  ros__parameters:\n    fit_min_points: 1\n")
    with pytest.raises(ConfigError, match="fit_min_points"):
        load_perception_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_perception_config(tmp_path / "missing.yaml")
