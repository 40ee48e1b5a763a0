"""perception_node start-up as a ROS user gets it wrong (issue #13.9, #13.12): one line, no traceback.

The node processes of a test start together (start-up is mostly imports), so the module costs
about one start.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from ros_harness import REPO, base_params

pytestmark = pytest.mark.slow


def node_args(params: dict, extra: list[str] = ()) -> list[str]:
    args = [sys.executable, "-m", "lotus2_ros.cli.main", "perception-node", "--ros-args", *extra]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return args


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return -999, out, err
    return proc.returncode, out, err


def test_bad_parameters_and_parameter_files_end_with_one_line_and_exit_code_1(tiny_model, tmp_path):
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("/**:\n  ros__parameters:\n    device: [cpu\n")
    good = base_params(tiny_model)
    cases = {
        "misspelled": (node_args({**good, "sharpen_rate": 5.0}), "'sharpen_rate' (did you mean 'sharpen_rate_hz'"),
        "missing file": (node_args(good, ["--params-file", str(tmp_path / "nonexistent.yaml")]), "nonexistent.yaml"),
        "malformed file": (node_args(good, ["--params-file", str(malformed)]), "malformed.yaml"),
    }
    procs = {name: start(args) for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        rc, out, err = finish(proc)
        assert rc == 1, f"{name}: exit {rc}\n{out}\n{err}"
        assert "Traceback" not in err + out, f"{name}:\n{err}"
        assert cases[name][1] in err, f"{name}:\n{err}"
        assert "perception_node: cannot start" in err


def test_the_default_cuda_device_on_a_machine_without_cuda_says_what_to_pass(tiny_model):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    params = base_params(tiny_model)
    del params["device"], params["dtype"]  # the defaults: cuda, bf16
    rc, out, err = finish(start(node_args(params)))
    assert rc == 1 and "Traceback" not in err + out, err
    lines = [line for line in err.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "use device cpu (and dtype fp32)" in lines[0], err


@pytest.mark.parametrize("sig,after_s", [(signal.SIGINT, 1.0), (signal.SIGTERM, 2.5)])
def test_a_signal_while_starting_ends_the_node_quietly(tiny_model, sig, after_s):
    proc = start(node_args(base_params(tiny_model)))
    time.sleep(after_s)  # inside the imports (torch, diffusers) or the model load
    assert proc.poll() is None, "the node ended before the signal"
    proc.send_signal(sig)
    rc, out, err = finish(proc, 60)
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out, err
    assert rc == 0, f"exit {rc}\n{err}"
    assert "stopped while starting" in err or "ready" in err + out, err
