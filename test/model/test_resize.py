"""The Lotus-2 resize policy and the image ⇄ tensor conversions (pure functions, no model)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lotus2_ros.model.resize import decoded_to_unit, images_to_tensor, processing_size, resize_bilinear


# ----------------------------------------------------------------------------- processing_size
@pytest.mark.parametrize(
    "hw, process_res, expected",
    [
        # long 640 <= 1024: no cap; short 480 = 30*16 already: unchanged
        ((480, 640), 1024, (480, 640)),
        # long 1242 > 1024: s = 1024/1242, h = int(375*s) = int(309.18) = 309, w = int(1024.0) = 1024;
        # short 309 -> 19*16 = 304, s = 304/309: h = 304, w = int(1024*304/309) = int(1007.43) = 1007 -> 992
        ((375, 1242), 1024, (304, 992)),
        # short 50 -> 3*16 = 48, s = 0.96: h = int(96.0) = 96, w = 48
        ((100, 50), 1024, (96, 48)),
        # short 17 -> 16, s = 16/17: both 16
        ((17, 17), 1024, (16, 16)),
        # long edge exactly 1024 is not capped; 768 = 48*16: unchanged
        ((768, 1024), 1024, (768, 1024)),
        # long 1025 > 1024: s = 1024/1025, h = int(769*s) = int(768.25) = 768, w = 1024; 768 = 48*16
        ((769, 1025), 1024, (768, 1024)),
        # no cap: short 769 -> 768, s = 768/769: w = int(1025*768/769) = int(1023.67) = 1023 -> 1008
        ((769, 1025), None, (768, 1008)),
        # no cap keeps a big image big: short 2000 = 125*16 (s = 1); 3000 is floored to 187*16 = 2992
        ((2000, 3000), None, (2000, 2992)),
        # default cap: s = 1024/3000, h = int(682.67) = 682, w = 1024; short 682 -> 42*16 = 672,
        # s = 672/682: w = int(1024*672/682) = int(1008.98) = 1008 (already a multiple of 16)
        ((2000, 3000), 1024, (672, 1008)),
        # portrait works the same way with the sides swapped
        ((1242, 375), 1024, (992, 304)),
        # cap 64: s = 64/200, h = int(20.48) = 20, w = int(64.0) = 64; short 20 -> 16, s = 0.8:
        # h = 16, w = int(51.2) = 51 -> 48
        ((64, 200), 64, (16, 48)),
    ],
)
def test_processing_size_follows_the_official_policy(hw, process_res, expected):
    assert processing_size(*hw, process_res=process_res) == expected


@pytest.mark.parametrize("hw", [(20, 30), (100, 50), (48, 64)])
def test_processing_size_never_upscales_a_small_image(hw):
    h, w = processing_size(*hw, process_res=512)
    assert h <= hw[0] and w <= hw[1]
    assert h % 16 == 0 and w % 16 == 0
    # 20x30: short 20 -> 16, s = 0.8, w = int(24.0) = 24 -> 16
    if hw == (20, 30):
        assert (h, w) == (16, 16)


def test_processing_size_default_cap_is_1024():
    assert processing_size(2000, 3000) == processing_size(2000, 3000, process_res=1024)


@pytest.mark.parametrize("hw", [(15, 100), (100, 15), (0, 0)])
def test_processing_size_rejects_images_smaller_than_16_px(hw):
    with pytest.raises(ValueError, match="too small"):
        processing_size(*hw)


@pytest.mark.parametrize("hw", [(16, 4000), (2000, 16)])
def test_processing_size_rejects_extreme_aspect_ratios(hw):
    # 16x4000: s = 1024/4000, h = int(4.096) = 4 -> short side 0 after flooring to a multiple of 16
    with pytest.raises(ValueError, match="aspect ratio"):
        processing_size(*hw)


def test_processing_size_rejects_a_cap_below_16_px():
    with pytest.raises(ValueError, match="process_res"):
        processing_size(100, 100, process_res=8)


# ----------------------------------------------------------------------------- images_to_tensor
def test_images_to_tensor_maps_uint8_to_minus_one_one_as_b3hw_float32():
    img = np.zeros((5, 7, 3), np.uint8)
    img[..., 0] = 255  # red
    img[1, 2] = (0, 51, 255)
    t = images_to_tensor(img)
    assert t.shape == (1, 3, 5, 7)
    assert t.dtype == torch.float32
    assert t[0, 0, 0, 0].item() == 1.0 and t[0, 1, 0, 0].item() == -1.0 and t[0, 2, 0, 0].item() == -1.0
    np.testing.assert_allclose(t[0, :, 1, 2].numpy(), [-1.0, 51 / 127.5 - 1.0, 1.0], atol=1e-7)
    assert t.min().item() >= -1.0 and t.max().item() <= 1.0


def test_images_to_tensor_keeps_the_batch_order():
    batch = np.stack([np.full((4, 6, 3), v, np.uint8) for v in (0, 255)])
    t = images_to_tensor(batch)
    assert t.shape == (2, 3, 4, 6)
    assert torch.all(t[0] == -1.0) and torch.all(t[1] == 1.0)


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((4, 4, 3), np.float32), "dtype"),
        (np.zeros((4, 4, 3), np.uint16), "dtype"),
        (np.zeros((4, 4), np.uint8), "shape"),
        (np.zeros((4, 4, 4), np.uint8), "shape"),
        (np.zeros((1, 1, 4, 4, 3), np.uint8), "shape"),
        ([[[0, 0, 0]]], "numpy array"),
    ],
)
def test_images_to_tensor_rejects_bad_input(images, match):
    with pytest.raises(ValueError, match=match):
        images_to_tensor(images)


# ----------------------------------------------------------------------------- resize_bilinear
def test_resize_bilinear_is_the_identity_at_the_same_size():
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    assert resize_bilinear(x, (8, 12)) is x


@pytest.mark.parametrize("src_hw, dst_hw", [((7, 9), (13, 20)), ((20, 30), (8, 11))])
def test_resize_bilinear_matches_opencv_inter_linear(src_hw, dst_hw):
    rng = np.random.default_rng(1)
    img = rng.random((*src_hw, 3)).astype(np.float32)  # [H,W,3]
    ref = cv2.resize(img, dst_hw[::-1], interpolation=cv2.INTER_LINEAR)  # [h,w,3]
    got = resize_bilinear(torch.from_numpy(img).permute(2, 0, 1)[None], dst_hw)  # [1,3,h,w]
    assert got.shape == (1, 3, *dst_hw)
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), ref, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- decoded_to_unit
def test_decoded_to_unit_maps_to_zero_one_and_clamps():
    decoded = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0], dtype=torch.bfloat16)
    out = decoded_to_unit(decoded)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])


def _reference_images_to_tensor(images):
    """The direct torch form: permute to [B,3,H,W], convert, divide, subtract."""
    rgb = torch.from_numpy(np.ascontiguousarray(images if images.ndim == 4 else images[None]))
    return rgb.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0


@pytest.mark.parametrize("shape", [(5, 7, 3), (2, 33, 65, 3), (1, 480, 640, 3)])
def test_images_to_tensor_is_bit_identical_to_the_direct_torch_form(shape):
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    flat = images.reshape(-1)
    flat[: min(flat.size, 256)] = np.arange(min(flat.size, 256))  # every value at least once where it fits
    t = images_to_tensor(images)
    expected = _reference_images_to_tensor(images)
    assert t.dtype == expected.dtype and t.shape == expected.shape
    assert t.stride() == expected.stride()  # channels-last memory, as the model has always been fed
    assert torch.equal(t.view(torch.int32), expected.view(torch.int32))


def test_images_to_tensor_reads_a_strided_view():
    images = np.random.default_rng(1).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    view = images[::2, 1::3]
    assert torch.equal(images_to_tensor(view), _reference_images_to_tensor(np.ascontiguousarray(view)))


# ----------------------------------------------------------------------------- OpenCV on the CPU
@pytest.mark.parametrize("src_hw, dst_hw", [((720, 1280), (576, 1024)), ((1080, 1920), (576, 1024)),
                                            ((960, 1280), (768, 1024)), ((1200, 1600), (768, 1024))])
def test_preprocess_resizes_on_opencv_only_where_it_samples_where_torch_does(src_hw, dst_hw):
    from lotus2_ros.model.resize import _opencv_samples_as_torch, resize_for_model

    assert _opencv_samples_as_torch(src_hw[0], dst_hw[0]) and _opencv_samples_as_torch(src_hw[1], dst_hw[1])
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, *src_hw), dtype=np.float32) * 2 - 1)
    got = resize_for_model(x, 1024)
    want = torch.nn.functional.interpolate(x, size=dst_hw, mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, want, atol=3e-7, rtol=0)  # the same samples: arithmetic rounding only


@pytest.mark.parametrize("src_hw", [(375, 1242), (700, 1100), (72, 104)])
def test_preprocess_keeps_torch_where_the_sample_positions_would_differ(src_hw):
    from lotus2_ros.model.resize import capped_size, processing_size, resize_for_model

    x = torch.from_numpy(np.random.default_rng(1).random((1, 3, *src_hw), dtype=np.float32))
    want = x
    for size in (capped_size(*src_hw, 1024), processing_size(*src_hw, 1024)):
        if tuple(want.shape[-2:]) != size:
            want = torch.nn.functional.interpolate(want, size=size, mode="bilinear", align_corners=False)
    # Where a step may use OpenCV both sample alike, so the result is within a few ulp; where it
    # may not, torch runs: the official input, to the bit in the fully-torch cases.
    torch.testing.assert_close(resize_for_model(x, 1024), want, atol=3e-7, rtol=0)


def test_resize_bilinear_on_the_cpu_keeps_the_memory_format_and_the_batch():
    x = torch.from_numpy(np.random.default_rng(2).random((2, 3, 30, 40), dtype=np.float32))
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        got = resize_bilinear(t, (45, 61))
        want = torch.nn.functional.interpolate(t, size=(45, 61), mode="bilinear", align_corners=False)
        assert got.stride() == want.stride()
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # float32 vs double sample positions
