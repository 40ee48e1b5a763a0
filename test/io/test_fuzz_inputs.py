"""Fuzz every input path of the node through the code the node runs (issue #13).

Images (raw and compressed), camera_info, LiDAR PointCloud2 and depth reference images, most of
them malformed in one of ~40 ways, go through :class:`~lotus2_ros.perception.intake.Intake` exactly
as ``perception_node`` hands them over (callback checks, then the worker's assembly) and every
assembled frame through :class:`~lotus2_ros.perception.pipeline.PerceptionPipeline` (rectification,
metric fit with LiDAR projection or the depth reference, products, messages). The model is a stub
backend with the real resize policy (the tiny model takes ~150 ms a frame; the model is not what
is fuzzed). Every message must end either rejected with a counted reason or processed; no
exception may escape, and the process's peak memory may not grow beyond a bound (decompression
bombs included).
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections import Counter
from typing import Iterator

import cv2
import numpy as np
import pytest
import torch
from hostile_messages import peak_rss_mib, peak_rss_reset, png_bomb

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io import build_camera_info, build_header, build_image
from lotus2_ros.io.pointcloud import build_pointcloud2
from lotus2_ros.model.backend import ModelBackend, ModelInfo
from lotus2_ros.model.engine import Lotus2Engine
from lotus2_ros.model.resize import images_to_tensor, resize_for_model
from lotus2_ros.model.spec import ModelSettings
from lotus2_ros.perception.config import PerceptionConfig
from lotus2_ros.perception.intake import Intake
from lotus2_ros.perception.messages import output_messages
from lotus2_ros.perception.pipeline import PerceptionPipeline
from lotus2_ros.perception.stats import NodeStats

MESSAGES_PER_PATH = 1800  # x 6 (camera_info feeds both harnesses): > 10,000 messages per run
PEAK_RSS_BOUND_MIB = 250


class StubBackend(ModelBackend):
    """Real pre-processing (resize policy), then cheap stand-ins for the networks (~1 ms a frame)."""

    def __init__(self):
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.info = ModelInfo(family="lotus2", settings=ModelSettings(("depth", "normal"), 64, 0),
                              depth_output="disparity", refinement=None, refine_tasks=(), source="stub")
        self.process_res = 64

    def preprocess(self, images):
        return resize_for_model(images_to_tensor(images, self.device), self.process_res)  # [B,3,h,w]

    def encode(self, rgb):
        return torch.nn.functional.avg_pool2d(rgb, 8)  # [B,3,h/8,w/8]

    def predict(self, cond, tasks, timer=None):
        return {t: cond * (1.0 if t == "depth" else -1.0) for t in tasks}

    def iter_refine(self, cond, latents, num_steps, timer=None):
        return iter(())

    def decode(self, latents, task=None):
        return torch.sigmoid(torch.nn.functional.interpolate(latents, scale_factor=8.0) * 3.0)  # [B,3,h,w]

    def to_depth(self, decoded, out_hw, out=None):
        return Lotus2Engine.to_disparity(decoded, out_hw, out)

    def to_normals(self, decoded, out_hw, out=None, colorized=None):
        return Lotus2Engine.to_normals(decoded, out_hw, out, colorized)


@pytest.fixture(scope="module")
def types():
    pytest.importorskip("sensor_msgs.msg", reason="the node's message classes (rclpy) are fuzzed")
    from lotus2_ros.ros.msg_types import rclpy_types

    return rclpy_types()


# ----------------------------------------------------------------------------- generators
class Fuzzer:
    """Malformed (and some valid) messages of every input kind, from one seeded generator."""

    ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "32FC1", "16UC1", "yuv422", "", "RGB8",
                 "8UC3", "bayer_rggb8", "rgb16"]

    def __init__(self, types, seed: int = 0):
        self.t, self.rng = types, np.random.default_rng(seed)
        self.stamp = 10**18

    def header(self, frame_id: str = "cam"):
        self.stamp += 33_000_000
        return build_header(self.t, self.stamp, frame_id)

    def size(self) -> tuple[int, int]:
        r = self.rng.random()
        if r < 0.55:
            return int(self.rng.integers(16, 49)), int(self.rng.integers(16, 41))
        if r < 0.7:
            return int(self.rng.integers(0, 16)), int(self.rng.integers(0, 16))  # too small / empty
        if r < 0.8:
            return int(self.rng.choice([2**31 - 1, 2**32 - 1, 65536, 20000])), int(self.rng.integers(1, 20000))
        return int(self.rng.integers(1, 64)), int(self.rng.integers(1, 64))

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    # --------------------------------------------------------------- raw images
    def image(self):
        t, rng = self.t, self.rng
        kind = self.pick(["valid", "valid", "encoding", "size", "step_short", "step_long", "data_short",
                          "data_long", "empty_data", "bigendian", "huge_declared", "unsupported_depth"])
        w, h = (int(rng.integers(16, 49)), int(rng.integers(16, 41))) if kind.startswith("valid") else self.size()
        enc = self.pick(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
        if kind == "encoding":
            enc = self.pick(self.ENCODINGS)
        if kind == "unsupported_depth":
            enc = self.pick(["32FC1", "16UC1", "32FC3"])
        bpp = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "32FC1": 4, "16UC1": 2,
               "32FC3": 12}.get(enc, 3)
        step = w * bpp
        if kind == "step_short":
            step = max(0, step - int(rng.integers(1, max(2, step + 1))))
        elif kind == "step_long":
            step += int(rng.integers(1, 64))
        n = step * h
        if kind == "data_short":
            n = max(0, n - int(rng.integers(1, max(2, n + 1))))
        elif kind == "data_long":
            n += int(rng.integers(1, 100))
        if kind == "empty_data" or n > 4_000_000:  # a huge declared size with little data behind it
            n = 0 if kind == "empty_data" else int(rng.integers(0, 5000))
        msg = t.Image(header=self.header(), height=h, width=w, encoding=enc,
                      is_bigendian=int(kind == "bigendian"), step=step)
        msg.data = t.pack_data(rng.integers(0, 256, n, dtype=np.uint8))
        return kind, msg

    # --------------------------------------------------------------- compressed images
    def compressed(self):
        t, rng = self.t, self.rng
        kind = self.pick(["valid_png", "valid_jpeg", "random", "truncated", "corrupt", "png_bomb_header",
                          "jpeg_bomb_header", "tiny", "format", "empty", "compressed_depth", "real_bomb",
                          "no_sof"])
        fmt = self.pick(["png", "jpeg", "rgb8; jpeg compressed bgr8", "", "PNG"])
        w, h = int(rng.integers(16, 49)), int(rng.integers(16, 41))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if kind in ("valid_png", "truncated", "corrupt", "tiny"):
            if kind == "tiny":
                rgb = rgb[: int(rng.integers(1, 16)), : int(rng.integers(1, 16))]
            data = cv2.imencode(".png", rgb)[1].tobytes()
        else:
            data = cv2.imencode(".jpg", rgb)[1].tobytes()
        if kind == "random":
            data = rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
        elif kind == "truncated":
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == "corrupt":
            b = bytearray(data)
            for _ in range(int(rng.integers(1, 20))):
                b[int(rng.integers(8, len(b)))] = int(rng.integers(0, 256))
            data = bytes(b)
        elif kind == "png_bomb_header":  # a tiny valid-looking PNG declaring a huge size
            ihdr = struct.pack(">IIBBBBB", int(rng.integers(5000, 2**31)), int(rng.integers(5000, 2**31)), 8, 2, 0, 0, 0)
            chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
            data = b"\x89PNG\r\n\x1a\n" + chunk + zlib.compress(b"\x00" * 1000)
        elif kind == "jpeg_bomb_header":
            sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65500, 65500, 1) + b"\x01\x11\x00"
            data = b"\xff\xd8" + sof + b"\xff\xda" + bytes(200)
        elif kind == "format":
            fmt = self.pick(["tiff", "bmp", "16UC1; compressedDepth", "webp", "raw"])
        elif kind == "empty":
            data = b""
        elif kind == "compressed_depth":
            fmt = "16UC1; compressedDepth png"
        elif kind == "real_bomb":
            data = png_bomb()
        elif kind == "no_sof":
            data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
        msg = t.CompressedImage(header=self.header(), format=fmt)
        msg.data = t.pack_data(np.frombuffer(data, np.uint8).copy())
        return kind, msg

    # --------------------------------------------------------------- camera_info
    def camera_info(self, w: int = 32, h: int = 24):
        t, rng = self.t, self.rng
        kind = self.pick(["valid", "valid_distorted", "nan_k", "inf_p", "zero_f", "d_length", "model", "size",
                          "roi", "binning", "r_not_rotation", "negative_f", "huge_d"])
        f = float(rng.uniform(10, 60))
        cam = PinholeCamera(w, h, f, f * float(rng.uniform(0.8, 1.2)), w / 2 + float(rng.normal()), h / 2,
                            D=tuple(rng.normal(0, 0.1, 5)) if kind == "valid_distorted" else (0.0,) * 5)
        msg = build_camera_info(t, self.header(), cam)
        k, p, d, r = list(msg.k), list(msg.p), list(msg.d), list(msg.r)
        if kind == "nan_k":
            k[int(rng.integers(9))] = math.nan
        elif kind == "inf_p":
            p[int(rng.integers(12))] = math.inf
        elif kind == "zero_f":
            k[0] = p[0] = 0.0
        elif kind == "negative_f":
            k[4] = p[5] = -f
        elif kind == "d_length":
            d = list(rng.normal(0, 0.1, int(self.pick([0, 1, 3, 4, 6, 8, 14]))))
        elif kind == "model":
            msg.distortion_model = self.pick(["equidistant", "rational_polynomial", "", "fisheye", "plumb_bob"])
            d = list(rng.normal(0, 0.1, int(self.pick([5, 8]))))
        elif kind == "size":
            msg.width, msg.height = self.size()
        elif kind == "roi":
            msg.roi.x_offset, msg.roi.width = int(rng.integers(0, 100)), int(rng.integers(0, 100))
            msg.roi.y_offset, msg.roi.height = int(rng.integers(0, 100)), int(rng.integers(0, 100))
        elif kind == "binning":
            msg.binning_x, msg.binning_y = int(rng.integers(0, 5)), int(rng.integers(0, 5))
        elif kind == "r_not_rotation":
            r = list(rng.normal(0, 1, 9))
        elif kind == "huge_d":
            d = [float(rng.choice([1e6, -1e6, 1e300])), 0.0, 0.0, 0.0, 0.0]
        msg.k, msg.p, msg.d, msg.r = (t.pack_float64(v) for v in (k, p, d, r))
        return kind, msg

    # --------------------------------------------------------------- LiDAR clouds
    def cloud(self):
        t, rng = self.t, self.rng
        kind = self.pick(["valid", "valid", "valid_noise", "empty", "nan", "missing_field", "int_fields",
                          "offset", "point_step", "row_step", "data_short", "bigendian", "huge_values",
                          "duplicate_fields"])
        n = int(rng.integers(0 if kind.startswith("valid") else 1, 400)) if kind != "empty" else 0
        pts = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(0.2, 30, n)].astype(np.float32)
        if kind == "valid_noise":
            pts[:, 2] = 5.0
        elif kind == "nan":
            pts[rng.random(n) < 0.5] = np.nan
        elif kind == "huge_values":
            pts *= np.float32(rng.choice([1e30, -1e30, 1e-30]))
        msg = build_pointcloud2(t, self.header("cam" if rng.random() < 0.7 else "lidar"),
                                (pts if n else np.zeros((1, 3), np.float32))[None])
        if n == 0:  # a sweep without points: width 0, no data
            msg.width, msg.row_step = 0, 0
            msg.data = t.pack_data(np.zeros(0, np.uint8))
        fields = list(msg.fields)
        if kind == "missing_field":
            drop = self.pick(["x", "y", "z"])
            fields = [f for f in fields if f.name != drop]
        elif kind == "int_fields":
            fields[0].datatype = int(self.pick([1, 2, 3, 4, 5, 6, 0, 9, 255]))
        elif kind == "offset":
            fields[int(rng.integers(len(fields)))].offset = int(rng.integers(msg.point_step - 3, 2**31))
        elif kind == "point_step":
            msg.point_step = int(self.pick([0, 1, 4, msg.point_step * 2]))
        elif kind == "row_step":
            msg.row_step = int(rng.integers(0, msg.row_step + 1)) if msg.row_step else 7
        elif kind == "data_short":
            data = bytes(msg.data)
            msg.data = t.pack_data(np.frombuffer(data[: int(rng.integers(0, max(1, len(data))))], np.uint8).copy())
        elif kind == "bigendian":
            msg.is_bigendian = True
        elif kind == "duplicate_fields":
            fields = fields + fields
        msg.fields = fields
        return kind, msg

    # --------------------------------------------------------------- depth reference images
    def depth_ref(self, w: int, h: int):
        t, rng = self.t, self.rng
        kind = self.pick(["valid_m", "valid_mm", "nan_inf", "negative", "size", "encoding", "data_short", "empty",
                          "all_invalid"])
        if kind == "valid_mm":
            depth = rng.integers(0, 20000, (h, w), dtype=np.uint16)
            return kind, build_image(t, self.header(), depth, "16UC1")
        depth = rng.uniform(0.3, 20, (h, w)).astype(np.float32)
        depth[rng.random((h, w)) < 0.7] = np.nan  # sparse
        if kind == "nan_inf":
            depth[rng.random((h, w)) < 0.2] = np.float32(self.pick([np.inf, -np.inf, np.nan]))
        elif kind == "negative":
            depth = -depth
        elif kind == "all_invalid":
            depth[:] = np.nan
        elif kind == "size":
            ww, hh = max(1, w + int(rng.integers(-10, 10))), max(1, h + int(rng.integers(-10, 10)))
            depth = rng.uniform(0.3, 20, (hh, ww)).astype(np.float32)
        msg = build_image(t, self.header(), depth, "32FC1")
        if kind == "encoding":
            msg.encoding = self.pick(["rgb8", "mono8", "32FC3", "64FC1", "16SC1"])
        elif kind == "data_short":
            msg.data = t.pack_data(np.frombuffer(bytes(msg.data)[:-4], np.uint8).copy())
        elif kind == "empty":
            msg.height = msg.width = msg.step = 0
            msg.data = t.pack_data(np.zeros(0, np.uint8))
        return kind, msg


# ----------------------------------------------------------------------------- the run
#: (path, kind) of messages that must always be rejected, and always accepted.
MUST_REJECT = {
    ("image", k) for k in ("step_short", "data_short", "data_long", "empty_data", "unsupported_depth")
} | {
    ("image/compressed", k) for k in ("random", "truncated", "png_bomb_header", "jpeg_bomb_header", "tiny",
                                      "format", "empty", "compressed_depth", "real_bomb", "no_sof")
} | {
    ("camera_info", k) for k in ("nan_k", "inf_p", "zero_f", "negative_f")
} | {
    ("lidar", k) for k in ("missing_field", "int_fields", "offset", "data_short")
} | {
    ("depth_ref", k) for k in ("encoding", "data_short", "empty")
}
MUST_ACCEPT = {("camera_info", "valid"), ("camera_info", "valid_distorted"), ("lidar", "valid"), ("lidar", "empty"),
               ("lidar", "nan"), ("depth_ref", "valid_m"), ("depth_ref", "valid_mm")}

COUNTED = ("bad_messages", "frames_without_camera_info", "frames_without_reference")


class Harness:
    """The node's intake and pipeline, with an outcome tally per input path and kind of message."""

    def __init__(self, types, config: PerceptionConfig):
        self.types = types
        self.stats = NodeStats()
        self.intake = Intake(config, self.stats)
        self.pipeline = PerceptionPipeline(config, StubBackend())
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.by_kind: dict[tuple[str, str], Counter] = {}
        self.processed = 0

    def _snapshot(self) -> Counter:
        return Counter(self.stats.counts)

    def _outcome(self, path: str, kind: str, before: Counter, accepted: bool) -> None:
        after = Counter(self.stats.counts)
        grown = {k: after[k] - before[k] for k in after if after[k] != before[k] and k.startswith(("bad_", "frames_"))}
        bad = grown.get("bad_messages", 0)
        assert bad <= 2, (path, kind, grown)  # the image and, at most, its unusable reference
        if not accepted:
            reasons = [k for k in grown if k not in ("bad_messages",)]
            assert reasons, f"{path}/{kind}: rejected without a counted reason ({grown})"
            outcome = "rejected:" + max(reasons, key=len)
        else:
            outcome = "processed" if path.startswith("image") else "accepted"
        self.outcomes[(path, outcome)] += 1
        self.by_kind.setdefault((path, kind), Counter())[outcome] += 1

    def image(self, path: str, kind: str, msg, compressed: bool) -> None:
        before = self._snapshot()
        try:
            ok = self.intake.check_image(msg, compressed)
            frame = self.intake.assemble(msg, compressed) if ok else None
            if frame is not None:
                out, _ = self.pipeline.process(frame)
                msgs = output_messages(self.types, out)
                assert msgs["disparity"].width == frame.rgb.shape[1]
                self.processed += 1
        except Exception as err:  # noqa: BLE001 - the assertion says what escaped
            raise AssertionError(f"{path}/{kind}: {type(err).__name__}: {err}") from err
        if ok and frame is None:
            assert any(self.stats.counts[k] > before[k] for k in COUNTED), f"{path}/{kind}: dropped uncounted"
        self._outcome(path, kind, before, frame is not None)

    def other(self, path: str, kind: str, msg, call) -> None:
        before = self._snapshot()
        try:
            ok = call(msg)
        except Exception as err:  # noqa: BLE001
            raise AssertionError(f"{path}/{kind}: {type(err).__name__}: {err}") from err
        self._outcome(path, kind, before, ok)


def drive(harness: Harness, fuzz: Fuzzer, n: int, paths: tuple[str, ...]) -> Iterator[None]:
    """Interleave the paths as a robot would: camera_info, references and images in turn."""
    for i in range(n):
        path = paths[i % len(paths)]
        if path == "camera_info":
            harness.other(path, *fuzz.camera_info(), call=harness.intake.camera_info)
            if fuzz.rng.random() < 0.5:  # often back to a valid camera, or few images would match
                w, h = int(fuzz.rng.integers(16, 49)), int(fuzz.rng.integers(16, 41))
                harness.intake.camera_info(build_camera_info(fuzz.t, fuzz.header(), PinholeCamera.from_fov(w, h, 60)))
        elif path == "lidar":
            harness.other(path, *fuzz.cloud(), call=harness.intake.reference)
        elif path == "depth_ref":
            cal = harness.intake.assembler.calibration
            w, h = (cal.width_px, cal.height_px) if cal is not None else (32, 24)
            harness.other(path, *fuzz.depth_ref(w, h), call=harness.intake.reference)
        else:
            kind, msg = fuzz.compressed() if path == "image/compressed" else fuzz.image()
            cal = harness.intake.assembler.calibration
            if cal is not None and kind.startswith("valid") and fuzz.rng.random() < 0.8 and cal.width_px * cal.height_px < 10**5:
                # Most valid images match the current camera, so that frames reach the pipeline.
                h, w = cal.height_px, cal.width_px
                rgb = fuzz.rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                if path == "image/compressed":
                    msg.data = fuzz.t.pack_data(cv2.imencode(".png", rgb)[1].reshape(-1))
                else:
                    msg = build_image(fuzz.t, msg.header, rgb, "rgb8")
            harness.image(path, kind, msg, compressed=path == "image/compressed")
        yield


def test_ten_thousand_malformed_messages_on_every_input_path_are_counted_or_processed(types, capsys):
    if not peak_rss_reset():
        pytest.skip("cannot reset the peak RSS here")
    png_bomb()  # built before the measurement
    baseline = peak_rss_mib()
    started = time.monotonic()
    base = dict(device="cpu", dtype="fp32", extrinsic_source="parameter", lidar_edge_window_px=2, fit_min_points=5)
    lidar = Harness(types, PerceptionConfig(metric_source="lidar", image_transport="raw", **base))
    depth = Harness(types, PerceptionConfig(metric_source="depth_image", image_transport="compressed", **base))
    fuzz = Fuzzer(types, seed=13)
    n = MESSAGES_PER_PATH
    for _ in drive(lidar, fuzz, 3 * n, ("camera_info", "lidar", "image")):
        pass
    for _ in drive(depth, fuzz, 3 * n, ("camera_info", "depth_ref", "image/compressed")):
        pass
    peak = peak_rss_mib() - baseline
    seconds = time.monotonic() - started

    outcomes = lidar.outcomes + depth.outcomes
    total = sum(outcomes.values())
    with capsys.disabled():
        print(f"\nfuzz: {total} messages in {seconds:.1f} s, {lidar.processed + depth.processed} frames through the "
              f"pipeline, peak RSS +{peak:.0f} MiB")
        for (path, outcome), count in sorted(outcomes.items()):
            print(f"  {path:17s} {outcome:45s} {count:5d}")
    assert total >= 10_000
    assert peak < PEAK_RSS_BOUND_MIB, f"peak RSS grew by {peak:.0f} MiB"
    by_path: dict[str, set[str]] = {}
    for path, outcome in outcomes:
        by_path.setdefault(path, set()).add(outcome)
    assert set(by_path) == {"image", "image/compressed", "camera_info", "lidar", "depth_ref"}
    for path, seen in by_path.items():  # every path both accepts and rejects, for several reasons
        assert any(not o.startswith("rejected") for o in seen), path
        assert any(o.startswith("rejected") for o in seen), (path, seen)
    assert lidar.processed >= 200 and depth.processed >= 200
    by_kind: dict[tuple[str, str], Counter] = {}
    for h in (lidar, depth):
        for key, counts in h.by_kind.items():
            by_kind.setdefault(key, Counter()).update(counts)
    for key in MUST_REJECT:
        assert key in by_kind and all(o.startswith("rejected") for o in by_kind[key]), (key, by_kind.get(key))
    for key in MUST_ACCEPT:
        assert key in by_kind and set(by_kind[key]) == {"accepted"}, (key, by_kind.get(key))
    assert outcomes[("image", "rejected:bad_image_too_small")] > 0
    assert outcomes[("image/compressed", "rejected:bad_image_too_large")] > 0
