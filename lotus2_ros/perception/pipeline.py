"""One camera frame in → geometry products out: the front door every front end goes through.

The node, the bag tool, ``lotus2 predict``, the demo, ``lotus2 evaluate`` and the trainer's
validation all run frames through :class:`PerceptionPipeline` and get a :class:`PerceptionOutput`;
only this module chains model stages (the backend's, :mod:`lotus2_ros.model.backend`).

:meth:`PerceptionPipeline.process` runs (rectify) → preprocess → encode → the per-frame
prediction of every task → decode → products, and returns the frame's latents so a refinement
can follow: :meth:`PerceptionPipeline.start_refinement` gives a :class:`Refinement` that advances
the backend's refinement (Lotus-2: the detail sharpener) **one network forward at a time**
(``step()``), so a scheduler can interleave it with new frames and never make one wait for more
than one step. :meth:`PerceptionPipeline.predict` does both for one image (the offline tools).
:func:`load_pipeline` loads the model a :class:`~.config.PerceptionConfig` names.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import cv2
import numpy as np
import torch

from ..geometry.calibration import CameraCalibration
from ..geometry.bands import row_bands, set_host_threads, submit
from ..geometry.camera import PinholeCamera
from ..geometry.camera_model import CameraModel, is_rectified_calibration
from ..geometry.rectify import Rectifier
from ..geometry.relative_alignment import AlignedPrediction, RelativeAligner, RelativeAlignmentConfig
from ..geometry.scale_fit import metric_depth_from_relative
from ..io.visualize import colorize_normals, colorize_relative
from ..model.backend import BackendConfig, ModelBackend, StageTimer, load_backend
from ..model.spec import ModelSettings, resolve_model_request
from .config import ConfigError, PerceptionConfig
from .device_products import colorize_disparity_tensor, colorize_normals_tensor, download
from .metric import MetricFitter, MetricReference, ScaleFitReport
from .outputs import base_output_topics

#: Stage names whose time is a network forward (everything else is pipeline overhead).
FORWARD_STAGES = ("encode", "core_", "lcm_", "sharpen_", "decode_")
#: The output topic namespace of each task's products.
_TASK_TOPIC = {"depth": "depth", "normal": "normals"}
#: A dummy frame id/stamp for single images (``predict``).
IMAGE_FRAME_ID = ""


@dataclass
class Frame:
    """One input image with what is known about it.

    Attributes:
        rgb: ``uint8`` ``[H,W,3]`` RGB.
        stamp_ns: Image stamp, int nanoseconds.
        frame_id: The image's optical frame.
        calibration: Raw camera model from camera_info (None if none has arrived).
        reference: Sparse metric data taken with the frame (LiDAR or a depth image), or None.
    """

    rgb: np.ndarray
    stamp_ns: int
    frame_id: str
    calibration: CameraCalibration | None = None
    reference: MetricReference | None = None


@dataclass
class PerceptionOutput:
    """Products for one frame, aligned with ``camera`` (the output resolution's intrinsics).

    The one result type of the package: every front end gets it (and turns it into messages or files).

    Attributes:
        stamp_ns, frame_id: Copied from the input frame (a refined output keeps its frame's stamp).
        refined: True for refinement results (Lotus-2 detail sharpener, Lotus-G seed ensemble).
        calibration: Calibration the outputs are aligned with, to publish as their camera_info: the
            input's (raw), the rectified camera's (``rectify`` or rectified input; with ``R`` and the
            full ``P``), scaled to the output resolution; None without camera_info.
        rgb: ``uint8`` ``[H,W,3]`` the (rectified) input at output resolution (cloud colours).
        disparity: ``float32`` ``[H,W]`` relative (affine-invariant) disparity in [0,1], larger =
            nearer — the depth output of disparity models (Lotus-2, Lotus-1 ``*-disparity``); else None.
            With ``relative_alignment`` it is on the scale of the sequence's first frame since the
            last reset (values may leave [0,1] slightly; see ``alignment``).
        relative_depth: ``float32`` ``[H,W]`` relative (affine-invariant) depth in [0,1], larger =
            farther — the depth output of depth models (Lotus-1 ``v1-0``); else None. Aligned as
            ``disparity`` is.
        depth_uncertainty: ``float32`` ``[H,W]`` per-pixel standard deviation of the relative depth
            output over a Lotus-G ensemble, in its units (NaN invalid); None otherwise.
        normals: ``float32`` ``[H,W,3]`` unit normals, ROS optical frame, NaN invalid; None if no normal task.
        depth_m: ``float32`` ``[H,W]`` metric depth in metres, NaN invalid; None without a metric reference.
        points_m: ``float32`` ``[H,W,3]`` metric points in the ``frame_id`` frame (the back-projection
            with :attr:`camera_model`, ``P``'s offset included), NaN invalid; None unless metric depth
            and a camera exist. Built on first access where they lie along the pixel rays
            (:attr:`point_rays`): a cloud message is written from the depth without them.
        scale_shift: ``(s, t)`` of ``depth_m = 1/(s·d + t)`` (disparity) or ``s·d + t`` (depth) when metric.
        alignment: With ``relative_alignment``: the scale and shift that put the relative output on
            the sequence's scale (it is already aligned; the model's own output is
            ``(value − shift) / scale``), and whether the running reference restarted here.
        scale_fit: The reference fit of this frame (LiDAR / depth image sources), for ``~/scale_fit``.
        depth_colorized, normals_colorized: ``uint8`` RGB images for viewers (None if disabled).
        process_hw: ``(height, width)`` in pixels the model ran at.
        refine_steps: Refinement (detail-sharpener) steps applied: 0 for the per-frame prediction.
        timings_ms: Stage wall times; forward stages are listed in :data:`FORWARD_STAGES`.
    """

    stamp_ns: int
    frame_id: str
    refined: bool
    calibration: CameraCalibration | None
    rgb: np.ndarray
    disparity: np.ndarray | None = None
    relative_depth: np.ndarray | None = None
    depth_uncertainty: np.ndarray | None = None
    normals: np.ndarray | None = None
    depth_m: np.ndarray | None = None
    scale_shift: tuple[float, float] | None = None
    scale_fit: ScaleFitReport | None = None
    alignment: AlignedPrediction | None = None
    depth_colorized: np.ndarray | None = None
    normals_colorized: np.ndarray | None = None
    process_hw: tuple[int, int] = (0, 0)
    refine_steps: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    _points_m: np.ndarray | None = field(default=None, repr=False)
    _point_rays: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def points_m(self) -> np.ndarray | None:
        """See the class attributes: ``[H,W,3]`` metric points, built on first access from :attr:`point_rays`."""
        if self._points_m is None and self._point_rays is not None and self.depth_m is not None:
            self._points_m = points_along_rays(*self._point_rays, self.depth_m)
        return self._points_m

    @points_m.setter
    def points_m(self, points: np.ndarray | None) -> None:
        self._points_m, self._point_rays = points, None

    @property
    def point_rays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ray_x, ray_y)``, ``[H,W]`` float32 each, when :attr:`points_m` is ``(ray_x·z, ray_y·z, z)``
        with ``z = depth_m`` (a plain pinhole model) and has not been built: cloud builders may
        write the points from the depth directly. None otherwise."""
        return self._point_rays if self._points_m is None and self.depth_m is not None else None

    @property
    def camera(self) -> PinholeCamera | None:
        """Intrinsics (and distortion, if raw) of the output images."""
        return self.calibration.camera if self.calibration is not None else None

    @property
    def relative(self) -> np.ndarray | None:
        """The relative depth output, whichever kind (:attr:`relative_kind`)."""
        return self.disparity if self.disparity is not None else self.relative_depth

    @property
    def relative_kind(self) -> str | None:
        """``"disparity"`` or ``"depth"`` (the space of :attr:`relative` and of the metric fit); None without depth."""
        if self.disparity is not None:
            return "disparity"
        return "depth" if self.relative_depth is not None else None

    @property
    def camera_model(self) -> CameraModel | None:
        """How points of the ``frame_id`` frame map to the output pixels: raw ``K`` + ``D``, or the
        full ``P`` after ``R`` (see :func:`aligned_input`); None without camera_info."""
        return CameraModel.from_calibration(self.calibration) if self.calibration is not None else None

    @property
    def overhead_ms(self) -> float:
        """Time spent outside network forwards."""
        return sum(v for k, v in self.timings_ms.items() if not k.startswith(FORWARD_STAGES))


@dataclass
class _FrameContext:
    """What a refinement needs from its frame's core pass."""

    frame: Frame
    rgb_out: np.ndarray
    calibration_out: CameraCalibration | None
    out_hw: tuple[int, int]
    process_hw: tuple[int, int]
    cond: Any
    coarse: dict[str, torch.Tensor]
    wanted: frozenset[str] | None


def _unit(v: np.ndarray) -> np.ndarray:
    """``[...,3]`` vectors scaled to unit length (float32; NaN where the length is zero or NaN)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, v / n, np.nan).astype(np.float32)


#: Key of :meth:`PerceptionPipeline._decode`'s output under which host normals still being made wait.
PENDING_NORMALS = "normal_pending"


def _done(fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` run now, as a done future (the form :func:`~lotus2_ros.geometry.bands.submit` gives)."""
    future: Future = Future()
    future.set_result(fn(*args))
    return future


@lru_cache(maxsize=8)
def _ray_planes(camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """The x and y components of ``camera.pixel_rays()`` as contiguous ``[H,W]`` planes (z is 1)."""
    rays = camera.pixel_rays()  # [H,W,3], z = 1
    return np.ascontiguousarray(rays[..., 0]), np.ascontiguousarray(rays[..., 1])


def _points_from_depth(camera: PinholeCamera, depth_m: np.ndarray) -> np.ndarray:
    """``pixel_rays() * depth_m[..., None]``: ``[H,W,3]`` float32 points, NaN where the depth is NaN."""
    return points_along_rays(*_ray_planes(camera), depth_m)


def points_along_rays(ray_x: np.ndarray, ray_y: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
    """``(ray_x·z, ray_y·z, z)`` with ``z = depth_m``: ``[H,W,3]`` float32 points, NaN where the depth is NaN.

    Products on contiguous planes and one interleaving merge, several times faster than strided
    per-channel writes; z = 1 · depth is the depth itself (exact, NaN included). Over bands of rows
    (geometry.bands), so the products are merged from the cache rather than from memory.
    """
    depth = np.ascontiguousarray(depth_m, dtype=np.float32)
    height, width = depth.shape
    points = np.empty((height, width, 3), dtype=np.float32)  # [H,W,3]
    if points.size == 0:
        return points
    bands = list(row_bands(height, width))
    xy = np.empty((2, bands[0].stop - bands[0].start, width), dtype=np.float32)
    for rows in bands:
        x, y = xy[0, : rows.stop - rows.start], xy[1, : rows.stop - rows.start]
        np.multiply(ray_x[rows], depth[rows], out=x)
        np.multiply(ray_y[rows], depth[rows], out=y)
        cv2.merge([x, y, depth[rows]], dst=points[rows])
    return points


def aligned_input(rgb: np.ndarray, calibration: CameraCalibration, config: PerceptionConfig,
                  rectifier: Rectifier) -> tuple[np.ndarray, CameraCalibration]:
    """The image the model sees and the calibration it (and so every output) is aligned with.

    An image that follows the rectified camera already (``camera_model``) is used as it is; a raw
    one is remapped to the rectified camera with ``rectify``, else used as it is, following the
    camera model ``camera_model`` names (``auto``: the camera_info rule of
    :mod:`~lotus2_ros.geometry.camera_model`). The calibration returned is written so that the
    rule reads it unambiguously — rectified: ``D = 0``, ``K = P[:, :3]``, ``R`` and the full ``P``
    (``Tx``, ``Ty``, ``Tz``); raw: as received, or with ``R = I``, ``P = [K | 0]`` where ``D = 0``
    would otherwise read as rectified — so the LiDAR projection, the clouds and the published
    camera_info all use one model (:attr:`PerceptionOutput.camera_model`). The LiDAR overlay tool
    calls this too.
    """
    rectified = config.input_rectified
    if rectified is None:
        rectified = is_rectified_calibration(calibration)
    if rectified:  # nothing to rectify: the image follows P already
        return rgb, calibration.as_rectified()
    if config.rectify:
        return rectifier.rectify(rgb, calibration.camera, calibration.R, calibration.P), calibration.as_rectified()
    return rgb, calibration.as_raw() if is_rectified_calibration(calibration) else calibration


def backend_config(config: PerceptionConfig) -> BackendConfig:
    """The model request of a perception configuration (the one mapping; node and tools use it)."""
    steps = config.refine_setting
    return BackendConfig(
        family=config.backend, weights=config.weights, base_model=config.base_model or None,
        tasks=config.model_tasks(), device=config.device, dtype=config.dtype,
        process_res=config.model_process_res(), full_resolution=config.no_cap,
        refine_steps=steps or None, load_refiner=config.sharpen_enabled, seed=config.seed)


def model_settings(config: PerceptionConfig) -> ModelSettings:
    """What the model ``config`` names will run with (tasks, cap, steps), from its files alone.

    Lets the bag tool plan its outputs before the (slow) model load; raises as the loader would.
    """
    b = backend_config(config)
    _, settings = resolve_model_request(b.family, b.weights, tasks=b.tasks, process_res=b.process_res,
                                        no_cap=b.full_resolution, refine_steps=b.refine_steps)
    return settings


def load_model(config: PerceptionConfig) -> ModelBackend:
    """Load the model ``config`` names, as the node, the bag tool and the CLIs all do.

    Raises:
        ConfigError: No model folder named, or CUDA requested on a machine without it (the message
            says what to pass instead).
        FileNotFoundError, ValueError: From the model loader (missing or mismatching weights).
    """
    if config.backend == "lotus2" and not (config.weights and config.base_model):
        raise ConfigError("name the model: base_model (the FLUX.1-dev folder) and weights (the Lotus-2 files)")
    if config.backend == "lotus1" and (not config.weights or config.base_model):
        raise ConfigError("name the Lotus-1 model with weights (its pipeline folder, or a folder of them); "
                          "base_model is for lotus2 only")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but torch sees no CUDA GPU here; use device cpu "
                          "(and dtype fp32) on this machine")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if config.host_threads:
        set_host_threads(config.host_threads)
    return load_backend(backend_config(config))


def load_pipeline(config: PerceptionConfig, metric=None) -> "PerceptionPipeline":
    """:func:`load_model` and the pipeline around it."""
    return PerceptionPipeline(config, load_model(config), metric=metric)


#: Settings of single-image use (``predict``, ``evaluate``, training validation): relative outputs
#: only, no camera_info needed, every image on its own scale.
OFFLINE_FIELDS = dict(metric_source="none", require_camera_info=False, publish_points=False,
                      relative_alignment="off")  # independent images: never aligned to each other


def offline_pipeline(backend: ModelBackend, **fields) -> "PerceptionPipeline":
    """The single-image pipeline around a loaded backend (device, dtype and tasks from the backend).

    ``fields`` override :data:`OFFLINE_FIELDS` and the defaults of :class:`PerceptionConfig`.
    """
    device = backend.device
    values = dict(OFFLINE_FIELDS, backend=backend.info.family, device="cpu" if device.type == "cpu" else str(device),
                  dtype=backend.describe()["dtype"], sharpen_enabled=bool(backend.info.refine_tasks))
    values.update(fields)
    return PerceptionPipeline(PerceptionConfig(**values), backend)


class PerceptionPipeline:
    """Runs a model backend on frames and builds every product the node publishes."""

    def __init__(self, config: PerceptionConfig, backend: ModelBackend,
                 metric: Callable[[Frame, PerceptionOutput], tuple] | None = None,
                 allocate: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None):
        """Args:
            config: Pipeline parameters (may be replaced later with :meth:`reconfigure`). Its
                model fields must be those ``backend`` was loaded with (:func:`load_pipeline`).
            backend: A loaded model (:func:`~lotus2_ros.model.backend.load_backend`).
            metric: Gives ``((s, t) or None, ScaleFitReport or None)`` for a frame's relative output.
                Default: from ``config.metric_source`` (fixed values, or a :class:`MetricFitter` for
                LiDAR / depth-image references).
            allocate: ``allocate(shape, dtype)`` gives the (uninitialised, C-contiguous) arrays the
                products are computed into (:attr:`allocate`). Default ``np.empty``.
        """
        self.backend = backend
        self.config = config
        #: Makes the arrays of the per-frame image products (relative output, normals, metric depth,
        #: colourised images), so that they can be computed straight into their final storage: the
        #: node passes ``RclpyTypes.payload_array``, whose arrays its messages take without a copy.
        self.allocate = np.empty if allocate is None else allocate
        #: Post-process and colourise on the model's device, downloading once (a GPU); on the CPU
        #: the numpy/OpenCV forms are faster. Both give the same values within float rounding.
        self.products_on_device = backend.device.type != "cpu"
        self.rectifier = Rectifier()
        self._metric = metric
        if metric is None and config.metric_source in ("lidar", "depth_image"):
            self._metric = MetricFitter(config)
        #: The tasks predicted: ``config.tasks`` (a subset of the loaded ones), else every loaded task.
        self.tasks = tuple(config.tasks) or backend.info.tasks
        backend.check_request(self.tasks, self.refine_steps)
        self._yields = self._output_topics(config)
        self.aligners = self._make_aligners(config)

    def _output_topics(self, config: PerceptionConfig) -> frozenset[str]:
        info = self.backend.info
        return frozenset(base_output_topics(config, self.tasks, depth_output=info.depth_output,
                                            uncertainty=info.refinement == "ensemble"))

    @property
    def refine_steps(self) -> int:
        """Refinement steps of a refined frame: ``sharpen_steps`` (Lotus-2) / ``ensemble_size`` (Lotus-1),
        else the model's (0 when refinement is off)."""
        if not self.config.sharpen_enabled:
            return 0
        return self.config.refine_setting or self.backend.info.settings.refine_steps

    def reconfigure(self, config: PerceptionConfig) -> None:
        """Use ``config`` from the next frame on; a changed fit setting restarts the metric fitter."""
        fit_fields = ("lidar_min_range_m", "lidar_max_range_m", "lidar_edge_window_px", "fit_min_points",
                      "fit_inlier_threshold", "fit_hold_time_s")
        if isinstance(self._metric, MetricFitter) and any(
                getattr(config, f) != getattr(self.config, f) for f in fit_fields):
            self._metric = MetricFitter(config)
        align_fields = ("relative_alignment", "alignment_motion", "alignment_min_inliers", "alignment_max_gap_s",
                        "metric_source")
        if any(getattr(config, f) != getattr(self.config, f) for f in align_fields):
            self.aligners = self._make_aligners(config)
        self.config = config
        self._yields = self._output_topics(config)

    def _make_aligners(self, config: PerceptionConfig) -> dict[bool, RelativeAligner] | None:
        """Per stream (live, refined): the relative-output aligner, or None when ``relative_alignment`` is off."""
        if not config.aligns_relative:
            return None
        settings = RelativeAlignmentConfig(space=self.backend.info.depth_output,
                                           min_inlier_fraction=config.alignment_min_inliers,
                                           max_gap_ns=int(config.alignment_max_gap_s * 1e9),
                                           motion=config.aligns_with_motion)
        return {False: RelativeAligner(settings), True: RelativeAligner(settings)}

    # ------------------------------------------------------------------ one image, start to end
    def predict(self, rgb: np.ndarray, refine_steps: int | None = None, wanted: set[str] | None = None,
                stamp_ns: int = 0, frame_id: str = IMAGE_FRAME_ID,
                tasks: tuple[str, ...] | None = None) -> PerceptionOutput:
        """The final result for one image: the per-frame prediction, refined with ``refine_steps``.

        The offline front ends (``predict``, ``evaluate``, the demo, trainer validation) use this.
        It gives exactly what the node and the bag tool publish for the frame — the core output
        with 0 steps, the refined output otherwise — without decoding the unrefined prediction
        when it is refined. ``timings_ms`` covers every stage once.

        Args:
            rgb: uint8 RGB ``[H,W,3]``.
            refine_steps: Refinement steps (0: the per-frame prediction); None: the configured
                steps (the model's default unless set).
            wanted: As in :meth:`process`; None builds every product.
            tasks: As in :meth:`process`.
        """
        steps = self.refine_steps if refine_steps is None else int(refine_steps)
        self.backend.check_request(tuple(tasks or self.tasks), steps)
        frame = Frame(rgb=rgb, stamp_ns=stamp_ns, frame_id=frame_id)
        if steps == 0:
            return self.process(frame, wanted, tasks)[0]
        ctx, timer = self._forward(frame, wanted, tasks)
        return Refinement(self, ctx, steps, timer).result()

    def process_refined(self, frame: Frame, num_steps: int, wanted: set[str] | None = None) -> PerceptionOutput:
        """The refined result of ``frame`` only: :meth:`process` then a whole :class:`Refinement`,
        without decoding the per-frame prediction nor building its products (the bag tool when it
        writes refined outputs only). The metric fit runs once, on the refined output."""
        self.backend.check_request(self.tasks, num_steps)
        ctx, timer = self._forward(frame, wanted, None)
        return Refinement(self, ctx, num_steps, timer).result()

    # ------------------------------------------------------------------ core pass
    def process(self, frame: Frame, wanted: set[str] | None = None,
                tasks: tuple[str, ...] | None = None) -> tuple[PerceptionOutput, _FrameContext]:
        """The per-frame prediction of every task, decoded into products. Runs without autograd.

        Args:
            frame: The input.
            wanted: Output topics (``messages.OUTPUT_TOPICS`` names) someone listens to; products
                only they need (colourised images, the point cloud) are skipped when absent.
                None builds everything.
            tasks: A subset of the pipeline's tasks to predict (default: all of them).

        Returns:
            The products, and the context a :meth:`start_refinement` of this frame needs.
        """
        ctx, timer = self._forward(frame, wanted, tasks)
        with torch.inference_mode():
            decoded = self._decode(ctx.coarse, ctx.out_hw, timer, ctx.wanted)
        return self._products(ctx, decoded, refined=False, refine_steps=0, timer=timer), ctx

    def _forward(self, frame: Frame, wanted: set[str] | None,
                 tasks: tuple[str, ...] | None) -> tuple[_FrameContext, StageTimer]:
        """(rectify) → preprocess → encode → per-frame prediction latents, and the output geometry."""
        cfg, backend = self.config, self.backend
        tasks = self.tasks if tasks is None else tuple(tasks)
        if not tasks or any(t not in self.tasks for t in tasks):
            raise ValueError(f"tasks {list(tasks)} are not all predicted by this pipeline ({list(self.tasks)})")
        timer = StageTimer(backend.device)
        rgb, cal = frame.rgb, frame.calibration
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"the image must be uint8 RGB [H,W,3], got {rgb.dtype} {tuple(rgb.shape)}")
        if cal is not None and (cal.height_px, cal.width_px) != rgb.shape[:2]:
            raise ValueError(f"calibration is {cal.width_px}x{cal.height_px} but the image is "
                             f"{rgb.shape[1]}x{rgb.shape[0]}")
        if cal is not None:
            with timer("rectify") if cfg.rectify else contextlib.nullcontext():
                rgb, cal = aligned_input(rgb, cal, cfg, self.rectifier)
        with torch.inference_mode():
            with timer("preprocess"):
                x = backend.preprocess(rgb)  # [1,3,h,w]
            with timer("encode"):
                cond = backend.encode(x)
            coarse = backend.predict(cond, tasks, timer)
        process_hw = tuple(x.shape[-2:])
        out_hw = rgb.shape[:2] if cfg.output_resolution == "camera" else process_hw
        with timer("products"):
            rgb_out = rgb
            if out_hw != rgb.shape[:2]:
                rgb_out = cv2.resize(rgb, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
                cal = cal.scaled(out_hw[1], out_hw[0]) if cal is not None else None
        ctx = _FrameContext(frame, rgb_out, cal, out_hw, process_hw, cond, coarse,
                            None if wanted is None else frozenset(wanted))
        return ctx, timer

    def _decode(self, latents: dict[str, torch.Tensor], out_hw: tuple[int, int], timer: StageTimer,
                wanted: frozenset[str] | None = None, members: bool = False) -> dict[str, np.ndarray]:
        """Decode and post-process per task: depth → ``[1,H,W]``, normal → ``[1,H,W,3]``.

        On a GPU (:attr:`products_on_device`) the post-processing and the colourised images the
        frame needs (``wanted``, as in :meth:`process`) are computed there and downloaded together
        once; they come back as ``"{task}_colorized"`` ``[H,W,3]`` uint8. On the CPU the backend's
        numpy forms run, into arrays from :attr:`allocate`, and :meth:`_products` colourises the
        depth. The normals and their colour image are made by :meth:`_host_normals` in one pass:
        with another task, on a host thread (:func:`~lotus2_ros.geometry.bands.submit`) while this
        one goes on; they wait as a future under :data:`PENDING_NORMALS`, and
        ``postprocess_normal`` times the hand-off here and the wait for them in :meth:`_products`
        (or, made on this thread, the whole of them).

        With ``members`` (a Lotus-G ensemble: ``[K,…]`` latents of one image) the K decoded
        members are reduced (``ensemble_reduce``: mean or median; normals renormalised) and the
        depth output's per-pixel standard deviation is returned under ``"depth_std"``.
        """
        backend, outputs, on_device = self.backend, {}, {}
        decoded = {}
        for task, z in latents.items():
            with timer(f"decode_{task}"):
                decoded[task] = backend.decode(z, task)  # [B|K,3,h,w]
        if not self.products_on_device and not members and "normal" in decoded:
            # On the host the normals (the longest chain: resize, normalise, colourise) are made on a
            # second core while this thread makes the depth products; _products joins them.
            colorize = self._want("normals/colorized", wanted)
            run = submit if len(decoded) > 1 else _done
            with timer("postprocess_normal"):  # all of it when made here, the hand-off when made beside
                outputs[PENDING_NORMALS] = run(self._host_normals, decoded.pop("normal"), out_hw, colorize)
        for task, image in decoded.items():
            with timer(f"postprocess_{task}"):
                result = None
                if self.products_on_device and not members:
                    to_tensor = backend.to_depth_tensor if task == "depth" else backend.to_normals_tensor
                    result = to_tensor(image, out_hw)
                if result is None:
                    if members:
                        out = (backend.to_depth if task == "depth" else backend.to_normals)(image, out_hw)
                        outputs[task] = self._reduce_members(task, out, outputs)
                        continue
                    shape = (image.shape[0], *out_hw) + ((3,) if task == "normal" else ())
                    to_host = backend.to_depth if task == "depth" else backend.to_normals
                    outputs[task] = to_host(image, out_hw, out=self.allocate(shape, np.float32))
                    continue
                on_device[task] = result  # [B,H,W] / [B,H,W,3] on the device
                if self._want(f"{_TASK_TOPIC[task]}/colorized", wanted) and (
                        task == "normal" or backend.info.depth_output == "disparity"):
                    colorize = colorize_disparity_tensor if task == "depth" else colorize_normals_tensor
                    on_device[f"{task}_colorized"] = colorize(result[0])  # [H,W,3] uint8
        if on_device:
            with timer("postprocess_download"):
                outputs.update(download(on_device))
        return outputs

    def _host_normals(self, decoded: torch.Tensor, out_hw: tuple[int, int],
                      colorize: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The host normals ``[B,H,W,3]`` of a decoded image and, if ``colorize``, the first one's colour image."""
        shape = (decoded.shape[0], *out_hw, 3)
        colorized = self.allocate(shape, np.uint8) if colorize else None
        normals = self.backend.to_normals(decoded, out_hw, out=self.allocate(shape, np.float32), colorized=colorized)
        return normals, None if colorized is None else colorized[0]

    def _reduce_members(self, task: str, members: np.ndarray, outputs: dict) -> np.ndarray:
        """An ensemble's ``[K,…]`` outputs → ``[1,…]`` (mean or median); the depth std into ``outputs``."""
        reduce = np.median if self.config.ensemble_reduce == "median" else np.mean
        if task == "depth":
            if members.shape[0] > 1:
                outputs["depth_std"] = members.std(axis=0, ddof=1)[None].astype(np.float32)  # [1,H,W]
            return reduce(members, axis=0)[None].astype(np.float32)
        return _unit(reduce(members, axis=0))[None]

    # ------------------------------------------------------------------ refinement
    def start_refinement(self, ctx: _FrameContext, num_steps: int | None = None) -> "Refinement":
        """A stepwise refinement of ``ctx``'s per-frame prediction (Lotus-2: the detail sharpener;
        Lotus-G: the seed ensemble)."""
        steps = self.refine_steps if num_steps is None else num_steps
        self.backend.check_request(tuple(ctx.coarse), steps)
        return Refinement(self, ctx, steps)

    # ------------------------------------------------------------------ products
    def _want(self, topic: str, wanted: frozenset[str] | None) -> bool:
        """This configuration yields ``topic`` and someone listens (``wanted`` None: everyone)."""
        return topic in self._yields and (wanted is None or topic in wanted)

    def _products(self, ctx: _FrameContext, decoded: dict[str, np.ndarray], refined: bool, refine_steps: int,
                  timer: StageTimer) -> PerceptionOutput:
        """The frame's :class:`PerceptionOutput` from :meth:`_decode`'s outputs."""
        try:
            return self._made_products(ctx, decoded, refined, refine_steps, timer)
        finally:
            pending = decoded.get(PENDING_NORMALS)
            if pending is not None:  # joined whatever happened: nothing is left writing into the products
                wait([pending])

    def _made_products(self, ctx: _FrameContext, decoded: dict, refined: bool, refine_steps: int,
                       timer: StageTimer) -> PerceptionOutput:
        def want(topic: str) -> bool:
            return self._want(topic, ctx.wanted)

        with timer("products"):
            out = PerceptionOutput(stamp_ns=ctx.frame.stamp_ns, frame_id=ctx.frame.frame_id,
                                   refined=refined, calibration=ctx.calibration_out, rgb=ctx.rgb_out,
                                   process_hw=ctx.process_hw, refine_steps=refine_steps)
            if "depth" in decoded:
                relative = decoded["depth"][0]
                if self.aligners is not None:  # onto the sequence's scale (geometry.relative_alignment)
                    cal = ctx.calibration_out  # the image and K the motion is seen in (with camera_info)
                    # In place: the model's own output is not kept (the alignment says how to get it back).
                    out.alignment = self.aligners[refined].update(relative, ctx.frame.stamp_ns, rgb=ctx.rgb_out,
                                                                  K=None if cal is None else cal.K, out=relative)
                    relative = out.alignment.values
                if self.backend.info.depth_output == "depth":
                    out.relative_depth = relative
                else:
                    out.disparity = relative
            if "depth_std" in decoded:  # in the (aligned) relative output's units
                std = decoded["depth_std"][0]
                out.depth_uncertainty = std if out.alignment is None else std * np.float32(abs(out.alignment.scale))
            if "normal" in decoded:
                out.normals = decoded["normal"][0]
            if out.relative is not None and want("depth/colorized"):
                # Aligned outputs keep one colour scale: the model's [0, 1] range of the reference frame.
                out.depth_colorized = None if out.alignment is not None else decoded.get("depth_colorized")  # GPU
                if out.depth_colorized is None:
                    span = (0.0, 1.0) if out.alignment is not None else (None, None)
                    out.depth_colorized = colorize_relative(out.relative, out.relative_kind, *span,
                                                            out=self.allocate((*ctx.out_hw, 3), np.uint8))
            if out.normals is not None and want("normals/colorized"):
                out.normals_colorized = decoded.get("normal_colorized")
                if out.normals_colorized is None:
                    out.normals_colorized = colorize_normals(out.normals, out=self.allocate((*ctx.out_hw, 3), np.uint8))
        self._metric_products(ctx, out, timer)
        pending = decoded.get(PENDING_NORMALS)
        if pending is not None:  # made alongside (see _decode): the time waited for them
            with timer("postprocess_normal"):
                normals, out.normals_colorized = pending.result()
            out.normals = normals[0]
        out.timings_ms = dict(timer.timings_ms)
        return out

    def _metric_products(self, ctx: _FrameContext, out: PerceptionOutput, timer: StageTimer) -> None:
        """Metric depth and points of ``out`` (with a metric reference)."""
        cfg = self.config
        if out.relative is not None:
            with timer("metric"):
                st, out.scale_fit = self._scale_shift(ctx.frame, out)
                if st is not None:
                    out.scale_shift = st
                    out.depth_m = metric_depth_from_relative(out.relative, out.relative_kind, *st, cfg.min_depth_m,
                                                             cfg.max_depth_m, self.allocate(ctx.out_hw, np.float32))
            if out.depth_m is not None and out.camera is not None and self._want("points", ctx.wanted):
                with timer("points"):
                    model = out.camera_model
                    if model.is_plain:  # along the pixel rays: built when first used (a cloud needs only the rays)
                        out._point_rays = _ray_planes(model.camera)
                    else:  # rectified with R or P's Tx, Ty, Tz: into the frame_id frame
                        out.points_m = _points_from_depth(model.camera, out.depth_m)  # [H,W,3], NaN stays NaN
                        model.from_camera_frame(out.points_m, out=out.points_m)

    def _scale_shift(self, frame: Frame, out: PerceptionOutput) -> tuple:
        if self._metric is not None:
            return self._metric(frame, out)
        if self.config.metric_source == "fixed":
            return (self.config.fixed_scale, self.config.fixed_shift), None
        return None, None


class Refinement:
    """The refinement of one frame, advanced one network forward per :meth:`step`."""

    def __init__(self, pipeline: PerceptionPipeline, ctx: _FrameContext, num_steps: int,
                 timer: StageTimer | None = None):
        self.pipeline = pipeline
        self.ctx = ctx
        self.stamp_ns = ctx.frame.stamp_ns
        self.num_steps = num_steps
        self.timer = timer or StageTimer(pipeline.backend.device)
        #: Network forwards (``step()`` calls) the refinement takes: steps x tasks, steps when the
        #: backend runs the tasks in one batched forward, one per task for a Lotus-G ensemble.
        self.total_steps = pipeline.backend.refine_forwards(tuple(ctx.coarse), num_steps)
        self.steps_done = 0
        self._latents = dict(ctx.coarse)
        self._steps = pipeline.backend.iter_refine(ctx.cond, self._latents, num_steps, self.timer)

    @property
    def done(self) -> bool:
        return self.steps_done >= self.total_steps

    def step(self) -> bool:
        """Advance one refinement step (one network forward); True once all steps are done."""
        if not self.done:
            with torch.inference_mode():
                self._latents = next(self._steps)
            self.steps_done += 1
        return self.done

    def result(self) -> PerceptionOutput:
        """Finish the remaining steps, decode, and build the refined :class:`PerceptionOutput`."""
        while not self.step():
            pass
        with torch.inference_mode():
            decoded = self.pipeline._decode(self._latents, self.ctx.out_hw, self.timer, self.ctx.wanted,
                                            members=self.pipeline.backend.info.refinement == "ensemble")
        return self.pipeline._products(self.ctx, decoded, refined=True, refine_steps=self.num_steps,
                                       timer=self.timer)
