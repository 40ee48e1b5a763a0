"""``sensor_msgs/CameraInfo`` ⇄ :class:`CameraCalibration` (validated, hashable calibration).

What is supported, and why:

* Distortion models ``plumb_bob`` (0, 4 or 5 coefficients), ``rational_polynomial`` only when
  ``k4 = k5 = k6 = 0`` (then it *is* plumb_bob; many drivers publish it that way), and ``""`` /
  ``"none"`` with all-zero coefficients. :class:`~lotus2_ros.geometry.camera.PinholeCamera`
  models plumb_bob only, so anything else (``equidistant``, a full rational polynomial) is a
  :class:`MessageError` rather than silently wrong geometry; rectify such cameras upstream
  (``image_proc``) and use the rectified topics.
* ``K`` all zeros means "uncalibrated" (REP-104) and is rejected, as are NaN/Inf anywhere, skew,
  non-positive focal lengths and an ``R`` that is not a rotation. ``R`` all zeros is read as identity and ``P`` all zeros as
  ``[K | 0]`` (drivers without a rectification publish them that way).
* Binning and ROI (REP-104) describe the published image as a crop (ROI, in full-resolution
  pixels) of the calibrated sensor, then binned. The calibration returned here is that of the
  *published* image: ``K`` and ``P`` are cropped then scaled by ``1 / binning`` with the
  half-pixel convention of :meth:`PinholeCamera.scaled` (a binned pixel's centre is the centre of
  its block; ``image_geometry`` omits the half-pixel term, a difference below 0.5 px), and the
  size is ``ROI size // binning``. An ROI together with non-zero distortion is rejected: the ROI
  then lives in raw coordinates while ``P`` is rectified, which needs a rectified-ROI computation
  this package does not do.
* The image must have exactly the calibration's size (:func:`check_image_matches`); no scale is
  inferred from a size mismatch, because a mismatch usually means the wrong ``camera_info`` topic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry.calibration import IDENTITY9, CameraCalibration, Roi, crop_projection, scale_projection
from ..geometry.camera import PinholeCamera
from .errors import MessageError
from .msg_types import MessageTypes
from .stamps import copy_header

__all__ = [
    "build_camera_info",
    "camera_info_to_calibration",
    "check_image_matches",
]

_PLUMB_BOB = "plumb_bob"
_RATIONAL = "rational_polynomial"
_NO_DISTORTION = ("", "none")


def _floats(msg: Any, field: str, expected: int | None) -> np.ndarray:
    try:
        values = np.asarray(getattr(msg, field), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise MessageError(f"CameraInfo.{field} is not a sequence of numbers: {err}") from err
    if expected is not None and values.size != expected:
        raise MessageError(f"CameraInfo.{field} must hold {expected} values, got {values.size}")
    if not np.all(np.isfinite(values)):
        raise MessageError(f"CameraInfo.{field} contains NaN or Inf: {values.tolist()}")
    return values


def _plumb_bob_part(model: str, d: np.ndarray) -> tuple[float, ...]:
    if model in _NO_DISTORTION:
        if np.any(d != 0.0):
            raise MessageError(
                f"CameraInfo.distortion_model {model!r} (none) with non-zero d {d.tolist()}: "
                "name the model (plumb_bob)"
            )
        return (0.0,) * 5
    if model == _PLUMB_BOB:
        if d.size not in (0, 4, 5):
            raise MessageError(f"CameraInfo.d must hold 5 plumb_bob coefficients, got {d.size}: {d.tolist()}")
        return tuple(float(v) for v in np.pad(d, (0, 5 - d.size)))
    if model == _RATIONAL:
        if d.size not in (0, 4, 5, 8):
            raise MessageError(
                f"CameraInfo.d must hold 8 rational_polynomial coefficients, got {d.size}: {d.tolist()}"
            )
        if np.any(d[5:] != 0.0):
            raise MessageError(
                f"CameraInfo.d {d.tolist()}: rational_polynomial with non-zero k4..k6 is not "
                "supported (only its plumb_bob part); publish rectified images instead"
            )
        return tuple(float(v) for v in np.pad(d[:5], (0, 5 - min(d.size, 5))))
    raise MessageError(
        f"CameraInfo.distortion_model {model!r} is not supported (plumb_bob, rational_polynomial "
        "with k4=k5=k6=0, or none)"
    )


def _roi(msg: Any, full_w: int, full_h: int) -> Roi | None:
    raw = getattr(msg, "roi", None)
    if raw is None:
        return None
    roi = Roi(int(raw.x_offset), int(raw.y_offset), int(raw.width), int(raw.height), bool(raw.do_rectify))
    if roi.width == 0 and roi.height == 0:
        return None  # REP-104: all zeros means the full resolution
    if roi.x_offset == 0 and roi.y_offset == 0 and (roi.width, roi.height) == (full_w, full_h):
        return None
    if roi.width <= 0 or roi.height <= 0 or roi.x_offset + roi.width > full_w or roi.y_offset + roi.height > full_h:
        raise MessageError(f"CameraInfo.roi {roi} does not fit the {full_w}x{full_h} calibration")
    return roi


def camera_info_to_calibration(msg: Any) -> CameraCalibration:
    """Reads and validates a ``sensor_msgs/CameraInfo`` (rclpy or rosbags object).

    See the module docstring for the supported distortion models and how binning and ROI are
    applied.

    Returns:
        The calibration of the published image stream.

    Raises:
        MessageError: Zero size, uncalibrated (``K`` all zeros), NaN/Inf, skew or non-positive
            focal length, unsupported distortion model or coefficients, a bad ROI or binning.
    """
    full_w, full_h = int(msg.width), int(msg.height)
    if full_w <= 0 or full_h <= 0:
        raise MessageError(f"CameraInfo is empty: width {full_w}, height {full_h}")
    k = _floats(msg, "k", 9)
    if not np.any(k):
        raise MessageError("CameraInfo.k is all zeros: the camera is uncalibrated")
    r = _floats(msg, "r", 9)
    p = _floats(msg, "p", 12)
    d = _floats(msg, "d", None)
    model = str(msg.distortion_model)
    D = _plumb_bob_part(model, d)
    if not np.any(r):
        r = np.array(IDENTITY9)
    R = r.reshape(3, 3)
    if not (np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0):
        raise MessageError(f"CameraInfo.r {r.tolist()} is not a rotation matrix")
    try:
        camera = PinholeCamera.from_K(k.reshape(3, 3), full_w, full_h, D)
    except ValueError as err:
        raise MessageError(f"CameraInfo.k {k.tolist()} is not a valid pinhole matrix: {err}") from err
    P = p.reshape(3, 4) if np.any(p) else camera.P

    binning_x, binning_y = (max(int(b), 1) for b in (msg.binning_x, msg.binning_y))
    roi = _roi(msg, full_w, full_h)
    if roi is not None:
        if camera.has_distortion:
            raise MessageError(
                f"CameraInfo.roi {roi} with distortion d {list(D)} is not supported: publish "
                "rectified images or the full sensor"
            )
        camera = camera.cropped(roi.x_offset, roi.y_offset, roi.width, roi.height)
        P = crop_projection(P, roi.x_offset, roi.y_offset)
    if binning_x > 1 or binning_y > 1:
        new_w, new_h = camera.width_px // binning_x, camera.height_px // binning_y
        if new_w == 0 or new_h == 0:
            raise MessageError(
                f"CameraInfo.binning_x/y {binning_x}/{binning_y} leave no pixels of the "
                f"{camera.width_px}x{camera.height_px} image"
            )
        # Binning divides exactly (floor drops the incomplete last block), not new/old.
        sx, sy = 1.0 / binning_x, 1.0 / binning_y
        camera = PinholeCamera(
            new_w, new_h, camera.fx * sx, camera.fy * sy,
            (camera.cx + 0.5) * sx - 0.5, (camera.cy + 0.5) * sy - 0.5, camera.D,
        )
        P = scale_projection(P, sx, sy)
    return CameraCalibration(
        camera=camera,
        r=tuple(r.tolist()),
        p=tuple(P.reshape(-1).tolist()),
        distortion_model=model,
        binning_x=binning_x,
        binning_y=binning_y,
        roi=roi,
    )


def check_image_matches(calibration: CameraCalibration, height_px: int, width_px: int) -> None:
    """Raises unless an image has exactly the calibration's size.

    No integer scale is accepted: a size mismatch usually means a ``camera_info`` from another
    camera or resolution, and guessing a scale would give silently wrong geometry.

    Raises:
        MessageError: The sizes differ (both are named, as width x height).
    """
    if (int(height_px), int(width_px)) != (calibration.height_px, calibration.width_px):
        raise MessageError(
            f"CameraInfo is {calibration.width_px}x{calibration.height_px} (width x height) but "
            f"the image is {int(width_px)}x{int(height_px)}"
        )


def build_camera_info(types: MessageTypes, header: Any, calibration: CameraCalibration | PinholeCamera) -> Any:
    """A ``sensor_msgs/CameraInfo`` describing an output image stream.

    For outputs at another resolution than the input, pass ``calibration.scaled(w, h)`` so the
    published intrinsics match the resized images. Binning and ROI are already folded into a
    :class:`CameraCalibration`, so the message has ``binning = 0`` and an all-zero ROI.

    Args:
        types: Message family to build with.
        header: Header whose stamp and ``frame_id`` are copied.
        calibration: A calibration, or a bare camera (then ``R = I``, ``P = [K | 0]``,
            ``plumb_bob``).
    """
    if isinstance(calibration, PinholeCamera):
        calibration = CameraCalibration(calibration)
    camera = calibration.camera
    model = calibration.distortion_model if calibration.distortion_model not in _NO_DISTORTION else _PLUMB_BOB
    d = camera.D if model == _PLUMB_BOB else camera.D + (0.0, 0.0, 0.0)
    return types.CameraInfo(
        header=copy_header(types, header),
        height=camera.height_px,
        width=camera.width_px,
        distortion_model=model,
        d=types.pack_float64(d),
        k=types.pack_float64(camera.K.reshape(-1)),
        r=types.pack_float64(calibration.r),
        p=types.pack_float64(calibration.p),
        binning_x=0,
        binning_y=0,
        roi=types.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
