"""sensor_msgs/Image and CompressedImage ⇄ numpy, for rclpy and rosbags messages alike."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lotus2_ros.io.errors import MessageError
from lotus2_ros.io.image_msgs import (
    IMAGE_ENCODINGS,
    build_compressed_image,
    build_image,
    compressed_msg_to_rgb,
    depth_m_to_mm,
    image_msg_to_array,
    image_msg_to_depth_m,
    image_msg_to_rgb,
)
from lotus2_ros.io.msg_types import data_as_uint8
from lotus2_ros.io.stamps import build_header, header_stamp_ns

STAMP_NS = 1_700_000_000_123_456_789


@pytest.fixture
def header(types):
    return build_header(types, STAMP_NS, "camera_optical_frame")


def raw_image(types, header, data: bytes, height, width, encoding, step, is_bigendian=0):
    """An incoming Image with exactly the given fields (possibly malformed)."""
    return types.Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=is_bigendian,
        step=step,
        data=types.pack_data(np.frombuffer(data, dtype=np.uint8).copy()),
    )


def sample(encoding: str, height: int = 4, width: int = 5) -> np.ndarray:
    dtype, channels = IMAGE_ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(7)
    if dtype == np.float32:
        return rng.normal(size=shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_every_encoding_round_trips_through_build_and_read(types, header, encoding):
    array = sample(encoding)
    msg = build_image(types, header, array, encoding)

    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (4, 5, encoding, 0)
    assert msg.step == 5 * array.itemsize * (1 if array.ndim == 2 else array.shape[2])
    assert header_stamp_ns(msg.header) == STAMP_NS
    assert msg.header.frame_id == "camera_optical_frame"
    back = image_msg_to_array(msg)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_float_images_keep_nan_for_invalid_pixels(types, header):
    depth = np.array([[1.5, np.nan], [np.inf, 0.25]], dtype=np.float32)
    back = image_msg_to_array(build_image(types, header, depth, "32FC1"))
    np.testing.assert_array_equal(back, depth)  # NaN compares equal in assert_array_equal


def test_the_message_does_not_alias_the_callers_array(types, header):
    array = np.ones((2, 3), dtype=np.float32)
    msg = build_image(types, header, array, "32FC1")
    array[:] = 7.0
    np.testing.assert_array_equal(image_msg_to_array(msg), np.ones((2, 3), np.float32))


def test_the_read_array_is_a_writable_copy_of_the_message(types, header):
    rgb = sample("rgb8")
    msg = build_image(types, header, rgb, "rgb8")
    out = image_msg_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    assert not np.shares_memory(out, data_as_uint8(msg.data))


@pytest.mark.parametrize(
    ("encoding", "to_rgb"),
    [
        ("rgb8", lambda a: a),
        ("bgr8", lambda a: a[..., ::-1]),
        ("rgba8", lambda a: a[..., :3]),
        ("bgra8", lambda a: a[..., 2::-1]),
        ("mono8", lambda a: np.repeat(a[..., None], 3, axis=2)),
    ],
)
def test_camera_encodings_are_converted_to_rgb(types, header, encoding, to_rgb):
    array = sample(encoding)
    rgb = image_msg_to_rgb(build_image(types, header, array, encoding))
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 5, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, to_rgb(array))


def test_mono16_is_mapped_linearly_from_the_full_16_bit_range(types, header):
    mono16 = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)
    rgb = image_msg_to_rgb(build_image(types, header, mono16, "mono16"))
    # round(v / 257): 1000 / 257 = 3.89 -> 4
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 4, 255]])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


# ----------------------------------------------------------------------------------------------
# Layout: padding and byte order
# ----------------------------------------------------------------------------------------------
def test_row_padding_in_step_is_skipped(types, header):
    rgb = sample("rgb8", 3, 4)
    step = 4 * 3 + 5  # 5 padding bytes per row
    padded = np.full((3, step), 0xAB, dtype=np.uint8)
    padded[:, : 4 * 3] = rgb.reshape(3, -1)
    msg = raw_image(types, header, padded.tobytes(), 3, 4, "rgb8", step)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    bgr = raw_image(types, header, padded.tobytes(), 3, 4, "bgr8", step)
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), rgb[..., ::-1])


def test_an_odd_step_for_a_16_bit_image_is_read_unaligned(types, header):
    mono16 = np.array([[1, 2, 3], [40000, 50000, 65535]], dtype="<u2")
    step = 3 * 2 + 1
    padded = np.zeros((2, step), dtype=np.uint8)
    padded[:, :6] = mono16.view(np.uint8).reshape(2, 6)
    msg = raw_image(types, header, padded.tobytes(), 2, 3, "16UC1", step)
    np.testing.assert_array_equal(image_msg_to_array(msg), mono16)


def test_big_endian_mono16_is_byte_swapped(types, header):
    values = np.array([[1, 256, 65535], [4660, 0, 12345]], dtype=np.uint16)
    msg = raw_image(types, header, values.astype(">u2").tobytes(), 2, 3, "mono16", 6, is_bigendian=1)
    np.testing.assert_array_equal(image_msg_to_array(msg), values)
    np.testing.assert_array_equal(image_msg_to_rgb(msg)[..., 1], np.rint(values / 257.0).astype(np.uint8))


def test_big_endian_32fc1_depth_is_byte_swapped(types, header):
    depth = np.array([[0.5, 12.25]], dtype=np.float32)
    msg = raw_image(types, header, depth.astype(">f4").tobytes(), 1, 2, "32FC1", 8, is_bigendian=1)
    np.testing.assert_array_equal(image_msg_to_depth_m(msg), depth)


# ----------------------------------------------------------------------------------------------
# Malformed input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (dict(encoding="yuv422"), "Image.encoding 'yuv422' is not supported"),
        (dict(encoding="32FC1"), "Image.encoding '32FC1' is not supported"),
        (dict(step=11), "Image.step 11 is smaller than width 4 x 3 bytes per pixel (12)"),
        (dict(nbytes=35), "Image.data has 35 bytes, expected step x height = 12 x 3 = 36"),
        (dict(nbytes=37), "Image.data has 37 bytes, expected step x height = 12 x 3 = 36"),
        (dict(width=0, nbytes=0, step=0), "Image is empty: height 3, width 0"),
        (dict(height=0, nbytes=0), "Image is empty: height 0, width 4"),
    ],
)
def test_malformed_images_raise_message_error_naming_the_field(types, header, fields, expected):
    values = dict(height=3, width=4, encoding="rgb8", step=12, nbytes=36) | fields
    msg = raw_image(
        types, header, bytes(values["nbytes"]), values["height"], values["width"], values["encoding"], values["step"]
    )
    with pytest.raises(MessageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        image_msg_to_rgb(msg)


def test_message_error_is_a_value_error():
    assert issubclass(MessageError, ValueError)


@pytest.mark.parametrize(
    ("array", "encoding", "expected"),
    [
        (np.zeros((2, 2), np.float64), "32FC1", "must have dtype float32, got float64"),
        (np.zeros((2, 2, 3), np.float32), "32FC1", r"must have shape \[H,W\], got \(2, 2, 3\)"),
        (np.zeros((2, 2), np.float32), "32FC3", r"must have shape \[H,W,3\], got \(2, 2\)"),
        (np.zeros((2, 2, 4), np.uint8), "rgb8", r"must have shape \[H,W,3\]"),
        (np.zeros((0, 2, 3), np.uint8), "rgb8", r"must have shape \[H,W,3\], got \(0, 2, 3\)"),
        (np.zeros((2, 2), np.uint8), "8UC1", "encoding must be one of"),
    ],
)
def test_build_image_rejects_arrays_that_do_not_fit_the_encoding(types, header, array, encoding, expected):
    with pytest.raises(ValueError, match=expected):
        build_image(types, header, array, encoding)


def test_a_one_channel_image_may_carry_a_trailing_axis(types, header):
    depth = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    np.testing.assert_array_equal(image_msg_to_array(build_image(types, header, depth, "32FC1")), depth[..., 0])


# ----------------------------------------------------------------------------------------------
# Depth (REP-118)
# ----------------------------------------------------------------------------------------------
def test_32fc1_depth_marks_nan_inf_and_non_positive_values_invalid(types, header):
    depth = np.array([[2.5, np.nan, np.inf], [-np.inf, 0.0, -1.0]], dtype=np.float32)
    out = image_msg_to_depth_m(build_image(types, header, depth, "32FC1"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2.5, np.nan, np.nan], [np.nan, np.nan, np.nan]])


def test_16uc1_depth_is_millimetres_with_zero_invalid(types, header):
    mm = np.array([[0, 1500], [65535, 1]], dtype=np.uint16)
    out = image_msg_to_depth_m(build_image(types, header, mm, "16UC1"))
    np.testing.assert_allclose(out, [[np.nan, 1.5], [65.535, 0.001]], rtol=1e-6)


def test_depth_rejects_colour_encodings(types, header):
    with pytest.raises(MessageError, match="Image.encoding 'rgb8' is not supported here .*32FC1, 16UC1"):
        image_msg_to_depth_m(build_image(types, header, sample("rgb8"), "rgb8"))


def test_metres_convert_to_millimetres_with_zero_for_invalid():
    depth = np.array([[1.5, np.nan, -2.0], [0.0004, np.inf, 70.0]], dtype=np.float32)
    mm = depth_m_to_mm(depth)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[1500, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(depth_m_to_mm(np.array([0.0006, 65.535, 1.2344])), [1, 65535, 1234])


# ----------------------------------------------------------------------------------------------
# CompressedImage
# ----------------------------------------------------------------------------------------------
def smooth_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth gradient, so JPEG round trips stay within a few grey levels."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 5, yy * 7, 255 - xx * 4], axis=-1).clip(0, 255).astype(np.uint8)


def compressed(types, header, data: bytes | np.ndarray, fmt: str):
    payload = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    return types.CompressedImage(header=header, format=fmt, data=types.pack_data(payload))


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8", "PNG", ""])
def test_png_compressed_images_decode_exactly_to_rgb(types, header, fmt):
    rgb = smooth_rgb()
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1])  # the transport compresses bgr8
    assert ok
    np.testing.assert_array_equal(compressed_msg_to_rgb(compressed(types, header, encoded, fmt)), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "jpg"])
def test_jpeg_compressed_images_decode_close_to_rgb(types, header, fmt):
    rgb = smooth_rgb()
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = compressed_msg_to_rgb(compressed(types, header, encoded, fmt))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    # Channel order: the red ramp grows along x, the blue one falls.
    assert out[16, 40, 0] > out[16, 5, 0] and out[16, 40, 2] < out[16, 5, 2]


def test_grey_and_16_bit_pngs_become_rgb(types, header):
    grey16 = np.array([[0, 257 * 10], [65535, 257 * 200]], dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", grey16)
    out = compressed_msg_to_rgb(compressed(types, header, encoded, "mono16; png compressed mono16"))
    np.testing.assert_array_equal(out, np.repeat(np.array([[0, 10], [255, 200]], np.uint8)[..., None], 3, axis=2))


def test_build_compressed_image_writes_the_transport_format(types, header):
    rgb = smooth_rgb()
    msg = build_compressed_image(types, header, rgb, codec="png")
    assert msg.format == "rgb8; png compressed bgr8"
    assert header_stamp_ns(msg.header) == STAMP_NS
    np.testing.assert_array_equal(compressed_msg_to_rgb(msg), rgb)
    jpeg = build_compressed_image(types, header, rgb, codec="jpeg", jpeg_quality=95)
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(compressed_msg_to_rgb(jpeg).astype(int) - rgb).mean() < 3.0


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        (
            b"\xff\xd8\xff\xe0 this is not a jpeg",
            "jpeg",
            r"CompressedImage.data \(23 bytes, format 'jpeg'\) cannot be decoded",
        ),
        (b"garbage", "png", r"CompressedImage.data \(7 bytes, format 'png'\) cannot be decoded"),
        (b"", "jpeg", "CompressedImage.data is empty"),
        (b"\x89PNG", "tiff", "CompressedImage.format 'tiff' is not supported"),
        (b"\x00" * 16, "16UC1; compressedDepth png", "is a compressedDepth stream"),
    ],
)
def test_bad_compressed_images_raise_message_error(types, header, data, fmt, expected):
    with pytest.raises(MessageError, match=expected):
        compressed_msg_to_rgb(compressed(types, header, data, fmt))


def test_a_truncated_png_raises_message_error(types, header):
    ok, encoded = cv2.imencode(".png", smooth_rgb())
    truncated = encoded[: encoded.size // 2]
    with pytest.raises(MessageError, match=rf"CompressedImage.data \({truncated.size} bytes, format 'png'\) cannot"):
        compressed_msg_to_rgb(compressed(types, header, truncated, "png"))


def test_contiguous_and_strided_arrays_give_the_same_little_endian_bytes(types, header):
    """Contiguous arrays are copied straight into the field; strided ones are converted first."""
    normals = np.random.default_rng(5).normal(size=(6, 8, 3)).astype(np.float32)
    normals[1, 2] = np.nan
    expected = normals.astype("<f4").tobytes()
    wide = np.zeros((6, 16, 3), np.float32)
    wide[:, ::2] = normals
    for array in (normals, wide[:, ::2]):
        msg = build_image(types, header, array, "32FC3")
        assert data_as_uint8(msg.data).tobytes() == expected
        assert not np.shares_memory(data_as_uint8(msg.data), normals)
        if types.name == "rclpy":
            import array as array_module

            assert isinstance(msg.data, array_module.array)
