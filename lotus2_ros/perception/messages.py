"""PerceptionOutput → ROS messages, by output topic (shared by the node and the bag tool).

Topic names (:mod:`.outputs`) are relative to the node's private namespace (``~/``); refined
results use the same names under ``refined/``. Metric topics (``depth/image``, ``points``) exist
only for outputs with a metric reference: relative values are never published as metres. ``scale_fit``
needs the ``lotus2_ros/msg/ScaleFit`` type, which the rosbags provider registers from ``msg/``
and rclpy has only in a colcon-built install.
"""

from __future__ import annotations

from typing import Any

from ..io.camera_info import build_camera_info
from ..io.image_msgs import build_image
from ..io.msg_types import MessageTypes
from ..io.pointcloud import build_depth_pointcloud2, build_pointcloud2
from ..io.stamps import build_header
from .metric import ScaleFitReport
from .outputs import OUTPUT_TOPICS, REFINED_PREFIX, topic_name
from .pipeline import PerceptionOutput

__all__ = ["OUTPUT_TOPICS", "REFINED_PREFIX", "build_scale_fit", "output_messages", "topic_name"]


def output_messages(types: MessageTypes, out: PerceptionOutput, wanted: set[str] | None = None, *,
                    cloud_normals: bool = True) -> dict[str, Any]:
    """Messages for the products ``out`` has, keyed by relative topic (with ``refined/`` if refined).

    Args:
        types: Message family (rclpy or rosbags).
        out: The products of one frame; headers get its stamp and ``frame_id``.
        wanted: Base topic names (without ``refined/``) to build; None builds all. Unwanted ones
            are skipped before any conversion work.
        cloud_normals: Give the cloud ``normal_x/y/z`` fields when there are normals (the node
            does; the bag tool by default not, as ``normals/image`` holds them already).
    """
    header = build_header(types, out.stamp_ns, out.frame_id)

    def want(topic: str) -> bool:
        return wanted is None or topic in wanted

    msgs: dict[str, Any] = {}
    if out.disparity is not None and want("disparity"):
        msgs["disparity"] = build_image(types, header, out.disparity, "32FC1")
    if out.relative_depth is not None and want("relative_depth"):
        msgs["relative_depth"] = build_image(types, header, out.relative_depth, "32FC1")
    if out.depth_uncertainty is not None and want("depth/uncertainty"):
        msgs["depth/uncertainty"] = build_image(types, header, out.depth_uncertainty, "32FC1")
    if out.depth_m is not None and want("depth/image"):
        msgs["depth/image"] = build_image(types, header, out.depth_m, "32FC1")
    if out.calibration is not None and want("depth/camera_info"):
        msgs["depth/camera_info"] = build_camera_info(types, header, out.calibration)
    if out.depth_colorized is not None and want("depth/colorized"):
        msgs["depth/colorized"] = build_image(types, header, out.depth_colorized, "rgb8")
    if out.normals is not None and want("normals/image"):
        msgs["normals/image"] = build_image(types, header, out.normals, "32FC3")
    if out.normals_colorized is not None and want("normals/colorized"):
        msgs["normals/colorized"] = build_image(types, header, out.normals_colorized, "rgb8")
    if out.depth_m is not None and want("points"):
        normals = out.normals if cloud_normals else None
        if out.point_rays is not None:  # written from the depth, without building the points first
            msgs["points"] = build_depth_pointcloud2(types, header, out.depth_m, *out.point_rays, out.rgb, normals)
        elif out.points_m is not None:
            msgs["points"] = build_pointcloud2(types, header, out.points_m, out.rgb, normals)
    scale_fit_cls = getattr(types, "ScaleFit", None)
    if out.scale_fit is not None and scale_fit_cls is not None and want("scale_fit"):
        msgs["scale_fit"] = build_scale_fit(types, scale_fit_cls, out.scale_fit)
    return {topic_name(k, out.refined): v for k, v in msgs.items()}


def build_scale_fit(types: MessageTypes, cls: Any, report: ScaleFitReport) -> Any:
    """A ``lotus2_ros/msg/ScaleFit`` from a fit report (NaN scale/shift when the fit failed)."""
    return types.create(
        cls, header=build_header(types, report.stamp_ns, report.frame_id), scale=float(report.scale),
        shift=float(report.shift), fit_space=report.fit_space, num_points=int(report.num_points),
        num_inliers=int(report.num_inliers), rmse_m=float(report.rmse_m), abs_rel=float(report.abs_rel),
        valid=bool(report.valid), filtered=bool(report.filtered), reason=int(report.reason_code),
        reason_text=report.reason)
