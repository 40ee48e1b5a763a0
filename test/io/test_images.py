"""Reading image files as uint8 RGB and expanding command-line inputs into image files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lotus2_ros.io.images import collect_images, read_rgb, write_rgb


def _rgb(h=4, w=5, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- read_rgb
def test_read_rgb_keeps_the_rgb_order_of_a_png_written_by_opencv(tmp_path):
    rgb = _rgb()
    rgb[0, 0] = (255, 0, 0)  # pure red: would read as blue if the BGR order leaked through
    path = tmp_path / "color.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))


def test_read_rgb_expands_grey_to_three_equal_channels(tmp_path):
    grey = _rgb()[..., 0]
    path = tmp_path / "grey.png"
    assert cv2.imwrite(str(path), grey)
    out = read_rgb(path)
    assert out.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_read_rgb_drops_the_alpha_channel(tmp_path):
    rgb = _rgb()
    alpha = np.linspace(0, 255, 20, dtype=np.uint8).reshape(4, 5)
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), np.dstack([rgb[..., ::-1], alpha]))  # BGRA
    np.testing.assert_array_equal(read_rgb(path), rgb)


def test_read_rgb_scales_16_bit_to_8_bit(tmp_path):
    rgb = _rgb()
    rgb[0, 0] = (0, 128, 255)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1].astype(np.uint16) * 257)  # v * 257 spans 0..65535
    out = read_rgb(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(out[0, 0], (0, 128, 255))


def test_read_rgb_rounds_16_bit_grey(tmp_path):
    grey16 = np.array([[0, 256, 32768, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), grey16)
    # v / 257 rounded: 0, 0.996 -> 1, 127.502 -> 128, 255
    np.testing.assert_array_equal(read_rgb(path)[0, :, 0], [0, 1, 128, 255])


def test_read_rgb_rejects_float_images_naming_the_file(tmp_path):
    path = tmp_path / "float.tiff"
    assert cv2.imwrite(str(path), np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ValueError, match="unsupported image dtype float32.*float.tiff"):
        read_rgb(path)


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_read_rgb_on_an_unreadable_file_names_it(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        read_rgb(path)


def test_read_rgb_on_a_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="missing.png"):
        read_rgb(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- write_rgb
def test_write_rgb_then_read_rgb_round_trips(tmp_path):
    rgb = _rgb(seed=3)
    write_rgb(tmp_path / "out.png", rgb)
    np.testing.assert_array_equal(read_rgb(tmp_path / "out.png"), rgb)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.png"))[..., ::-1], rgb)  # stored as BGR


def test_write_rgb_into_a_missing_folder_raises_naming_the_file(tmp_path):
    with pytest.raises(OSError, match="cannot write image .*out.png"):
        write_rgb(tmp_path / "no_such_folder" / "out.png", _rgb())


# ----------------------------------------------------------------------------- collect_images
def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"")


def test_collect_images_lists_a_folder_sorted_and_skips_non_images(tmp_path):
    _touch(tmp_path, "b.png", "a.jpg", "c.JPEG", "notes.txt", "d.npy", "e.webp")
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub", "f.png")  # not recursive
    (tmp_path / "g.png").mkdir()  # a folder with an image suffix is no image
    assert collect_images([tmp_path]) == [tmp_path / n for n in ("a.jpg", "b.png", "c.JPEG", "e.webp")]


def test_collect_images_keeps_explicit_files_in_the_given_order(tmp_path):
    _touch(tmp_path, "z.png", "y.png")
    (tmp_path / "dir").mkdir()
    _touch(tmp_path / "dir", "b.png", "a.png")
    got = collect_images([tmp_path / "z.png", tmp_path / "dir", tmp_path / "y.png"])
    assert got == [tmp_path / "z.png", tmp_path / "dir" / "a.png", tmp_path / "dir" / "b.png", tmp_path / "y.png"]


def test_collect_images_on_a_missing_input_names_it(tmp_path):
    _touch(tmp_path, "a.png")
    with pytest.raises(FileNotFoundError, match="input not found: .*nothing_here"):
        collect_images([tmp_path / "a.png", tmp_path / "nothing_here"])


def test_collect_images_without_any_image_raises(tmp_path):
    _touch(tmp_path, "notes.txt")
    with pytest.raises(ValueError, match="no images found"):
        collect_images([tmp_path])


def test_collect_images_rejects_two_inputs_with_the_same_stem(tmp_path):
    (tmp_path / "left").mkdir()
    (tmp_path / "right").mkdir()
    _touch(tmp_path / "left", "frame.png")
    _touch(tmp_path / "right", "frame.jpg")
    with pytest.raises(ValueError, match="share the name stem 'frame'"):
        collect_images([tmp_path / "left", tmp_path / "right"])
    _touch(tmp_path, "x.png", "x.jpg")  # also within one folder
    with pytest.raises(ValueError, match="'x'"):
        collect_images([tmp_path / "x.png", tmp_path / "x.jpg"])
