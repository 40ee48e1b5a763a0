"""``sensor_msgs/PointCloud2`` ⇄ numpy, vectorised (no per-point Python), duck-typed.

Reading takes any layout: fields of any ``PointField`` datatype at any offset, any
``point_step``, row padding (``row_step > width x point_step``), organised or not, either byte
order. Fields are read through a numpy structured dtype laid over the message buffer with
explicit strides (no copy until the requested fields are extracted).

Writing produces the organised clouds the node publishes: little-endian float32 fields ``x, y,
z`` (metres, NaN for invalid pixels), optionally ``rgb`` (PCL/RViz packing: the uint32
``0x00RRGGBB`` reinterpreted as float32) and ``normal_x, normal_y, normal_z``; fields are
consecutive 4-byte slots and ``point_step`` is rounded up to a multiple of 16 bytes (PCL's
alignment: 16 bytes for xyz or xyz+rgb, 32 with normals), padding zeroed so equal clouds give
equal bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from ..geometry.bands import for_row_chunks, row_bands
from .errors import MessageError
from .msg_types import MessageTypes, data_as_uint8
from .stamps import copy_header

__all__ = [
    "POINTFIELD_DTYPES",
    "build_depth_pointcloud2",
    "build_pointcloud2",
    "check_pointcloud2_xyz",
    "pack_rgb",
    "pointcloud2_to_xyz",
    "read_pointcloud2_fields",
    "unpack_rgb",
]

#: ``sensor_msgs/PointField`` datatype constant -> numpy type (byte order added per message).
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
_FLOAT32 = 7
_XYZ = ("x", "y", "z")
_NORMALS = ("normal_x", "normal_y", "normal_z")
_ALIGN_BYTES = 16
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _structured_view(msg: Any, names: Sequence[str], allowed_types: Sequence[int] | None = None) -> np.ndarray:
    """A ``[H,W]`` structured view over the message data holding the named fields."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise MessageError(f"PointCloud2 has a negative size: height {height}, width {width}")
    if point_step <= 0:
        raise MessageError(f"PointCloud2.point_step must be positive, got {point_step}")
    if row_step < width * point_step:
        raise MessageError(
            f"PointCloud2.row_step {row_step} is smaller than width {width} x point_step "
            f"{point_step} ({width * point_step})"
        )
    data = data_as_uint8(msg.data)
    if data.size != row_step * height:
        raise MessageError(
            f"PointCloud2.data has {data.size} bytes, expected row_step x height = {row_step} x "
            f"{height} = {row_step * height}"
        )
    fields = {}
    for field in msg.fields:
        fields.setdefault(str(field.name), field)  # the first of duplicated names wins
    missing = [name for name in names if name not in fields]
    if missing:
        raise MessageError(
            f"PointCloud2 has no field {', '.join(map(repr, missing))} (fields: "
            f"{', '.join(fields) or 'none'})"
        )
    order = ">" if msg.is_bigendian else "<"
    formats, offsets = [], []
    for name in names:
        field = fields[name]
        datatype, offset = int(field.datatype), int(field.offset)
        if datatype not in POINTFIELD_DTYPES or (allowed_types is not None and datatype not in allowed_types):
            allowed = allowed_types or sorted(POINTFIELD_DTYPES)
            raise MessageError(
                f"PointCloud2 field {name!r} has datatype {datatype}; supported here: "
                f"{', '.join(map(str, allowed))}"
            )
        dtype = POINTFIELD_DTYPES[datatype].newbyteorder(order)
        # count > 1 (an array field) is read as its first element; count 0 is taken as 1.
        if offset < 0 or offset + dtype.itemsize > point_step:
            raise MessageError(
                f"PointCloud2 field {name!r} at offset {offset} ({dtype.itemsize} bytes) does not "
                f"fit point_step {point_step}"
            )
        formats.append(dtype)
        offsets.append(offset)
    struct = np.dtype({"names": list(names), "formats": formats, "offsets": offsets, "itemsize": point_step})
    if height * width == 0:
        return np.zeros((height, width), dtype=struct)
    return np.ndarray((height, width), dtype=struct, buffer=data, strides=(row_step, point_step))


def read_pointcloud2_fields(msg: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named fields of a PointCloud2 as new arrays, in the message's organisation.

    Args:
        msg: ``sensor_msgs/PointCloud2`` (rclpy or rosbags object).
        names: Field names to read, e.g. ``("x", "y", "z", "rgb")``.

    Returns:
        ``{name: [H,W] array}`` in the field's own type (native byte order); ``H = 1`` for an
        unorganised cloud. Invalid points are kept as they are (NaN for float clouds).

    Raises:
        MessageError: A field is missing, of unknown datatype or outside ``point_step``; or the
            sizes (``point_step``, ``row_step``, data length) are inconsistent.
    """
    view = _structured_view(msg, names)
    return {name: np.array(view[name], dtype=view.dtype[name].newbyteorder("="), order="C") for name in names}


def pointcloud2_to_xyz(msg: Any) -> np.ndarray:
    """Finite points of a PointCloud2 (e.g. LiDAR) for projection and metric fitting.

    Args:
        msg: ``sensor_msgs/PointCloud2`` whose ``x``, ``y``, ``z`` fields are FLOAT32 (7) or
            FLOAT64 (8); other fields are ignored.

    Returns:
        ``[N,3]`` float64 points in the cloud's frame, metres, row-major point order; points with
        any NaN/Inf coordinate are dropped.

    Raises:
        MessageError: x, y or z missing or not a float type; inconsistent sizes.
    """
    view = _structured_view(msg, _XYZ, allowed_types=(7, 8))
    xyz = np.empty((view.size, 3), dtype=np.float64)  # [N,3]
    for axis, name in enumerate(_XYZ):
        xyz[:, axis] = view[name].reshape(-1)
    # Column-wise tests and take() are ~3x faster than a boolean row mask on [N,3].
    finite = np.isfinite(xyz[:, 0])
    finite &= np.isfinite(xyz[:, 1])
    finite &= np.isfinite(xyz[:, 2])
    return xyz.take(np.flatnonzero(finite), axis=0)


def check_pointcloud2_xyz(msg: Any) -> None:
    """The layout checks of :func:`pointcloud2_to_xyz` without reading a point (O(fields)).

    Raises:
        MessageError: As :func:`pointcloud2_to_xyz`.
    """
    _structured_view(msg, _XYZ, allowed_types=(7, 8))


# --------------------------------------------------------------------------------------------
# Packed colour
# --------------------------------------------------------------------------------------------
def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [...,3]`` RGB as PCL-packed float32 (bits of the uint32 ``0x00RRGGBB``)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 [...,3], got {rgb.dtype} {rgb.shape}")
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    return packed.view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL-packed colours (float32 bits or uint32 ``0x00RRGGBB``) as ``uint8 [...,3]`` RGB."""
    packed = np.asarray(packed)
    if packed.dtype.itemsize != 4:
        raise ValueError(f"packed colours must be 4-byte float32 or uint32, got {packed.dtype}")
    bits = np.ascontiguousarray(packed).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _check_image_shaped(name: str, array: np.ndarray | None, shape: tuple[int, int], kind: str) -> None:
    if array is None:
        return
    if array.shape != (*shape, 3):
        raise ValueError(f"{name} must have shape [H,W,3] = {(*shape, 3)} like points, got {array.shape}")
    if kind == "float" and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {array.dtype}")
    if kind == "uint8" and array.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {array.dtype}")


def _interleave_cv2(points: np.ndarray, rgb: np.ndarray | None, normals: np.ndarray | None,
                    cloud: np.ndarray) -> None:
    """Writes the point records into ``cloud`` (``[H,W,slots]`` float32) with one ``cv2.mixChannels``.

    One pass over the records, several times faster than strided numpy writes at 640x480, and
    straight into the message's storage. Little-endian hosts only: the rgb
    slot is built byte-wise (B, G, R, 0 = little-endian uint32 ``0x00RRGGBB``) and viewed as
    float32.
    """
    planes = [np.ascontiguousarray(points, dtype=np.float32)]
    if rgb is not None:
        bgr0 = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)  # [H,W,4] uint8
        bgr0[..., 3] = 0  # alpha 0: 0xFF would make the float a NaN pattern that may be rewritten
        planes.append(bgr0.view(np.float32))  # [H,W,1]
    if normals is not None:
        planes.append(np.ascontiguousarray(normals, dtype=np.float32))
    slots = cloud.shape[2]
    height, width = cloud.shape[:2]
    # On the host threads (geometry.bands): one core does not reach the memory bandwidth a
    # 29.5 MB cloud (1280x720 with normals) needs; in row chunks the records are the same.
    from_to = _slot_map(sum(plane.shape[2] for plane in planes), slots)
    for_row_chunks(height, width, lambda rows: cv2.mixChannels([p[rows] for p in planes], [cloud[rows]], from_to))


def _slot_map(used: int, slots: int) -> list[int]:
    """``cv2.mixChannels`` pairs: source channel i (numbered across the planes in order) to slot i,
    the padding slots zero-filled by mixChannels itself (source -1), without reading a zero plane."""
    return [i for slot in range(slots) for i in (slot if slot < used else -1, slot)]


def _interleave_depth_cv2(depth: np.ndarray, ray_x: np.ndarray, ray_y: np.ndarray, rgb: np.ndarray | None,
                          normals: np.ndarray | None, cloud: np.ndarray) -> None:
    """:func:`_interleave_cv2` of the points ``(ray_x·z, ray_y·z, z)`` with ``z = depth``, without
    building them: per band of rows, x and y go to a cache-sized scratch and one ``mixChannels``
    writes the records from it, the depth, the colours and the normals."""
    height, width = depth.shape
    slots = cloud.shape[2]
    from_to = _slot_map(3 + (rgb is not None) + (0 if normals is None else 3), slots)

    def records(chunk: slice) -> None:
        bands = list(row_bands(height, width, rows=chunk))
        most = bands[0].stop - bands[0].start
        xy = np.empty((2, most, width, 1), dtype=np.float32)  # one band's x and y planes
        bgr0 = None if rgb is None else np.empty((most, width, 4), dtype=np.uint8)
        for rows in bands:
            n = rows.stop - rows.start
            x, y = xy[0, :n], xy[1, :n]
            np.multiply(ray_x[rows], depth[rows], out=x[..., 0])
            np.multiply(ray_y[rows], depth[rows], out=y[..., 0])
            planes = [x, y, depth[rows, :, None]]
            if rgb is not None:
                cv2.cvtColor(rgb[rows], cv2.COLOR_RGB2BGRA, dst=bgr0[:n])
                bgr0[:n, :, 3] = 0  # see _interleave_cv2
                planes.append(bgr0[:n].view(np.float32))
            if normals is not None:
                planes.append(normals[rows])
            cv2.mixChannels(planes, [cloud[rows]], from_to)

    for_row_chunks(height, width, records)


def _interleave_numpy(points: np.ndarray, rgb: np.ndarray | None, normals: np.ndarray | None, slots: int) -> np.ndarray:
    """A fresh ``[H,W,slots]`` cloud with the bytes :func:`_interleave_cv2` writes, on any host byte
    order (explicit ``<`` dtypes)."""
    height, width = points.shape[:2]
    cloud = np.zeros((height, width, slots), dtype="<f4")  # [H,W,slots]
    cloud[..., 0:3] = points
    slot = 3
    if rgb is not None:
        cloud.view("<u4")[..., slot] = pack_rgb(rgb).view(np.uint32)
        slot += 1
    if normals is not None:
        cloud[..., slot : slot + 3] = normals
    return cloud


def build_pointcloud2(
    types: MessageTypes,
    header: Any,
    points: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
) -> Any:
    """An organised ``sensor_msgs/PointCloud2`` (one point per pixel) for RViz and mapping.

    Args:
        types: Message family to build with.
        header: Header whose stamp and ``frame_id`` are copied (the camera's optical frame).
        points: ``[H,W,3]`` float points in that frame, metres; NaN marks invalid pixels.
        rgb: ``[H,W,3]`` uint8 colours, or None for no ``rgb`` field.
        normals: ``[H,W,3]`` float unit normals in the same frame, or None.

    Returns:
        Cloud with ``height = H``, ``width = W``, ``is_dense = False``, little-endian, fields
        ``x, y, z[, rgb][, normal_x, normal_y, normal_z]`` (FLOAT32, count 1).

    Raises:
        ValueError: Shapes or dtypes do not match.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[2] != 3 or 0 in points.shape or not np.issubdtype(points.dtype, np.floating):
        raise ValueError(f"points must be a non-empty float [H,W,3] array, got {points.dtype} {points.shape}")
    rgb, normals = _checked_extras(points.shape[:2], rgb, normals)

    def write(cloud: np.ndarray) -> None:
        _interleave_cv2(points, rgb, normals, cloud)

    return _organised_cloud(types, header, points.shape[:2], rgb, normals, write, lambda: points)


def build_depth_pointcloud2(
    types: MessageTypes,
    header: Any,
    depth_m: np.ndarray,
    ray_x: np.ndarray,
    ray_y: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
) -> Any:
    """:func:`build_pointcloud2` of the points ``(ray_x·z, ray_y·z, z)``, ``z = depth_m``, bit for bit,
    without building them first (a depth image back-projected along a pinhole camera's pixel rays).

    Args:
        types, header, rgb, normals: As for :func:`build_pointcloud2`.
        depth_m: ``[H,W]`` float z-depth, metres; NaN marks invalid pixels.
        ray_x, ray_y: ``[H,W]`` float x and y of each pixel's ray at z = 1 (``(u − cx)/fx``, …).

    Raises:
        ValueError: Shapes or dtypes do not match.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or 0 in depth.shape or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth_m must be a non-empty float [H,W] array, got {depth.dtype} {depth.shape}")
    for name, ray in (("ray_x", ray_x), ("ray_y", ray_y)):
        if np.shape(ray) != depth.shape:
            raise ValueError(f"{name} must have shape [H,W] = {depth.shape} like depth_m, got {np.shape(ray)}")
    rgb, normals = _checked_extras(depth.shape, rgb, normals)
    rgb = None if rgb is None else np.ascontiguousarray(rgb)
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    ray_x = np.ascontiguousarray(ray_x, dtype=np.float32)
    ray_y = np.ascontiguousarray(ray_y, dtype=np.float32)

    def write(cloud: np.ndarray) -> None:
        _interleave_depth_cv2(depth, ray_x, ray_y, rgb, None if normals is None else
                              np.ascontiguousarray(normals, dtype=np.float32), cloud)

    def points() -> np.ndarray:
        return np.stack([ray_x * depth, ray_y * depth, depth], axis=-1)

    return _organised_cloud(types, header, depth.shape, rgb, normals, write, points)


def _checked_extras(shape: tuple[int, int], rgb: np.ndarray | None,
                    normals: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    rgb = None if rgb is None else np.asarray(rgb)
    normals = None if normals is None else np.asarray(normals)
    _check_image_shaped("rgb", rgb, shape, "uint8")
    _check_image_shaped("normals", normals, shape, "float")
    return rgb, normals


def _organised_cloud(types: MessageTypes, header: Any, shape: tuple[int, int], rgb: np.ndarray | None,
                     normals: np.ndarray | None, write: Callable[[np.ndarray], None],
                     points: Callable[[], np.ndarray]) -> Any:
    """The cloud message: ``write(cloud)`` fills its ``[H,W,slots]`` float32 records in place
    (little-endian hosts); elsewhere the records come from ``points()``, ``[H,W,3]``, in the numpy form."""
    height, width = shape
    names = list(_XYZ) + (["rgb"] if rgb is not None else []) + (list(_NORMALS) if normals is not None else [])
    slots = -(-len(names) * 4 // _ALIGN_BYTES) * _ALIGN_BYTES // 4
    point_step = slots * 4

    # The records are written straight into the message's storage (no intermediate cloud).
    data, buffer = types.new_data(height * width * point_step)
    if _LITTLE_ENDIAN_HOST:
        write(buffer.view(np.float32).reshape(height, width, slots))
    else:
        buffer[:] = _interleave_numpy(points(), rgb, normals, slots).view(np.uint8).reshape(-1)
    del buffer  # a live view would pin the storage (an rclpy array.array cannot be resized then)
    fields = [types.PointField(name=name, offset=4 * i, datatype=_FLOAT32, count=1) for i, name in enumerate(names)]
    return types.create(
        types.PointCloud2,
        header=copy_header(types, header),
        height=height,
        width=width,
        fields=fields,
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * width,
        data=data,
        is_dense=False,
    )
