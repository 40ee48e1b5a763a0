"""``lotus2 process-bag`` / ``process-bags``: exit codes, fail-fast checks, SIGINT and --resume."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bag_helpers import canonical, folder_digest, read_bag

from lotus2_ros.bag import ProcessBagOptions, partial_path, process_bag
from lotus2_ros.bag.config_file import load_perception_config
from lotus2_ros.bag.synthetic import write_synthetic_bag
from lotus2_ros.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")
REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
/**:
  ros__parameters:
    device: cpu
    dtype: fp32
    tasks: [depth]
    sharpen_enabled: false
    publish_colorized: false
"""


def _args(tiny_model, config: Path, *extra: str) -> list[str]:
    return ["--config", str(config), "--base-model", str(tiny_model.base_model), "--weights", str(tiny_model.weights),
            "--no-progress", *extra]


@pytest.fixture()
def config_file(tmp_path) -> Path:
    path = tmp_path / "perception.yaml"
    path.write_text(CONFIG)
    return path


def test_bad_requests_exit_2_with_the_reason_before_loading_the_model(small_bag, tmp_path, caplog, config_file):
    missing_model = ["--base-model", str(tmp_path / "nope"), "--weights", str(tmp_path / "nope")]
    cases = [
        (["process-bag", str(small_bag.path), "-o", str(tmp_path / "o"), "--image-topic", "/front/image",
          "--config", str(config_file), *missing_model], f"{small_bag.path} has no topic /front/image"),
        (["process-bag", str(tmp_path / "absent"), "-o", str(tmp_path / "o"), "--config", str(config_file),
          *missing_model], "does not exist"),
        (["process-bag", str(small_bag.path), "-o", str(small_bag.path), "--config", str(config_file),
          *missing_model], "overlaps the input bag"),
        (["process-bag", str(small_bag.path), "-o", str(tmp_path / "o"), "--config", str(config_file)],
         "--base-model"),
        (["process-bag", str(small_bag.path), "-o", str(tmp_path / "o"), "--config", str(config_file),
          *missing_model], "not found"),  # everything else is fine: the model folder is checked last
    ]
    for argv, reason in cases:
        caplog.clear()
        assert main(argv) == 2, argv
        assert reason in caplog.text, (reason, caplog.text)
    assert not (tmp_path / "o").exists() and not partial_path(tmp_path / "o").exists()


def test_sigint_stops_after_the_current_frame_and_resume_finishes_the_same_bag(tiny_model, tiny_engine, tmp_path,
                                                                                 config_file):
    bag = write_synthetic_bag(tmp_path / "in", num_frames=3, width=64, height=48, lidar=False, tf_static=False)
    digest = folder_digest(bag.path)
    out = tmp_path / "out"
    argv = ["process-bag", str(bag.path), "-o", str(out), *_args(tiny_model, config_file)]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "lotus2_ros.cli.main", "-v", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if "frame 1/3 done" in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines)
    rest, _ = proc.communicate(timeout=120)
    log = "".join(lines) + rest
    assert proc.returncode == 130, log
    assert "--resume" in log and not out.exists() and partial_path(out).is_dir()
    assert folder_digest(bag.path) == digest

    assert main(argv + ["--resume"]) == 0
    assert not partial_path(out).exists()
    reference = process_bag(ProcessBagOptions(bag.path, tmp_path / "reference", load_perception_config(
        config_file, base_model=str(tiny_model.base_model), weights=str(tiny_model.weights))), tiny_engine)
    assert reference.frames_processed == 3
    assert canonical(read_bag(out)) == canonical(read_bag(tmp_path / "reference"))


def test_process_bags_takes_its_share_and_skips_finished_bags_on_resume(tiny_model, small_bag, tmp_path, config_file,
                                                                         monkeypatch, caplog):
    import shutil

    bags = []
    for name in ("a", "b", "c"):
        shutil.copytree(small_bag.path, tmp_path / name)
        bags.append(tmp_path / name)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = ["process-bags", *map(str, bags), "-o", str(tmp_path / "out"), *_args(tiny_model, config_file)]
    assert main(argv) == 0
    from lotus2_ros.bag.shard import Shard, assign_bags

    mine = assign_bags(bags, Shard(1, 2))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(b.name for b in mine) and len(mine) == 1
    caplog.clear()
    caplog.set_level(logging.INFO, logger="lotus2.process_bag")
    assert main(argv + ["--resume"]) == 0
    assert "done already" in caplog.text


def test_the_bag_package_imports_without_ros():
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rclpy", "sensor_msgs", "std_msgs", "rosidl_runtime_py"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
        import lotus2_ros.bag, lotus2_ros.bag.synthetic, lotus2_ros.cli.process_bag
        assert "rclpy" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_sparse_depth_image_in_the_bag_is_the_metric_reference_with_depth_ref_topic(tiny_model, tmp_path, config_file):
    bag = write_synthetic_bag(tmp_path / "rgbd", num_frames=3, width=64, height=48, lidar=False, tf_static=False,
                              extra_topic=False, depth_reference_stride_px=4)
    out = tmp_path / "out"
    argv = ["process-bag", str(bag.path), "-o", str(out), *_args(tiny_model, config_file),
            "--depth-ref-topic", bag.topics["depth_reference"]]
    assert main(argv) == 0
    from bag_helpers import deserialize

    fits = [deserialize(raw, msgtype) for topic, msgtype, _, raw in read_bag(out) if topic.endswith("/scale_fit")]
    assert [f.header.stamp.sec * 10**9 + f.header.stamp.nanosec for f in fits] == bag.stamps_ns
    reference_pixels = 12 * 16  # every 4th row and column of 48x64
    for fit in fits:
        assert fit.fit_space == "disparity" and 0 < fit.num_points <= reference_pixels
        assert fit.num_inliers <= fit.num_points
    # Both reference options at once are refused by the parser (exit 2), before any work.
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--lidar-topic", "/lidar/points", "--force"])
    assert exc.value.code == 2
