"""Which outputs a configuration yields: the one place that decides it.

The pipeline builds only these products, the node advertises only these topics, the bag tool
creates only these connections and the demo subscribes to them. Topic names are relative to the
node's private namespace (``~/``); refined results use the same names under ``refined/``.
"""

from __future__ import annotations

from .config import PerceptionConfig

#: Output topics (relative) and their message types.
OUTPUT_TOPICS: dict[str, str] = {
    "disparity": "sensor_msgs/msg/Image",
    "relative_depth": "sensor_msgs/msg/Image",
    "depth/image": "sensor_msgs/msg/Image",
    "depth/uncertainty": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "depth/colorized": "sensor_msgs/msg/Image",
    "normals/image": "sensor_msgs/msg/Image",
    "normals/colorized": "sensor_msgs/msg/Image",
    "points": "sensor_msgs/msg/PointCloud2",
    "scale_fit": "lotus2_ros/msg/ScaleFit",
}
REFINED_PREFIX = "refined/"
#: Metric sources that fit a reference measured with the frame (and publish ``scale_fit``).
REFERENCE_SOURCES = ("lidar", "depth_image")


def topic_name(topic: str, refined: bool) -> str:
    """The relative topic of an output (``refined/…`` for refined results)."""
    return REFINED_PREFIX + topic if refined else topic


def base_output_topics(config: PerceptionConfig, tasks: tuple[str, ...], *, camera_info: bool = True,
                       depth_output: str = "disparity", uncertainty: bool = False) -> list[str]:
    """The relative topics a frame's result can be published on (``OUTPUT_TOPICS`` order).

    Args:
        config: Outputs switched on (colourised images, points) and the metric source.
        tasks: The tasks the model predicts (the model's own when ``config.tasks`` is empty).
        camera_info: Whether a camera_info exists for the stream (clouds need one).
        depth_output: The model's relative depth output: ``disparity`` (on ``disparity``) or
            ``depth`` (on ``relative_depth``).
        uncertainty: Results with an uncertainty image (refined Lotus-G ensembles).
    """
    depth, normal = "depth" in tasks, "normal" in tasks
    metric = config.metric_source != "none"
    yields = {
        "disparity": depth and depth_output == "disparity",
        "relative_depth": depth and depth_output == "depth",
        "depth/image": depth and metric,
        "depth/uncertainty": depth and uncertainty,
        "depth/camera_info": camera_info,
        "depth/colorized": depth and config.publish_colorized,
        "normals/image": normal,
        "normals/colorized": normal and config.publish_colorized,
        "points": depth and metric and camera_info and config.publish_points,
        "scale_fit": depth and config.metric_source in REFERENCE_SOURCES,
    }
    return [t for t in OUTPUT_TOPICS if yields[t]]


def planned_output_topics(config: PerceptionConfig, tasks: tuple[str, ...], *, core: bool = True,
                          refined: bool, camera_info: bool = True, depth_output: str = "disparity",
                          refinement: str = "sharpen") -> list[str]:
    """Relative topics of core and/or refined results (``refined/…`` after the core ones).

    ``refinement`` ``"ensemble"``: refined results carry ``depth/uncertainty``.
    """
    kw = dict(camera_info=camera_info, depth_output=depth_output)
    core_topics = base_output_topics(config, tasks, **kw) if core else []
    refined_topics = base_output_topics(config, tasks, uncertainty=refinement == "ensemble", **kw) if refined else []
    return list(core_topics) + [REFINED_PREFIX + t for t in refined_topics]
