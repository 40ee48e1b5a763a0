"""PLY export of point clouds."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.io.ply import read_ply, write_ply


def test_write_ply_keeps_only_finite_points_with_their_colours_and_normals(tmp_path):
    points = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    points[0, 1] = np.nan
    points[1, 2, 2] = np.inf
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    normals = np.tile(np.array([0, 0, -1], np.float32), (2, 3, 1))
    path = tmp_path / "cloud.ply"
    assert write_ply(path, points, rgb, normals) == 4
    data = read_ply(path)
    keep = np.array([True, False, True, True, True, False])
    np.testing.assert_array_equal(np.stack([data["x"], data["y"], data["z"]], -1), points.reshape(-1, 3)[keep])
    np.testing.assert_array_equal(np.stack([data["red"], data["green"], data["blue"]], -1), rgb.reshape(-1, 3)[keep])
    np.testing.assert_array_equal(data["nz"], -np.ones(4, np.float32))
    assert not list(tmp_path.glob(".*tmp"))


def test_write_ply_rejects_colours_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="rgb has 2 rows for 6 points"):
        write_ply(tmp_path / "x.ply", np.zeros((2, 3, 3)), rgb=np.zeros((2, 3), np.uint8))
