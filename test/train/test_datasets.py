"""Training-set readers on small fixture folders in the public layouts, built in tmp_path."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lotus2_ros.train.data import BatchStream, DataSource, open_source
from lotus2_ros.train.datasets import (
    FolderDataset,
    FramePolicy,
    HypersimDataset,
    InvalidSample,
    SyntheticDataset,
    VirtualKitti2Dataset,
    hypersim_distance_to_depth,
)

H, W = 24, 32


def _rgb(seed=0, h=H, w=W):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


# ----------------------------------------------------------------------------- Hypersim
@pytest.fixture()
def hypersim_root(tmp_path):
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "hypersim"
    focal = 886.81 * W / 1024
    x = np.arange(W) - (W - 1) / 2
    y = np.arange(H) - (H - 1) / 2
    ray = np.sqrt(x[None] ** 2 + y[:, None] ** 2 + focal**2)
    rows = ["scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name"]
    frames = {  # frame id: (split, public, has NaN, normal z in Hypersim's camera frame)
        0: ("train", True, False, 1.0), 1: ("train", True, False, -1.0), 2: ("train", True, True, 1.0),
        3: ("val", True, False, 1.0), 4: ("train", False, False, 1.0), 5: ("train", True, False, 1.0),
    }
    for fid, (split, public, nan, nz) in frames.items():
        rows.append(f"ai_001_001,cam_00,{fid},{public},,{split}")
        if fid == 5:
            continue  # listed but never downloaded: incomplete
        images = root / "ai_001_001" / "images"
        _write_rgb(images / "scene_cam_00_final_preview" / f"frame.{fid:04d}.tonemap.jpg", _rgb(fid))
        geo = images / "scene_cam_00_geometry_hdf5"
        geo.mkdir(parents=True, exist_ok=True)
        distance = (2.0 * ray / focal).astype(np.float16)  # a wall 2 m in front
        if nan:
            distance[3, 4] = np.nan
        with h5py.File(geo / f"frame.{fid:04d}.depth_meters.hdf5", "w") as f:
            f.create_dataset("dataset", data=distance)
        normal = np.zeros((H, W, 3), np.float16)
        normal[..., 2] = nz  # +z is toward the viewer in Hypersim's camera frame
        with h5py.File(geo / f"frame.{fid:04d}.normal_cam.hdf5", "w") as f:
            f.create_dataset("dataset", data=normal)
    (root / "metadata_images_split_scene_v1.csv").write_text("\n".join(rows) + "\n")
    return root


def test_hypersim_reads_the_official_split_and_skips_incomplete_frames(hypersim_root):
    train = HypersimDataset(hypersim_root, "train")
    assert [f[2] for f in train.frames] == [0, 1, 2]  # 4 is not public, 5 has no files
    assert [f[2] for f in HypersimDataset(hypersim_root, "val").frames] == [3]


def test_hypersim_converts_distance_to_z_depth_and_normals_to_the_optical_frame(hypersim_root):
    ds = HypersimDataset(hypersim_root, "train")
    s = ds.load(0)
    np.testing.assert_allclose(s.depth_m, 2.0, rtol=2e-3)  # float16 storage
    np.testing.assert_allclose(s.normals, np.broadcast_to([0, 0, -1.0], (H, W, 3)), atol=1e-6)
    assert s.rgb.shape == (H, W, 3) and s.K[0, 0] == pytest.approx(886.81 * W / 1024)
    # A normal stored facing away from the camera is turned towards it.
    np.testing.assert_allclose(ds.load(1).normals, np.broadcast_to([0, 0, -1.0], (H, W, 3)), atol=1e-6)


def test_hypersim_frames_with_nan_depth_are_rejected(hypersim_root):
    with pytest.raises(InvalidSample):
        HypersimDataset(hypersim_root, "train").load(2)


def test_hypersim_distance_to_depth_on_the_optical_axis_is_unchanged():
    d = np.full((3, 3), 5.0, np.float32)
    assert hypersim_distance_to_depth(d, focal_px=10.0)[1, 1] == pytest.approx(5.0)
    assert hypersim_distance_to_depth(d, focal_px=10.0)[0, 0] == pytest.approx(5.0 * 10 / np.sqrt(102))


# ----------------------------------------------------------------------------- Virtual KITTI 2
@pytest.fixture()
def vkitti_root(tmp_path):
    root = tmp_path / "vkitti2"
    for scene in ("Scene01", "Scene02"):
        for idx in (0, 1):
            _write_rgb(root / "vkitti_2.0.3_rgb" / scene / "clone" / "frames" / "rgb" / "Camera_0" / f"rgb_{idx:05d}.jpg",
                       _rgb(idx))
            depth = np.full((H, W), 500, np.uint16)  # 5 m
            depth[:4] = 65535  # sky at the top (655.35 m)
            depth[4:6] = 9000  # 90 m: beyond the far plane
            p = root / "vkitti_2.0.3_depth" / scene / "clone" / "frames" / "depth" / "Camera_0" / f"depth_{idx:05d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), depth)
        t = root / "vkitti_2.0.3_textgt" / scene / "clone" / "intrinsic.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n0 0 30.0 30.0 15.5 11.5\n1 0 30.0 30.0 15.5 11.5\n")
    return root


def test_vkitti_depth_in_metres_with_sky_beyond_the_far_plane(vkitti_root):
    ds = VirtualKitti2Dataset(vkitti_root, scenes=("Scene02",))
    assert len(ds) == 2
    s = ds.load(0)
    np.testing.assert_allclose(s.depth_m[10:], 5.0)
    assert s.sky[:6].all() and not s.sky[6:].any()
    assert np.isnan(s.depth_m[:6]).all()
    np.testing.assert_allclose(s.K, [[30, 0, 15.5], [0, 30, 11.5], [0, 0, 1]])
    # normals derived from depth: the 5 m wall faces the camera
    np.testing.assert_allclose(s.normals[12, 5:-5], np.broadcast_to([0, 0, -1.0], (W - 10, 3)), atol=1e-6)


def test_vkitti_heldout_is_scene01_and_uses_the_kitti_benchmark_crop_policy(vkitti_root):
    train = open_source(DataSource("vkitti2", vkitti_root, 1.0))
    held = open_source(DataSource("vkitti2", vkitti_root, 1.0), heldout=True)
    assert {f[0] for f in train.frames} == {"Scene02"} and {f[0] for f in held.frames} == {"Scene01"}
    assert train.policy.crop_mode == "kitti" and train.policy.crop_hw == (352, 1216)
    assert held.policy.flip_prob == 0.0


# ----------------------------------------------------------------------------- user folders
@pytest.fixture()
def folder_root(tmp_path):
    root = tmp_path / "mydata"
    _write_rgb(root / "rgb" / "a.png", _rgb(1))
    depth = np.full((H, W), 2500, np.uint16)  # 2.5 m
    depth[0, :] = 0  # no return
    (root / "depth").mkdir(parents=True)
    cv2.imwrite(str(root / "depth" / "a.png"), depth)
    _write_rgb(root / "rgb" / "b.jpg", _rgb(2))
    np.save(root / "depth" / "b.npy", np.full((H, W), 3.0, np.float32))
    colours = np.zeros((H, W, 3), np.uint8)
    colours[...] = (128, 128, 255)  # model convention: facing the viewer
    colours[0, 0] = 0
    (root / "normal").mkdir()
    cv2.imwrite(str(root / "normal" / "b.png"), colours[..., ::-1])
    _write_rgb(root / "rgb" / "unlabelled.png", _rgb(3))
    (root / "intrinsics.json").write_text(json.dumps({"fx": 30.0, "fy": 30.0, "cx": 15.5, "cy": 11.5}))
    return root


def test_folder_reads_millimetre_png_and_metre_npy_depth(folder_root):
    ds = FolderDataset(folder_root)
    assert ds.stems == ["a", "b"]  # an RGB image without labels is not a sample
    a, b = ds.load(0), ds.load(1)
    assert np.isnan(a.depth_m[0]).all()
    np.testing.assert_allclose(a.depth_m[1:], 2.5)
    np.testing.assert_allclose(b.depth_m, 3.0)


def test_folder_normals_from_colours_or_derived_from_depth_and_intrinsics(folder_root):
    ds = FolderDataset(folder_root)
    a, b = ds.load(0), ds.load(1)
    np.testing.assert_allclose(b.normals[1:, 1:], np.broadcast_to([0, 0, -1.0], (H - 1, W - 1, 3)), atol=0.01)
    assert np.isnan(b.normals[0, 0]).all()  # black = unknown
    np.testing.assert_allclose(a.normals[5, 5], [0, 0, -1.0], atol=1e-6)  # derived from the 2.5 m wall


def test_folder_without_rgb_folder_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="rgb/"):
        FolderDataset(tmp_path)


# ----------------------------------------------------------------------------- synthetic + stream
def test_synthetic_frames_are_deterministic_and_labelled():
    ds = SyntheticDataset(num_scenes=2, frames_per_scene=3, width_px=40, height_px=32)
    a, b = ds.load(4), SyntheticDataset(num_scenes=2, frames_per_scene=3, width_px=40, height_px=32).load(4)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    street = ds.load(3)  # scene 1 is a street: it has sky
    assert street.sky is not None and street.sky.any() and np.isnan(street.depth_m[street.sky]).all()


def test_batch_stream_is_counter_based_and_flips_normals_with_images(folder_root):
    ds = FolderDataset(folder_root, policy=FramePolicy(flip_prob=0.5))
    stream = BatchStream([ds], [1.0], batch_size=2, tasks=("depth", "normal"), seed=3)
    again = BatchStream([ds], [1.0], batch_size=2, tasks=("depth", "normal"), seed=3, start=5)
    b5 = stream.batch(5)
    for key in ("rgb", "depth", "normal", "depth_weight"):
        assert np.array_equal(b5[key].numpy(), next(iter(again))[key].numpy())
    assert b5["rgb"].shape == (2, 3, 16, 32)  # 24x32 centre-cropped to multiples of 16
    # Over many batches some frames are flipped; normal targets flip their x with the image.
    seen = set()
    for k in range(30):
        batch = stream.batch(k)
        for i in range(2):
            rgb = batch["rgb"][i].numpy()
            ref = (ds.load(0).rgb[4:20].astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)
            if np.allclose(rgb, ref):
                seen.add("plain")
            elif np.allclose(rgb, ref[:, :, ::-1]):
                seen.add("flipped")
    assert seen == {"plain", "flipped"}


def test_mixing_follows_the_probabilities(folder_root):
    a = FolderDataset(folder_root, policy=FramePolicy(flip_prob=0.0))
    b = SyntheticDataset(num_scenes=1, frames_per_scene=1, width_px=32, height_px=16)
    stream = BatchStream([a, b], [0.9, 0.1], batch_size=1, tasks=("depth",), seed=0)
    sources = [int(stream.batch(k)["source"]) for k in range(200)]
    assert 8 <= sources.count(1) <= 35  # ~10 % of 200


def test_data_source_parse():
    assert DataSource.parse("hypersim=/d/hs") == DataSource("hypersim", __import__("pathlib").Path("/d/hs"), 0.9)
    assert DataSource.parse("vkitti2=/d/vk@0.3").prob == 0.3
    assert DataSource.parse("synthetic").path is None
    with pytest.raises(ValueError, match="kind"):
        DataSource.parse("nyu=/x")
    with pytest.raises(ValueError, match="needs a folder"):
        DataSource.parse("folder")
    with pytest.raises(ValueError, match="probability"):
        DataSource.parse("synthetic@-1")
