"""Camera geometry in the ROS optical frame (x right, y down, z forward); NaN marks invalid.

numpy/opencv only: never imports rclpy or torch. Each submodule owns one idea and lists its
public names in ``__all__``; this package re-exports them.
"""

from lotus2_ros.geometry.calibration import CameraCalibration, Roi
from lotus2_ros.geometry.camera import (
    PinholeCamera,
    depth_to_points,
    distort_normalized,
    points_to_pixels,
    undistort_normalized,
)
from lotus2_ros.geometry.camera_model import CameraModel, decompose_projection, is_rectified_calibration
from lotus2_ros.geometry.lidar_projection import (
    DisparitySamples,
    LidarProjection,
    LidarProjectionConfig,
    parallax_occlusion_mask,
    project_lidar_points,
    sample_disparity,
)
from lotus2_ros.geometry.normals import model_to_optical, normalize, optical_to_model, planar_model_to_optical
from lotus2_ros.geometry.relative_alignment import (
    AlignedPrediction,
    RelativeAligner,
    RelativeAlignmentConfig,
    fit_affine_robust,
)
from lotus2_ros.geometry.scale_fit import (
    FitReason,
    FitResult,
    ScaleFitConfig,
    fit_disparity_affine,
    metric_depth_from_disparity,
)
from lotus2_ros.geometry.temporal_filter import (
    FilteredScale,
    ScaleFilterConfig,
    ScaleShiftFilter,
    fit_disagreement,
)
from lotus2_ros.geometry.transforms import rigid_transform

__all__ = [
    # calibration.py
    "CameraCalibration",
    "Roi",
    # camera.py
    "PinholeCamera",
    "depth_to_points",
    "distort_normalized",
    "points_to_pixels",
    "undistort_normalized",
    # camera_model.py
    "CameraModel",
    "decompose_projection",
    "is_rectified_calibration",
    # normals.py
    "model_to_optical",
    "normalize",
    "planar_model_to_optical",
    "optical_to_model",
    # lidar_projection.py
    "DisparitySamples",
    "LidarProjection",
    "LidarProjectionConfig",
    "parallax_occlusion_mask",
    "project_lidar_points",
    "sample_disparity",
    # relative_alignment.py
    "AlignedPrediction",
    "RelativeAligner",
    "RelativeAlignmentConfig",
    "fit_affine_robust",
    # scale_fit.py
    "FitReason",
    "FitResult",
    "ScaleFitConfig",
    "fit_disparity_affine",
    "metric_depth_from_disparity",
    # temporal_filter.py
    "FilteredScale",
    "ScaleFilterConfig",
    "ScaleShiftFilter",
    "fit_disagreement",
    # transforms.py
    "rigid_transform",
]
