"""The result type every front end (node, bag tool, predictor) gets from the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """Dense geometry for one image, at the input image's resolution.

    Attributes:
        disparity: ``float32`` ``[H,W]`` affine-invariant disparity in ``[0, 1]`` (official scale:
            mean of the 3 decoded channels; larger = nearer). Relative, NOT metres. ``None`` if
            depth was not requested. Every pixel is predicted (no invalid value).
        normals: ``float32`` ``[H,W,3]`` unit surface normals in the ROS optical frame
            (x right, y down, z forward), facing the camera; NaN where undefined. ``None`` if
            normals were not requested.
        sharpen_steps: Detail-sharpener steps applied per task (0 = core predictor + LCM only).
        process_hw: ``(height, width)`` in pixels the model ran at.
        timings_ms: Wall time per stage in milliseconds (``encode``, ``core_depth``, ...).
    """

    disparity: np.ndarray | None = None
    normals: np.ndarray | None = None
    sharpen_steps: dict[str, int] = field(default_factory=dict)
    process_hw: tuple[int, int] = (0, 0)
    timings_ms: dict[str, float] = field(default_factory=dict)
