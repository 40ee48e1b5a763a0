"""Bags built in tmp_path with rosbags' own writer from synthetic sequences, processed once per session.

Two processed runs are shared by the tests (the tiny model is slow on CPU, so each is made once):

* ``lidar_run``: sqlite3 bag, raw ``rgb8`` images, LiDAR + ``/tf_static``, depth and normals,
  one sharpener step per frame, LiDAR metric source, per-frame export.
* ``fixed_run``: mcap bag, JPEG ``CompressedImage``, depth only, no sharpener, fixed metric scale
  (so every frame has metric depth and a point cloud), per-frame export.
"""

from __future__ import annotations

import pytest
from bag_helpers import NUM_FRAMES, Run, fixed_config, lidar_config, process_into

from lotus2_ros.bag.synthetic import SyntheticBag, write_synthetic_bag


@pytest.fixture(scope="session")
def lidar_bag(tmp_path_factory) -> SyntheticBag:
    return write_synthetic_bag(tmp_path_factory.mktemp("in") / "lidar_sqlite", num_frames=NUM_FRAMES,
                               storage="sqlite3")


@pytest.fixture(scope="session")
def compressed_bag(tmp_path_factory) -> SyntheticBag:
    return write_synthetic_bag(tmp_path_factory.mktemp("in") / "jpeg_mcap", num_frames=NUM_FRAMES, storage="mcap",
                               compressed=True, seed=1)


@pytest.fixture(scope="session")
def small_bag(tmp_path_factory) -> SyntheticBag:
    """Two 64x48 frames, camera only: for the tests of options, refusals and the command line."""
    return write_synthetic_bag(tmp_path_factory.mktemp("in") / "small", num_frames=2, width=64, height=48,
                               lidar=False, tf_static=False)


@pytest.fixture(scope="session")
def lidar_run(lidar_bag, tiny_engine, tmp_path_factory) -> Run:
    return process_into(lidar_bag, tiny_engine, lidar_config(), tmp_path_factory.mktemp("lidar_run"))


@pytest.fixture(scope="session")
def fixed_run(compressed_bag, tiny_engine, tmp_path_factory) -> Run:
    return process_into(compressed_bag, tiny_engine, fixed_config(), tmp_path_factory.mktemp("fixed_run"))
