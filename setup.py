"""pip packaging of lotus2_ros (``pip install .`` / ``pip install -e .``), no ROS needed.

ROS 2 workspaces build this package with colcon through ``package.xml`` + ``CMakeLists.txt``
(ament_cmake, which also generates ``msg/``); this file is only for pip. See docs/BUILD.md.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """The version from ``lotus2_ros/__init__.py`` (package.xml carries the same, a test checks)."""
    text = (HERE / "lotus2_ros" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("lotus2_ros/__init__.py: no __version__ = '...' line")
    return match.group(1)


# Loose lower bounds. torch has no upper pin and no CUDA-only pin: install the torch build you
# want first (scripts/setup_venv.py installs torch==2.13.0, CPU) and pip keeps it.
# Optional: "train" adds the Hypersim reader (HDF5) and TensorBoard logging; `make venv`
# installs both extras so every test runs.
EXTRAS_REQUIRE = {
    "test": ["pytest>=7"],
    "train": ["h5py>=3.8", "tensorboard>=2.14"],
}

INSTALL_REQUIRES = [
    "torch>=2.1",
    "diffusers>=0.30",
    "transformers>=4.40",
    "peft>=0.11",
    "accelerate>=0.30",
    "safetensors>=0.4",
    "numpy>=1.21",
    "opencv-python-headless>=4.5",
    "rosbags>=0.9.20",
    "tqdm>=4.60",
    "sentencepiece>=0.1.99",
    "protobuf>=3.20",
    "pyyaml>=5.4",
]

setup(
    name="lotus2_ros",
    version=read_version(),
    description=(
        "Dense monocular depth and surface normals for ROS 2 with Lotus-2: perception node, "
        "rosbag processor, command-line predictor and trainer"
    ),
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lotus2_ros", "lotus2_ros.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    # The .msg definitions, for registering the custom types without a ROS build (rosbags).
    data_files=[("share/lotus2_ros/msg", ["msg/ScaleFit.msg"])],
    entry_points={"console_scripts": ["lotus2 = lotus2_ros.cli.main:main"]},
    zip_safe=False,
)
