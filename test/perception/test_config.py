"""PerceptionConfig (the node's parameters), its YAML mirror, and the synthetic camera's config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lotus2_ros.config_fields import field_default
from lotus2_ros.perception.config import READ_ONLY, ConfigError, PerceptionConfig
from lotus2_ros.synthetic.stream import SyntheticCameraConfig

YAML_PATH = Path(__file__).resolve().parents[2] / "config" / "perception.yaml"

#: Parameters that may not change while the node runs: the model and how inputs are received.
MODEL_AND_INPUT_FIELDS = {
    "base_model", "weights", "device", "dtype", "tasks", "process_res", "sharpen_enabled",
    "image_transport", "qos_reliability", "require_camera_info",
}
#: Parameters meant to be tuned on a running node.
RUN_TIME_FIELDS = {
    "rectify", "max_image_px", "sharpen_rate_hz", "sharpen_steps", "output_resolution", "publish_colorized", "publish_points",
    "min_depth_m", "max_depth_m", "fixed_scale", "fixed_shift", "diagnostics_period_s",
}
#: Name suffix → unit the field's metadata must state.
UNIT_SUFFIXES = {"_m": "m", "_hz": "Hz", "_s": "s", "_ms": "ms", "_px": "px", "_deg": "deg"}


def _yaml_params() -> dict:
    with open(YAML_PATH, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert list(doc) == ["/**"], f"{YAML_PATH.name} must hold one '/**' (any node) section"
    assert list(doc["/**"]) == ["ros__parameters"]
    return doc["/**"]["ros__parameters"]


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _cpu(**changes) -> PerceptionConfig:
    return PerceptionConfig(**{"device": "cpu", "dtype": "fp32", **changes})


# ----------------------------------------------------------------------------- YAML mirror
def test_yaml_has_exactly_the_fields_of_the_config():
    assert set(_yaml_params()) == set(_fields(PerceptionConfig))


def test_yaml_values_equal_the_config_defaults_with_the_same_types():
    """Strict types, not just equal values: rclpy refuses an INTEGER override for a DOUBLE
    parameter (``InvalidParameterTypeException``), so ``1`` for a float field would stop the node
    at start-up even though the dataclass alone would coerce it (as it does for Python callers)."""
    params = _yaml_params()
    for name, f in _fields(PerceptionConfig).items():
        default = field_default(f)
        assert params[name] == default, f"{name}: yaml {params[name]!r} != default {default!r}"
        assert type(params[name]) is type(default), (
            f"{name}: yaml has {type(params[name]).__name__}, the config {type(default).__name__}")
        if isinstance(default, list):  # a DOUBLE_ARRAY parameter refuses an INTEGER_ARRAY too
            assert [type(v) for v in params[name]] == [type(v) for v in default], name
    assert PerceptionConfig(**params) == PerceptionConfig()


# ----------------------------------------------------------------------------- metadata
def test_every_field_has_a_description_and_a_unit_where_its_name_has_one():
    for cls in (PerceptionConfig, SyntheticCameraConfig):
        for name, f in _fields(cls).items():
            assert f.metadata["description"].strip(), f"{cls.__name__}.{name} has no description"
            for suffix, unit in UNIT_SUFFIXES.items():
                if name.endswith(suffix):
                    assert f.metadata["unit"] == unit, f"{cls.__name__}.{name} unit {f.metadata['unit']!r}"


def test_defaults_lie_inside_their_ranges_and_choices():
    for cls in (PerceptionConfig, SyntheticCameraConfig):
        for name, f in _fields(cls).items():
            default = field_default(f)
            if f.metadata["range"]:
                lo, hi = f.metadata["range"]
                assert lo <= default <= hi, f"{cls.__name__}.{name} default {default} outside [{lo}, {hi}]"
            if f.metadata["choices"]:
                assert default in f.metadata["choices"], f"{cls.__name__}.{name}"


def test_read_only_holds_the_model_and_input_fields_but_not_the_run_time_ones():
    assert MODEL_AND_INPUT_FIELDS <= READ_ONLY
    assert RUN_TIME_FIELDS.isdisjoint(READ_ONLY)
    assert READ_ONLY == {f.name for f in dataclasses.fields(PerceptionConfig) if f.metadata["read_only"]}


# ----------------------------------------------------------------------------- validation
def test_the_defaults_and_a_cpu_config_are_valid():
    cfg = _cpu(tasks=["normal"], metric_source="fixed", fixed_scale=2.5, fixed_shift=-0.1)
    assert (cfg.device, cfg.tasks, cfg.metric_enabled) == ("cpu", ["normal"], True)
    assert PerceptionConfig().metric_enabled is False
    assert PerceptionConfig(device="cuda:1").device == "cuda:1"


def test_an_int_for_a_float_field_is_coerced_to_float():
    cfg = _cpu(max_depth_m=20, fixed_shift=0)
    assert (cfg.max_depth_m, type(cfg.max_depth_m), type(cfg.fixed_shift)) == (20.0, float, float)


@pytest.mark.parametrize("name, value", [
    ("process_res", 512.0),          # float for int
    ("process_res", True),           # bool is not an int here
    ("rectify", 1),                  # int for bool
    ("sharpen_rate_hz", "1.0"),      # string for float
    ("sharpen_rate_hz", False),      # bool for float
    ("tasks", ("depth",)),           # tuple for list
    ("device", None),
])
def test_a_value_of_the_wrong_type_raises_naming_the_parameter(name, value):
    with pytest.raises(ConfigError, match=name):
        _cpu(**{name: value})


@pytest.mark.parametrize("name, value", [
    ("process_res", 8), ("process_res", 8192), ("process_res", -2), ("sharpen_steps", -1), ("sharpen_steps", 11),
    ("sharpen_rate_hz", -0.5), ("sharpen_rate_hz", 100.5), ("min_depth_m", -0.1),
    ("diagnostics_period_s", 0.0), ("max_depth_m", float("nan")), ("fixed_shift", float("inf")),
])
def test_a_value_out_of_range_raises_naming_the_parameter(name, value):
    with pytest.raises(ConfigError, match=name):
        _cpu(**{name: value})


@pytest.mark.parametrize("name, value", [
    ("dtype", "fp64"), ("output_resolution", "native"), ("metric_source", "lidar_fit"),
    ("image_transport", "theora"), ("qos_reliability", "sometimes"),
])
def test_a_value_outside_the_choices_raises_naming_the_parameter(name, value):
    with pytest.raises(ConfigError, match=name) as info:
        _cpu(**{name: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", "mps", ""])
def test_a_bad_device_string_raises(device):
    with pytest.raises(ConfigError, match="device") as info:
        PerceptionConfig(device=device)
    assert repr(device) in str(info.value)


@pytest.mark.parametrize("tasks", [["depth", "depth"], ["depth", "segmentation"], ["Depth"]])
def test_tasks_must_be_distinct_known_names(tasks):
    with pytest.raises(ConfigError, match="tasks"):
        _cpu(tasks=tasks)


def test_model_intrinsic_settings_default_to_the_models_own():
    cfg = _cpu()
    assert (cfg.tasks, cfg.process_res, cfg.sharpen_steps) == ([], 0, 0)
    assert (cfg.model_tasks(), cfg.model_process_res(), cfg.no_cap) == (None, None, False)
    assert _cpu(process_res=-1).no_cap and _cpu(process_res=-1).model_process_res() is None
    assert _cpu(process_res=160, tasks=["normal"]).model_process_res() == 160
    assert _cpu(tasks=["normal"]).model_tasks() == ("normal",)


def test_the_configuration_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch': raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from lotus2_ros.perception.config import PerceptionConfig\n"
            "from lotus2_ros.model.spec import resolve_model_request\n"
            "PerceptionConfig(device='cpu'); assert 'torch' not in sys.modules; print('ok')")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("lo, hi", [(5.0, 5.0), (10.0, 2.0)])
def test_min_depth_must_be_below_max_depth(lo, hi):
    with pytest.raises(ConfigError, match="min_depth_m.*max_depth_m"):
        _cpu(min_depth_m=lo, max_depth_m=hi)


def test_a_fixed_metric_reference_needs_a_positive_scale():
    with pytest.raises(ConfigError, match="fixed_scale"):
        _cpu(metric_source="fixed", fixed_scale=0.0)
    # Without a fixed reference the scale is unused, so 0 is accepted.
    assert _cpu(metric_source="none", fixed_scale=0.0).fixed_scale == 0.0


@pytest.mark.parametrize("changes, name", [
    ({"lidar_extrinsic": [0.0, 0.0, 1.0]}, "lidar_extrinsic"),
    ({"lidar_extrinsic": [0.0] * 6 + [float("nan")]}, "lidar_extrinsic"),
    ({"lidar_min_range_m": 50.0, "lidar_max_range_m": 10.0}, "lidar_min_range_m"),
    ({"extrinsic_source": "guess"}, "extrinsic_source"),
    ({"metric_source": "sonar"}, "metric_source"),
])
def test_bad_metric_reference_settings_raise_naming_the_parameter(changes, name):
    with pytest.raises(ConfigError, match=name):
        _cpu(**changes)


# ----------------------------------------------------------------------------- replace
def test_replace_returns_a_validated_copy_and_leaves_the_original():
    cfg = _cpu()
    new = cfg.replace(fixed_scale=3, metric_source="fixed", rectify=False)
    assert (new.fixed_scale, new.metric_source, new.rectify) == (3.0, "fixed", False)
    assert (cfg.fixed_scale, cfg.metric_source, cfg.rectify) == (1.0, "none", True)
    assert type(new.fixed_scale) is float


def test_replace_rejects_invalid_values_and_unknown_names():
    cfg = _cpu()
    with pytest.raises(ConfigError, match="min_depth_m"):
        cfg.replace(min_depth_m=cfg.max_depth_m)
    with pytest.raises(ConfigError, match="output_resolution"):
        cfg.replace(output_resolution="half")
    with pytest.raises(ConfigError, match="sharpen_rate"):
        cfg.replace(sharpen_rate=2.0)


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _cpu().rectify = True  # type: ignore[misc]


# ----------------------------------------------------------------------------- synthetic camera
def test_the_synthetic_camera_defaults_are_valid_and_all_fixed():
    cfg = SyntheticCameraConfig()
    assert (cfg.width, cfg.height, cfg.encoding, cfg.rate_hz) == (640, 480, "rgb8", 10.0)
    assert all(f.metadata["read_only"] for f in dataclasses.fields(SyntheticCameraConfig))


def test_the_synthetic_camera_coerces_int_floats():
    cfg = SyntheticCameraConfig(hfov_deg=90, rate_hz=5)
    assert (cfg.hfov_deg, type(cfg.hfov_deg), type(cfg.rate_hz)) == (90.0, float, float)


@pytest.mark.parametrize("name, value", [
    ("width", 8), ("height", 5000), ("width", 64.0), ("seed", -1), ("hfov_deg", 180.0),
    ("rate_hz", 0.0), ("scene", "forest"), ("encoding", "mono8"), ("reliability", "transient"),
    ("publish_lidar", "yes"), ("lidar_beams", 0), ("loop_frames", 0), ("frame_id", 3),
])
def test_a_bad_synthetic_camera_value_raises_naming_the_parameter(name, value):
    with pytest.raises(ConfigError, match=name):
        SyntheticCameraConfig(**{name: value})
