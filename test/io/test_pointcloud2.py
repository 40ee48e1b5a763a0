"""sensor_msgs/PointCloud2 ⇄ numpy, for rclpy and rosbags messages alike."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.io import pointcloud
from lotus2_ros.io.errors import MessageError
from lotus2_ros.io.msg_types import data_as_uint8
from lotus2_ros.io.pointcloud import (
    build_pointcloud2,
    pack_rgb,
    pointcloud2_to_xyz,
    read_pointcloud2_fields,
    unpack_rgb,
)
from lotus2_ros.io.stamps import build_header, header_stamp_ns

FLOAT32, FLOAT64, UINT8, UINT16, UINT32 = 7, 8, 2, 4, 6


@pytest.fixture
def header(types):
    return build_header(types, 5_000_000_001, "lidar")


def organised(height=3, width=4, seed=0):
    """Points, colours and unit normals of a small organised cloud with two invalid pixels."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-5, 5, size=(height, width, 3)).astype(np.float32)
    points[0, 1] = np.nan
    points[2, 3] = np.nan
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    normals = rng.normal(size=(height, width, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return points, rgb, normals


def raw_cloud(types, header, records: np.ndarray, fields, *, row_pad=0, big_endian=False):
    """An incoming cloud from a structured [H,W] array; ``fields`` = [(name, offset, datatype)]."""
    height, width = records.shape
    point_step = records.dtype.itemsize
    rows = np.zeros((height, width * point_step + row_pad), dtype=np.uint8)
    rows[:, : width * point_step] = np.ascontiguousarray(records).view(np.uint8).reshape(height, -1)
    return types.PointCloud2(
        header=header,
        height=height,
        width=width,
        fields=[types.PointField(name=n, offset=o, datatype=t, count=1) for n, o, t in fields],
        is_bigendian=big_endian,
        point_step=point_step,
        row_step=width * point_step + row_pad,
        data=types.pack_data(rows.reshape(-1)),
        is_dense=False,
    )


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------
def test_build_writes_an_organised_cloud_with_the_pcl_layout(types, header):
    points, rgb, normals = organised()
    msg = build_pointcloud2(types, header, points, rgb, normals)

    assert (msg.height, msg.width, msg.is_dense, msg.is_bigendian) == (3, 4, False, False)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, FLOAT32, 1),
        ("y", 4, FLOAT32, 1),
        ("z", 8, FLOAT32, 1),
        ("rgb", 12, FLOAT32, 1),
        ("normal_x", 16, FLOAT32, 1),
        ("normal_y", 20, FLOAT32, 1),
        ("normal_z", 24, FLOAT32, 1),
    ]
    assert (msg.point_step, msg.row_step) == (32, 128)
    assert data_as_uint8(msg.data).size == 3 * 128
    assert header_stamp_ns(msg.header) == 5_000_000_001 and msg.header.frame_id == "lidar"


@pytest.mark.parametrize(
    ("with_rgb", "with_normals", "point_step"), [(False, False, 16), (True, False, 16), (False, True, 32)]
)
def test_point_step_is_padded_to_16_bytes(types, header, with_rgb, with_normals, point_step):
    points, rgb, normals = organised()
    msg = build_pointcloud2(types, header, points, rgb if with_rgb else None, normals if with_normals else None)
    assert msg.point_step == point_step
    names = [f.name for f in msg.fields]
    assert ("rgb" in names) == with_rgb and ("normal_x" in names) == with_normals
    # Padding bytes are zero, so equal clouds serialise to equal bytes.
    records = data_as_uint8(msg.data).reshape(3, 4, point_step)
    assert not records[..., 4 * len(names) :].any()


def test_built_fields_read_back_exactly_with_nan_for_invalid_points(types, header):
    points, rgb, normals = organised()
    msg = build_pointcloud2(types, header, points, rgb, normals)
    fields = read_pointcloud2_fields(msg, ["x", "y", "z", "rgb", "normal_x", "normal_y", "normal_z"])

    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=-1)
    np.testing.assert_array_equal(xyz, points)  # NaN where invalid, organised [H,W]
    np.testing.assert_array_equal(unpack_rgb(fields["rgb"]), rgb)
    np.testing.assert_array_equal(np.stack([fields[f"normal_{a}"] for a in "xyz"], axis=-1), normals)


def test_the_packed_rgb_float_holds_0x00rrggbb(types, header):
    points = np.zeros((1, 3, 3), dtype=np.float32)
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [18, 52, 86]]], dtype=np.uint8)
    msg = build_pointcloud2(types, header, points, rgb)
    packed = read_pointcloud2_fields(msg, ["rgb"])["rgb"]
    assert packed.dtype == np.float32
    assert packed.view(np.uint32).tolist() == [[0x00FF0000, 0x0000FF00, 0x00123456]]
    assert np.isfinite(packed).all()  # alpha 0 keeps the bits a finite float
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)
    np.testing.assert_array_equal(pack_rgb(rgb).view(np.uint32), packed.view(np.uint32))


def test_the_numpy_fallback_writes_the_same_bytes_as_the_cv2_path(types, header, monkeypatch):
    points, rgb, normals = organised()
    for args in ((points, rgb, normals), (points, None, normals), (points, rgb, None), (points, None, None)):
        fast = data_as_uint8(build_pointcloud2(types, header, *args).data).copy()
        monkeypatch.setattr(pointcloud, "_LITTLE_ENDIAN_HOST", False)
        slow = data_as_uint8(build_pointcloud2(types, header, *args).data).copy()
        monkeypatch.setattr(pointcloud, "_LITTLE_ENDIAN_HOST", True)
        np.testing.assert_array_equal(fast, slow)


def test_float64_points_are_stored_as_float32(types, header):
    points = np.array([[[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]]])
    xyz = pointcloud2_to_xyz(build_pointcloud2(types, header, points))
    np.testing.assert_array_equal(xyz, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    ("points", "rgb", "normals", "expected"),
    [
        (np.zeros((2, 3), np.float32), None, None, r"points must be a non-empty float \[H,W,3\]"),
        (np.zeros((2, 3, 3), np.int32), None, None, r"points must be a non-empty float \[H,W,3\]"),
        (np.zeros((0, 3, 3), np.float32), None, None, r"points must be a non-empty float \[H,W,3\]"),
        (np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 3), np.float32), None, "rgb must be uint8"),
        (np.zeros((2, 3, 3), np.float32), np.zeros((3, 2, 3), np.uint8), None, r"rgb must have shape \[H,W,3\]"),
        (np.zeros((2, 3, 3), np.float32), None, np.zeros((2, 3, 3), np.uint8), "normals must be a float array"),
    ],
)
def test_build_rejects_mismatched_arrays(types, header, points, rgb, normals, expected):
    with pytest.raises(ValueError, match=expected):
        build_pointcloud2(types, header, points, rgb, normals)


# ----------------------------------------------------------------------------------------------
# Reading arbitrary layouts
# ----------------------------------------------------------------------------------------------
def test_xyz_drops_invalid_points_and_keeps_row_major_order(types, header):
    points, rgb, normals = organised()
    points[1, 2, 0] = np.inf
    xyz = pointcloud2_to_xyz(build_pointcloud2(types, header, points, rgb, normals))
    flat = points.reshape(-1, 3).astype(np.float64)
    expected = flat[np.isfinite(flat).all(axis=1)]
    assert xyz.dtype == np.float64 and xyz.shape == (9, 3)
    np.testing.assert_array_equal(xyz, expected)


def test_float64_fields_with_padded_point_step_and_extra_fields(types, header):
    dtype = np.dtype({"names": ["intensity", "x", "y", "z", "ring"], "formats": ["<f4", "<f8", "<f8", "<f8", "<u2"],
                      "offsets": [0, 8, 16, 24, 32], "itemsize": 40})  # fmt: skip
    records = np.zeros((1, 3), dtype=dtype)
    records["x"], records["y"], records["z"] = [[1.5, -2.0, 1e-9]], [[0.25, 7.0, 3.0]], [[10.0, np.nan, 1e6]]
    records["intensity"], records["ring"] = 99.0, 7
    fields = [
        ("intensity", 0, FLOAT32),
        ("x", 8, FLOAT64),
        ("y", 16, FLOAT64),
        ("z", 24, FLOAT64),
        ("ring", 32, UINT16),
    ]
    msg = raw_cloud(types, header, records, fields)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), [[1.5, 0.25, 10.0], [1e-9, 3.0, 1e6]])
    assert read_pointcloud2_fields(msg, ["ring"])["ring"].tolist() == [[7, 7, 7]]


def test_row_step_padding_is_skipped(types, header):
    dtype = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8], "itemsize": 12})
    records = np.zeros((2, 2), dtype=dtype)
    values = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    for i, name in enumerate("xyz"):
        records[name] = values[..., i]
    msg = raw_cloud(types, header, records, [("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32)], row_pad=7)
    assert msg.row_step == 2 * 12 + 7
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), values.reshape(-1, 3))


def test_big_endian_clouds_are_byte_swapped(types, header):
    dtype = np.dtype({"names": ["z", "y", "x", "rgb"], "formats": [">f4", ">f4", ">f4", ">u4"],
                      "offsets": [0, 4, 8, 12], "itemsize": 16})  # fmt: skip
    records = np.zeros((1, 2), dtype=dtype)
    records["x"], records["y"], records["z"] = [[1.0, 4.0]], [[2.0, 5.0]], [[3.0, 6.0]]
    records["rgb"] = 0x00102030
    fields = [("z", 0, FLOAT32), ("y", 4, FLOAT32), ("x", 8, FLOAT32), ("rgb", 12, UINT32)]
    msg = raw_cloud(types, header, records, fields, big_endian=True)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(unpack_rgb(read_pointcloud2_fields(msg, ["rgb"])["rgb"]), [[[16, 32, 48]] * 2])


def test_an_empty_cloud_gives_no_points(types, header):
    records = np.zeros((1, 0), dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))
    msg = raw_cloud(types, header, records, [("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32)])
    assert pointcloud2_to_xyz(msg).shape == (0, 3)


def _xyz_records():
    return np.zeros((2, 3), dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "<f4")]))


XYZ_FIELDS = [("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("i", 12, FLOAT32)]


@pytest.mark.parametrize(
    ("fields", "changes", "expected"),
    [
        (XYZ_FIELDS[:2], {}, "PointCloud2 has no field 'z' \\(fields: x, y\\)"),
        ([("x", 0, UINT8), *XYZ_FIELDS[1:]], {}, "field 'x' has datatype 2; supported here: 7, 8"),
        ([("x", 0, 42), *XYZ_FIELDS[1:]], {}, "field 'x' has datatype 42"),
        ([*XYZ_FIELDS[:2], ("z", 14, FLOAT32)], {}, "field 'z' at offset 14 \\(4 bytes\\) does not fit point_step 16"),
        (XYZ_FIELDS, {"row_step": 40}, "PointCloud2.row_step 40 is smaller than width 3 x point_step 16 \\(48\\)"),
        (XYZ_FIELDS, {"point_step": 0}, "PointCloud2.point_step must be positive, got 0"),
        (XYZ_FIELDS, {"height": 3}, "PointCloud2.data has 96 bytes, expected row_step x height = 48 x 3 = 144"),
    ],
)
def test_malformed_clouds_raise_message_error_naming_the_problem(types, header, fields, changes, expected):
    msg = raw_cloud(types, header, _xyz_records(), fields)
    for name, value in changes.items():
        setattr(msg, name, value)
    with pytest.raises(MessageError, match=expected):
        pointcloud2_to_xyz(msg)


def test_unpack_rgb_rejects_non_32_bit_values():
    with pytest.raises(ValueError, match="4-byte float32 or uint32"):
        unpack_rgb(np.zeros(3, np.float64))


def _reference_records(points, rgb, normals):
    """The records as a structured array, field by field (the layout the module docstring gives)."""
    names = ["x", "y", "z"] + (["rgb"] if rgb is not None else []) + (
        ["normal_x", "normal_y", "normal_z"] if normals is not None else [])
    step = 16 if len(names) <= 4 else 32
    dtype = np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": [4 * i for i in range(len(names))],
                      "itemsize": step})
    records = np.zeros(points.shape[:2], dtype=dtype)
    for i, axis in enumerate("xyz"):
        records[axis] = points[..., i]
    if rgb is not None:
        records["rgb"] = pack_rgb(rgb)
    if normals is not None:
        for i, axis in enumerate("xyz"):
            records[f"normal_{axis}"] = normals[..., i]
    return records.view(np.uint8).reshape(-1)


@pytest.mark.parametrize("little_endian_path", [True, False])
def test_built_bytes_equal_the_reference_records_whatever_the_storage_held(types, header, monkeypatch,
                                                                           little_endian_path):
    """Every byte of the message storage is written (padding included), straight into the field."""
    original = types.new_data

    def dirty_new_data(nbytes):
        data, view = original(nbytes)
        view[:] = 0xAB  # what an uninitialised buffer might hold
        return data, view

    monkeypatch.setattr(type(types), "new_data", staticmethod(dirty_new_data))  # providers may be frozen
    monkeypatch.setattr(pointcloud, "_LITTLE_ENDIAN_HOST", little_endian_path)
    points, rgb, normals = organised(height=5, width=7)
    for args in ((points, rgb, normals), (points, None, normals), (points, rgb, None), (points, None, None)):
        msg = build_pointcloud2(types, header, *args)
        np.testing.assert_array_equal(data_as_uint8(msg.data), _reference_records(*args))


def test_the_cloud_is_stored_in_the_fields_own_type_without_aliasing_the_inputs(types, header):
    points, rgb, normals = organised()
    msg = build_pointcloud2(types, header, points, rgb, normals)
    expected = _reference_records(points, rgb, normals)
    points[:] = 0.0
    normals[:] = 0.0
    rgb[:] = 0
    np.testing.assert_array_equal(data_as_uint8(msg.data), expected)
    if types.name == "rclpy":
        import array

        assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
        msg.data.append(0)  # no numpy view left pinning the storage (would raise BufferError)


@pytest.mark.parametrize("little_endian_path", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_cloud_written_from_depth_and_rays_has_the_bytes_of_the_cloud_of_its_points(types, header, monkeypatch,
                                                                                    little_endian_path, threads):
    from lotus2_ros.geometry import bands
    from lotus2_ros.io.pointcloud import build_depth_pointcloud2

    monkeypatch.setattr(pointcloud, "_LITTLE_ENDIAN_HOST", little_endian_path)
    monkeypatch.setattr(bands, "_threads", threads)
    rng = np.random.default_rng(3)
    height, width = 300, 1000  # two row chunks on two threads
    ray_x = np.tile(((np.arange(width) - 499.5) / 800.0).astype(np.float32), (height, 1))
    ray_y = np.tile(((np.arange(height) - 150.2) / 800.0).astype(np.float32)[:, None], (1, width))
    depth = rng.uniform(0.5, 20.0, (height, width)).astype(np.float32)
    depth[0, :7] = np.nan
    depth[-1, -3:] = np.inf
    _, rgb, normals = organised(height, width, seed=4)
    points = np.stack([ray_x * depth, ray_y * depth, depth], axis=-1)
    for extras in ((rgb, normals), (None, normals), (rgb, None), (None, None)):
        msg = build_depth_pointcloud2(types, header, depth, ray_x, ray_y, *extras)
        assert (msg.height, msg.width) == (height, width)
        np.testing.assert_array_equal(data_as_uint8(msg.data), _reference_records(points, *extras))


def test_a_cloud_from_depth_refuses_rays_or_extras_of_another_shape(types, header):
    from lotus2_ros.io.pointcloud import build_depth_pointcloud2

    depth = np.ones((3, 4), np.float32)
    rays = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"ray_y must have shape \[H,W\] = \(3, 4\)"):
        build_depth_pointcloud2(types, header, depth, rays, rays[:, :3])
    with pytest.raises(ValueError, match="depth_m must be a non-empty float"):
        build_depth_pointcloud2(types, header, depth.astype(np.int32), rays, rays)
    with pytest.raises(ValueError, match="normals must have shape"):
        build_depth_pointcloud2(types, header, depth, rays, rays, None, np.zeros((3, 5, 3), np.float32))
