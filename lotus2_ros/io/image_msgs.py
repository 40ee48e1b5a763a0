"""``sensor_msgs/Image`` and ``CompressedImage`` ⇄ numpy, duck-typed (rclpy or rosbags messages).

Incoming messages are validated (encoding, size, ``step``, data length) and always converted to
new arrays that own their memory, never views of the message buffer. Row padding (``step``
larger than ``width`` x bytes per pixel) and ``is_bigendian`` for multi-byte encodings are
honoured. Outgoing images are little-endian with unpadded rows.

Depth follows REP-118: ``32FC1`` metres with NaN invalid, ``16UC1`` millimetres with 0 invalid.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .errors import MessageError
from .msg_types import MessageTypes, data_as_uint8
from .stamps import copy_header

__all__ = [
    "DEPTH_ENCODINGS",
    "IMAGE_ENCODINGS",
    "RGB_ENCODINGS",
    "build_compressed_image",
    "build_image",
    "check_image_msg",
    "compressed_image_size",
    "compressed_msg_to_rgb",
    "depth_m_to_mm",
    "image_msg_to_array",
    "image_msg_to_depth_m",
    "image_msg_to_rgb",
]

#: Encodings this module reads and writes: name -> (element dtype, channels).
IMAGE_ENCODINGS: Mapping[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32FC3": (np.dtype(np.float32), 3),
}
#: Encodings :func:`image_msg_to_rgb` accepts (camera images).
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
#: Encodings :func:`image_msg_to_depth_m` accepts (REP-118 depth).
DEPTH_ENCODINGS = ("32FC1", "16UC1")

_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}
_MM_PER_M = 1000.0
_U16_MAX = np.iinfo(np.uint16).max


# --------------------------------------------------------------------------------------------
# Incoming sensor_msgs/Image
# --------------------------------------------------------------------------------------------
def check_image_size(width: int, height: int, max_pixels: int | None = None, min_side_px: int = 1,
                     what: str = "Image") -> None:
    """Reject an image by its declared size, before any pixel is read or decoded.

    Raises:
        MessageError: Empty (reason None), a side below ``min_side_px`` (``"too_small"``) or more
            than ``max_pixels`` pixels (``"too_large"``).
    """
    if height <= 0 or width <= 0:
        raise MessageError(f"{what} is empty: height {height}, width {width}")
    if width < min_side_px or height < min_side_px:
        raise MessageError(f"{what} is {width}x{height}: both sides must be at least {min_side_px} px",
                           reason="too_small")
    if max_pixels is not None and width * height > max_pixels:
        raise MessageError(f"{what} is {width}x{height} = {width * height} pixels, more than the "
                           f"{max_pixels} allowed (max_image_px)", reason="too_large")


def check_image_msg(msg: Any, accepted: tuple[str, ...] | Mapping[str, Any] = IMAGE_ENCODINGS,
                    max_pixels: int | None = None, min_side_px: int = 1) -> None:
    """The checks of :func:`image_msg_to_rgb` and friends without reading a pixel (O(1)).

    Raises:
        MessageError: As the converters do, plus the size limits of :func:`check_image_size`.
    """
    _image_view(msg, accepted, max_pixels, min_side_px)


def _image_view(msg: Any, accepted: tuple[str, ...] | Mapping[str, Any], max_pixels: int | None = None,
                min_side_px: int = 1) -> tuple[np.ndarray, str]:
    """Validates an Image and returns a strided view of its pixels (message byte order).

    Returns:
        ``(view, encoding)``; ``view`` is ``[H,W]`` for one channel, else ``[H,W,C]``, may be
        read-only, unaligned and non-native byte order.
    """
    encoding = str(msg.encoding)
    if encoding not in accepted:
        raise MessageError(
            f"Image.encoding {encoding!r} is not supported here (supported: {', '.join(accepted)})"
        )
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_image_size(width, height, max_pixels, min_side_px)
    pixel_bytes = dtype.itemsize * channels
    if step < width * pixel_bytes:
        raise MessageError(
            f"Image.step {step} is smaller than width {width} x {pixel_bytes} bytes per pixel "
            f"({width * pixel_bytes}) for encoding {encoding!r}"
        )
    data = data_as_uint8(msg.data)
    if data.size != step * height:
        raise MessageError(
            f"Image.data has {data.size} bytes, expected step x height = {step} x {height} "
            f"= {step * height}"
        )
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    if channels == 1:
        shape, strides = (height, width), (step, pixel_bytes)
    else:
        shape, strides = (height, width, channels), (step, pixel_bytes, dtype.itemsize)
    return np.ndarray(shape, dtype=dtype, buffer=data, strides=strides), encoding


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Pixels of an Image in the encoding's own type and channel order, as a new array.

    Args:
        msg: ``sensor_msgs/Image`` with an encoding from :data:`IMAGE_ENCODINGS`.

    Returns:
        ``[H,W]`` for one-channel encodings, else ``[H,W,C]``; dtype uint8, uint16 or float32 in
        native byte order; values unchanged (no colour or unit conversion).

    Raises:
        MessageError: Unsupported encoding, empty image, ``step`` too small, or data length
            different from ``step x height``.
    """
    view, _ = _image_view(msg, IMAGE_ENCODINGS)
    return np.array(view, dtype=view.dtype.newbyteorder("="), order="C")


def image_msg_to_rgb(msg: Any, max_pixels: int | None = None, min_side_px: int = 1) -> np.ndarray:
    """A camera Image as ``uint8`` RGB, the input of the pipeline.

    ``rgba8``/``bgra8`` drop alpha; ``mono8`` is replicated to three channels; ``mono16`` is
    mapped linearly from the full 16-bit range, ``round(v / 257)`` (65535 -> 255, no
    auto-contrast: the same mapping as :func:`lotus2_ros.io.images.read_rgb` for 16-bit files).

    Args:
        msg: ``sensor_msgs/Image``, encoding in :data:`RGB_ENCODINGS`.

    Returns:
        ``[H,W,3]`` uint8 RGB, a new C-contiguous array.

    Raises:
        MessageError: Unsupported encoding, empty image, ``step`` too small, or data length
            different from ``step x height``.
    """
    view, encoding = _image_view(msg, RGB_ENCODINGS, max_pixels, min_side_px)
    if encoding == "rgb8":
        return np.array(view, order="C")
    if encoding == "mono16":
        return _mono16_to_rgb(view)
    # cv2 reads strided (row-padded), read-only views directly and is ~20x faster than numpy
    # channel shuffles.
    return cv2.cvtColor(view, _TO_RGB[encoding])


def _mono16_to_rgb(mono16: np.ndarray) -> np.ndarray:
    native = np.asarray(mono16, dtype=np.uint16)
    return cv2.cvtColor(cv2.convertScaleAbs(native, alpha=1.0 / 257.0), cv2.COLOR_GRAY2RGB)


def image_msg_to_depth_m(msg: Any) -> np.ndarray:
    """A REP-118 depth Image (e.g. a sparse metric reference) as metres with NaN invalid.

    Args:
        msg: ``sensor_msgs/Image`` with encoding ``32FC1`` (metres; NaN, +-Inf and values <= 0
            are invalid) or ``16UC1`` (millimetres; 0 is invalid).

    Returns:
        ``[H,W]`` float32 z-depth in metres, NaN where invalid.

    Raises:
        MessageError: Another encoding, or a malformed image (as :func:`image_msg_to_array`).
    """
    view, encoding = _image_view(msg, DEPTH_ENCODINGS)
    if encoding == "16UC1":
        depth_m = view.astype(np.float32) * np.float32(1.0 / _MM_PER_M)
        depth_m[view == 0] = np.nan
        return depth_m
    depth_m = view.astype(np.float32)
    with np.errstate(invalid="ignore"):
        depth_m[~(np.isfinite(depth_m) & (depth_m > 0.0))] = np.nan
    return depth_m


def depth_m_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres (NaN invalid) to REP-118 ``16UC1`` millimetres (0 invalid), e.g. for 16-bit PNGs.

    Values are rounded to the nearest millimetre; NaN, Inf, values <= 0 and depths beyond
    65.535 m (not representable) become 0.

    Args:
        depth_m: ``[H,W]`` float depth, metres.

    Returns:
        ``[H,W]`` uint16 millimetres.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mm = np.rint(depth * _MM_PER_M)
        valid = np.isfinite(mm) & (mm > 0) & (mm <= _U16_MAX)
    return np.where(valid, mm, 0).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Incoming sensor_msgs/CompressedImage
# --------------------------------------------------------------------------------------------
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (they carry the image size); C4, C8 and CC are other segments.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01, 0xFF}


def compressed_image_size(data: Any) -> tuple[int, int]:
    """``(width, height)`` a PNG or JPEG stream declares, read from its header without decoding.

    Lets a decoder refuse a small file that expands to a huge image (a decompression bomb)
    before allocating it.

    Raises:
        MessageError: Neither a PNG nor a JPEG stream, or a header that ends or breaks before it
            names the size.
    """
    buf = data_as_uint8(data)
    head = buf[:8].tobytes()
    if head == _PNG_SIGNATURE:
        if buf.size < 24 or buf[12:16].tobytes() != b"IHDR":
            raise MessageError(f"CompressedImage.data ({buf.size} bytes) is a PNG without an IHDR header")
        width, height = struct.unpack(">II", buf[16:24].tobytes())
        return int(width), int(height)
    if head[:2] == b"\xff\xd8":
        i, n = 2, buf.size
        # Walk the marker segments up to the first start-of-frame; bounded by the data length.
        while i + 4 <= n:
            if buf[i] != 0xFF:
                raise MessageError(f"CompressedImage.data: JPEG marker expected at byte {i}")
            marker = int(buf[i + 1])
            if marker in _JPEG_STANDALONE:
                i += 1 if marker == 0xFF else 2  # fill bytes, RSTn, TEM
                continue
            length = int(buf[i + 2]) << 8 | int(buf[i + 3])
            if length < 2:
                raise MessageError(f"CompressedImage.data: JPEG segment of length {length} at byte {i}")
            if marker in _JPEG_SOF:
                if i + 9 > n or length < 7:
                    break
                height = int(buf[i + 5]) << 8 | int(buf[i + 6])
                width = int(buf[i + 7]) << 8 | int(buf[i + 8])
                return width, height
            if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
                break
            i += 2 + length
        raise MessageError(f"CompressedImage.data ({n} bytes) is a JPEG without a frame header (size)")
    raise MessageError(f"CompressedImage.data ({buf.size} bytes) is neither a PNG nor a JPEG stream")


class _CapturedStderr:
    """Holds file descriptor 2 while OpenCV decodes, so that what libpng/libjpeg print there
    (``libpng error: …``) becomes part of our error message instead of an unthrottled line.

    Decodes are serialised; text another thread wrote meanwhile is written back to the real
    stderr afterwards, so nothing is lost, only delayed by one decode.
    """

    _lock = threading.Lock()

    def __enter__(self) -> "_CapturedStderr":
        self._lock.acquire()
        self.text = ""
        try:
            self._file = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except OSError:  # no usable fd 2 (closed): decode without capturing
            self._saved = None
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._saved is not None:
                os.dup2(self._saved, 2)
                os.close(self._saved)
                self._file.seek(0)
                self.text = self._file.read().decode("utf-8", "replace").strip()
                self._file.close()
        finally:
            self._lock.release()

    def release(self) -> None:
        """Write what was captured back to stderr (it was not the decoder's)."""
        if self.text:
            os.write(2, (self.text + "\n").encode())


def _decode(buf: np.ndarray, fmt: str) -> np.ndarray:
    with _CapturedStderr() as captured:
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        said = f": {captured.text}" if captured.text else ""
        raise MessageError(f"CompressedImage.data ({buf.size} bytes, format {fmt!r}) cannot be decoded{said}")
    captured.release()
    return decoded


def compressed_msg_to_rgb(msg: Any, max_pixels: int | None = None, min_side_px: int = 1) -> np.ndarray:
    """A JPEG or PNG ``CompressedImage`` as ``uint8`` RGB.

    ``format`` is read as ``image_transport`` writes it: ``"jpeg"``, ``"png"``, or
    ``"<raw encoding>; <jpeg|png> compressed <encoding>"`` (e.g. ``"rgb8; jpeg compressed
    bgr8"``); an empty format is decoded by content (PNG or JPEG only). The size the stream declares
    is checked before decoding (a small file can expand to gigabytes). The codec stores colour in file order and
    OpenCV returns BGR(A), so the result is RGB whatever the raw encoding was. Grey images are
    replicated to three channels, alpha is dropped and 16-bit PNGs map as ``mono16`` does in
    :func:`image_msg_to_rgb`.

    Args:
        msg: ``sensor_msgs/CompressedImage``.
        max_pixels: Largest ``width x height`` accepted, checked on the size the stream declares
            before decoding (None: no limit).
        min_side_px: Smallest side accepted.

    Raises:
        MessageError: Another codec (including ``compressedDepth``), empty or undecodable data,
            or a declared size out of the limits (reasons as :func:`check_image_size`).
    """
    fmt = str(msg.format)
    lowered = fmt.lower()
    if "compresseddepth" in lowered:
        raise MessageError(
            f"CompressedImage.format {fmt!r} is a compressedDepth stream (a depth codec), not a "
            "camera image"
        )
    if lowered.strip() and not any(codec in lowered for codec in ("jpeg", "jpg", "png")):
        raise MessageError(f"CompressedImage.format {fmt!r} is not supported (jpeg or png)")
    data = data_as_uint8(msg.data)
    if data.size == 0:
        raise MessageError(f"CompressedImage.data is empty (format {fmt!r})")
    try:
        width, height = compressed_image_size(data)
    except MessageError as err:
        raise MessageError(f"CompressedImage.data ({data.size} bytes, format {fmt!r}) cannot be decoded: "
                           f"{err}") from None
    check_image_size(width, height, max_pixels, min_side_px, what="CompressedImage")
    decoded = _decode(data, fmt)
    if decoded.dtype == np.uint16:
        decoded = cv2.convertScaleAbs(decoded, alpha=1.0 / 257.0)
    elif decoded.dtype != np.uint8:
        raise MessageError(f"CompressedImage.data decodes to unsupported pixel type {decoded.dtype}")
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# Outgoing
# --------------------------------------------------------------------------------------------
def build_image(types: MessageTypes, header: Any, array: np.ndarray, encoding: str) -> Any:
    """A ``sensor_msgs/Image`` holding a copy of ``array``.

    Typical outputs: ``32FC1`` depth in metres or relative disparity (NaN invalid), ``32FC3``
    unit normals, ``rgb8`` colourised images.

    Args:
        types: Message family to build with (:func:`~lotus2_ros.io.msg_types.rosbags_types` or
            ``lotus2_ros.ros.msg_types.rclpy_types()``).
        header: Header whose stamp and ``frame_id`` are copied (usually the input image's).
        array: ``[H,W]`` (or ``[H,W,1]``) for one-channel encodings, ``[H,W,C]`` otherwise, with
            exactly the encoding's dtype (float32 for ``32FC*``, uint8 for ``*8``, uint16 for
            ``mono16``/``16UC1``).
        encoding: One of :data:`IMAGE_ENCODINGS`.

    Returns:
        Little-endian Image with ``step = width x bytes per pixel``.

    Raises:
        ValueError: Unknown encoding, or ``array`` has the wrong dtype or shape for it.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(IMAGE_ENCODINGS)}, got {encoding!r}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(array)
    if arr.dtype != dtype:
        raise ValueError(
            f"array for encoding {encoding!r} must have dtype {dtype}, got {arr.dtype} "
            f"(convert explicitly, e.g. array.astype(np.{dtype}))"
        )
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels) or 0 in arr.shape:
        wanted = "[H,W]" if channels == 1 else f"[H,W,{channels}]"
        raise ValueError(f"array for encoding {encoding!r} must have shape {wanted}, got {arr.shape}")
    height, width = arr.shape[:2]
    # The message never aliases the caller's array. The usual array (C order, little-endian)
    # is copied once, straight into the field's storage; others are converted into a fresh
    # little-endian array first, which the field may then keep.
    le_dtype = dtype.newbyteorder("<")
    if arr.flags.c_contiguous and arr.dtype == le_dtype:
        data = types.copy_data(arr.view(np.uint8).reshape(-1))
    else:
        data = np.array(arr, dtype=le_dtype, order="C", copy=True).view(np.uint8).reshape(-1)
    return types.create(
        types.Image,
        header=copy_header(types, header),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * dtype.itemsize * channels,
        data=data,
    )


def build_compressed_image(
    types: MessageTypes, header: Any, rgb: np.ndarray, codec: str = "jpeg", jpeg_quality: int = 90
) -> Any:
    """A ``sensor_msgs/CompressedImage`` of an RGB image, as ``compressed_image_transport`` does.

    Args:
        types: Message family to build with.
        header: Header whose stamp and ``frame_id`` are copied.
        rgb: ``[H,W,3]`` uint8 RGB.
        codec: ``"jpeg"`` or ``"png"``.
        jpeg_quality: JPEG quality, 1-100.

    Returns:
        CompressedImage with ``format = "rgb8; <codec> compressed bgr8"``.

    Raises:
        ValueError: Bad ``rgb`` shape/dtype or codec.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ValueError(f"rgb must be uint8 [H,W,3], got {arr.dtype} {arr.shape}")
    if codec == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), params)
    elif codec == "png":
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
    else:
        raise ValueError(f"codec must be 'jpeg' or 'png', got {codec!r}")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} image as {codec}")
    return types.create(
        types.CompressedImage,
        header=copy_header(types, header),
        format=f"rgb8; {codec} compressed bgr8",
        data=encoded.reshape(-1),
    )
