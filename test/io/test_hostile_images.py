"""Images that try to hurt the converters: decompression bombs, tiny images, noisy decoders (#13.7, #13.8)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hostile_messages import peak_rss_mib, peak_rss_reset, png_bomb

from lotus2_ros.io import build_header
from lotus2_ros.io.errors import MessageError
from lotus2_ros.io.image_msgs import (
    build_image,
    check_image_msg,
    compressed_image_size,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
)


def compressed(types, data: bytes, fmt: str = "png"):
    header = build_header(types, 1, "cam")
    return types.CompressedImage(header=header, format=fmt,
                                 data=types.pack_data(np.frombuffer(bytes(data), np.uint8).copy()))


def test_a_png_bomb_is_refused_by_its_declared_size_before_it_is_decoded(types):
    bomb = png_bomb()
    assert len(bomb) < 400_000  # a 389 KB file ...
    assert compressed_image_size(bomb) == (20000, 20000)  # ... that declares 400 M pixels
    if not peak_rss_reset():
        pytest.skip("cannot reset the peak RSS here")
    before = peak_rss_mib()
    with pytest.raises(MessageError, match="20000x20000") as err:
        compressed_msg_to_rgb(compressed(types, bomb), max_pixels=4096 * 4096)
    assert err.value.reason == "too_large"
    assert peak_rss_mib() - before < 50  # decoding it would take 400 MB grey, 1.2 GB RGB


@pytest.mark.parametrize("codec,size", [(".png", (37, 21)), (".jpg", (40, 17))])
def test_the_declared_size_of_real_png_and_jpeg_streams_is_read_from_the_header(codec, size):
    ok, encoded = cv2.imencode(codec, np.zeros((size[1], size[0], 3), np.uint8))
    assert ok and compressed_image_size(encoded.tobytes()) == size


@pytest.mark.parametrize("data", [b"BM\x00\x00 a bitmap", b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8\xff\xd9",
                                  b"\xff\xd8\xff\xe0\x00\x01"])
def test_streams_that_name_no_size_are_refused_without_decoding(types, data):
    with pytest.raises(MessageError, match="cannot be decoded"):
        compressed_msg_to_rgb(compressed(types, data, ""))


def test_images_under_16_px_are_refused_as_too_small(types):
    header = build_header(types, 1, "cam")
    msg = build_image(types, header, np.zeros((8, 40, 3), np.uint8), "rgb8")
    with pytest.raises(MessageError, match="at least 16 px") as err:
        check_image_msg(msg, min_side_px=16)
    assert err.value.reason == "too_small"
    ok, png = cv2.imencode(".png", np.zeros((40, 12, 3), np.uint8))
    with pytest.raises(MessageError) as err:
        compressed_msg_to_rgb(compressed(types, png.tobytes()), min_side_px=16)
    assert err.value.reason == "too_small"
    assert image_msg_to_rgb(msg).shape == (8, 40, 3)  # the converter alone has no minimum


def test_what_libpng_prints_about_a_corrupt_stream_goes_into_the_error_not_to_stderr(types, capfd):
    ok, png = cv2.imencode(".png", (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    corrupt = bytearray(png.tobytes())
    corrupt[60:80] = b"garbage-garbage-garb"  # inside IDAT: zlib's check fails in libpng
    with pytest.raises(MessageError) as err:
        compressed_msg_to_rgb(compressed(types, bytes(corrupt)))
    out, errtext = capfd.readouterr()
    assert "libpng" not in errtext and "libpng" not in out
    assert "libpng error" in str(err.value)
