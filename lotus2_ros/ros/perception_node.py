"""``perception_node``: depth, normals and point clouds from a camera stream.

Subscribed topics (relative, remappable):
    ``image`` (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8, mono16) or
    ``image/compressed`` (sensor_msgs/CompressedImage, jpeg/png) — see ``image_transport``;
    ``camera_info`` (sensor_msgs/CameraInfo);
    ``lidar/points`` (sensor_msgs/PointCloud2, with ``metric_source: lidar``) or ``depth_ref/image``
    (sensor_msgs/Image 32FC1 m / 16UC1 mm registered to the camera, with ``metric_source:
    depth_image``), each paired with the image nearest in time (``metric_max_offset_ms``).
Published topics (under the node's private namespace ``~/``):
    ``disparity`` (32FC1, relative, larger = nearer), ``depth/image`` (32FC1 metres, NaN invalid;
    metric reference only), ``depth/camera_info``, ``depth/colorized`` (rgb8),
    ``normals/image`` (32FC3 unit vectors, optical frame), ``normals/colorized`` (rgb8),
    ``points`` (PointCloud2 x y z rgb normal_*; metric reference only), and the same under
    ``refined/`` for detail-sharpened frames; ``scale_fit`` (lotus2_ros/msg/ScaleFit, LiDAR /
    depth-image sources, colcon builds only); ``/diagnostics``.
Parameters: one per field of :class:`~lotus2_ros.perception.config.PerceptionConfig`
    (``config/perception.yaml``).

Threads: the executor runs callbacks, which only store the latest message (latest frame wins;
an unprocessed frame that is replaced is counted as dropped). One worker thread owns the GPU:
it runs the core predictor on each new frame and, only while no frame waits, advances the
detail sharpener one transformer forward at a time — so a new frame waits at most one
sharpener step and the sharpener never stalls the core's rate.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from ..geometry.transforms import rigid_transform
from ..io.errors import MessageError
from ..perception.assembly import FrameAssembler
from ..perception.config import READ_ONLY, ConfigError, PerceptionConfig
from ..perception.messages import OUTPUT_TOPICS, REFINED_PREFIX, output_messages
from ..perception.metric import fit_reason_counter
from ..perception.pipeline import Frame, PerceptionOutput, Refinement, load_pipeline
from ..perception.stats import NodeStats
from .msg_types import rclpy_types
from .params import declare_config, on_set_parameters

NODE_NAME = "lotus2_perception"
MSG_CLASSES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
               "sensor_msgs/msg/PointCloud2": PointCloud2}
#: Subscribed reference topic per metric source.
REFERENCE_TOPICS = {"lidar": ("lidar/points", PointCloud2), "depth_image": ("depth_ref/image", Image)}
#: How long the worker waits for a frame before checking for sharpener work / shutdown.
IDLE_WAIT_S = 0.05


@dataclass
class _Pending:
    msg: Any
    compressed: bool


class LatestSlot:
    """A one-element mailbox: ``put`` replaces, ``take`` empties. Thread-safe."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: _Pending | None = None

    def put(self, item: _Pending) -> bool:
        """Store ``item``; True if it replaced one that was never taken (a dropped frame)."""
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout_s: float) -> _Pending | None:
        with self._cond:
            if self._item is None and timeout_s > 0:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def waiting(self) -> bool:
        with self._cond:
            return self._item is not None

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class PerceptionNode(Node):
    """The ROS shell around :class:`~lotus2_ros.perception.pipeline.PerceptionPipeline`."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.config: PerceptionConfig = declare_config(self, PerceptionConfig)
        self.types = rclpy_types()
        self.stats = NodeStats()
        self.pipeline = load_pipeline(self.config)  # before any subscription: fail fast
        self.backend = self.pipeline.backend
        self.add_on_set_parameters_callback(on_set_parameters(self, lambda: self.config, self._apply, READ_ONLY))

        out_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        classes = dict(MSG_CLASSES, **{"lotus2_ros/msg/ScaleFit": self.types.ScaleFit})
        if self.types.ScaleFit is None and self.config.metric_source in REFERENCE_TOPICS:
            self.get_logger().warning("lotus2_ros.msg is not built (pip install without colcon): "
                                      "~/scale_fit is not published")
        self.pubs = {}
        for topic, type_name in OUTPUT_TOPICS.items():
            if classes[type_name] is None:
                continue
            for name in (topic, REFINED_PREFIX + topic):
                self.pubs[name] = self.create_publisher(classes[type_name], "~/" + name, out_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        reliability = (ReliabilityPolicy.BEST_EFFORT if self.config.qos_reliability == "best_effort"
                       else ReliabilityPolicy.RELIABLE)
        in_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        self.assembler = FrameAssembler(self.config, self._tf_lookup())
        self._slot = LatestSlot()
        if self.config.image_transport == "compressed":
            self.create_subscription(CompressedImage, "image/compressed", lambda m: self._on_image(m, True), in_qos)
        else:
            self.create_subscription(Image, "image", lambda m: self._on_image(m, False), in_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)
        if self.config.metric_source in REFERENCE_TOPICS:
            topic, cls = REFERENCE_TOPICS[self.config.metric_source]
            ref_qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
            self.create_subscription(cls, topic, self.assembler.add_reference, ref_qos)
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)

        self._stop = threading.Event()
        self._refinement: Refinement | None = None
        self._last_refine_start = -float("inf")
        self._last_ctx = None
        self._worker = threading.Thread(target=self._run, name="lotus2_worker", daemon=True)
        self._worker.start()
        for note in self.backend.info.settings.notes:
            self.get_logger().info(f"model default: {note}")
        self.get_logger().info(
            f"ready: model {self.backend.describe()}, input "
            f"{self.resolve_topic_name('image/compressed' if self.config.image_transport == 'compressed' else 'image')}")

    # ------------------------------------------------------------------ set-up
    def _apply(self, config: PerceptionConfig) -> None:
        self.config = config
        self.assembler.config = config
        self.pipeline.reconfigure(config)

    def _tf_lookup(self):
        """``T_camera_lidar`` from TF when configured (or ``auto`` and tf2_ros is installed), else None."""
        cfg = self.config
        if cfg.metric_source != "lidar" or cfg.extrinsic_source == "parameter":
            return None
        try:
            import tf2_ros
        except ImportError:
            if cfg.extrinsic_source == "tf":
                raise ConfigError("extrinsic_source is 'tf' but tf2_ros is not installed") from None
            self.get_logger().info("tf2_ros is not installed: T_camera_lidar comes from lidar_extrinsic")
            return None
        from rclpy.duration import Duration
        from rclpy.time import Time

        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

        def lookup(camera_frame: str, lidar_frame: str, stamp_ns: int):
            try:
                t = self._tf_buffer.lookup_transform(camera_frame, lidar_frame, Time(nanoseconds=stamp_ns),
                                                     timeout=Duration(seconds=0.05))
            except tf2_ros.TransformException as err:
                self.get_logger().warning(f"no TF {lidar_frame} -> {camera_frame}: {err}", throttle_duration_sec=5.0)
                return None
            tr, q = t.transform.translation, t.transform.rotation
            return rigid_transform([tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w])

        return lookup

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_image(self, msg, compressed: bool) -> None:
        self.stats.input()
        if self._slot.put(_Pending(msg, compressed)):
            self.stats.count("frames_dropped")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.assembler.add_camera_info(msg)
        except (MessageError, ValueError) as err:
            self._bad("camera_info", err)

    def _bad(self, what: str, err: Exception) -> None:
        self.stats.count("bad_messages")
        self.stats.count(f"bad_{what}")
        self.get_logger().warning(f"dropped a bad {what} message: {err}", throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as err:  # noqa: BLE001 - the worker must survive anything a frame causes
                self.stats.count("processing_errors")
                self._refinement = None
                self.get_logger().error(f"frame processing failed: {err!r}", throttle_duration_sec=5.0)

    def _tick(self) -> None:
        refine_pending = self._refinement is not None or self._refinement_due()
        item = self._slot.take(0.0 if refine_pending else IDLE_WAIT_S)
        if item is not None:
            self._process(item)
        elif self._refinement is not None:
            if self._refinement.step():
                out = self._refinement.result()
                self._refinement = None
                self._publish(out)
        elif refine_pending and self._last_ctx is not None:
            self._refinement = self.pipeline.start_refinement(self._last_ctx)
            self._last_refine_start = time.monotonic()
            self._last_ctx = None

    def _refinement_due(self) -> bool:
        cfg = self.config
        return (cfg.sharpen_enabled and cfg.sharpen_rate_hz > 0 and self._last_ctx is not None
                and time.monotonic() - self._last_refine_start >= 1.0 / cfg.sharpen_rate_hz)

    def _process(self, item: _Pending) -> None:
        if not self._has_subscribers():
            self.stats.count("frames_skipped_no_subscribers")
            return
        frame = self._to_frame(item)
        if frame is None:
            return
        out, ctx = self.pipeline.process(frame, self._wanted())
        self._last_ctx = ctx
        self._publish(out)

    def _to_frame(self, item: _Pending) -> Frame | None:
        got = self.assembler.try_assemble(item.msg, item.compressed)
        if got.dropped == "no_camera_info":
            self.stats.count("frames_without_camera_info")
            self.get_logger().warning("waiting for camera_info; dropping images until it arrives",
                                      throttle_duration_sec=5.0)
        elif got.dropped == "bad_image":
            self._bad("image", got.error)
        elif got.reference == "unusable":
            self._bad("reference", got.error)
        elif got.reference == "missing":
            self.stats.count("frames_without_reference")
        return got.frame

    def _wanted(self) -> set[str]:
        """Output topics (core or refined) someone subscribes to: only their products are made."""
        return {t for t in OUTPUT_TOPICS
                if any(p in self.pubs and self.pubs[p].get_subscription_count() > 0
                       for p in (t, REFINED_PREFIX + t))}

    def _has_subscribers(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in self.pubs.values())

    def _publish(self, out: PerceptionOutput) -> None:
        prefix = REFINED_PREFIX if out.refined else ""
        wanted = {t for t in OUTPUT_TOPICS if prefix + t in self.pubs and self.pubs[prefix + t].get_subscription_count() > 0}
        for topic, msg in output_messages(self.types, out, wanted).items():
            self.pubs[topic].publish(msg)
        latency_ms = (self.get_clock().now().nanoseconds - out.stamp_ns) / 1e6
        self.stats.output(latency_ms, out.refined)
        if out.scale_fit is not None:
            self.stats.count("fits_valid" if out.scale_fit.valid else "fits_invalid")
            self._fit_not_used(out.scale_fit)
        self.stats.stages({("refined_" if out.refined else "") + k: v for k, v in out.timings_ms.items()})

    def _fit_not_used(self, report) -> None:
        """Why a frame's fit was not used (issue #14): counted per reason in /diagnostics, logged throttled."""
        counter = fit_reason_counter(report)
        if counter is not None:
            self.stats.count(counter)
            self.get_logger().warning(f"scale fit not used ({report.reason_label}): {report.reason}",
                                      throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        status = DiagnosticStatus(name=f"{self.get_name()}: lotus2 perception", hardware_id=str(self.backend.device))
        level, message = DiagnosticStatus.OK, "running"
        if snap["seconds_since_input"] > 5.0:
            level, message = DiagnosticStatus.WARN, "no images received"
        elif snap.get("frames_without_camera_info", 0) and self.assembler.calibration is None:
            level, message = DiagnosticStatus.WARN, "waiting for camera_info"
        elif (self.config.sharpen_enabled and self.config.sharpen_rate_hz > 0 and snap["refined_rate_hz"] == 0
              and snap["output_rate_hz"] > 0 and snap.get("frames_dropped", 0) > 0):
            level, message = DiagnosticStatus.WARN, "detail sharpener starved: the core predictor keeps the GPU busy"
        status.level, status.message = level, message
        values = {**snap, **{k: v for k, v in self.backend.describe().items()}}
        if self.backend.device.type == "cuda":
            import torch

            values["gpu_memory_allocated_mib"] = torch.cuda.memory_allocated(self.backend.device) / 2**20
            values["gpu_memory_peak_mib"] = torch.cuda.max_memory_allocated(self.backend.device) / 2**20
        status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        header = Header(stamp=self.get_clock().now().to_msg())
        self.diag_pub.publish(DiagnosticArray(header=header, status=[status]))

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop the worker (finishing at most the forward in progress) and free the model."""
        self._stop.set()
        self._slot.wake()
        self._worker.join(timeout=30.0)
        self.pipeline = None
        self.backend = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; 0 on a clean shutdown, 1 if it cannot start.

    The signals are handled here rather than by rclpy so that the worker stops (finishing the
    forward in progress) before the ROS context goes away under it.
    """
    rclpy.init(args=["perception_node", *(argv or [])], signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = PerceptionNode()
    except Exception as err:  # noqa: BLE001 - any start-up failure is reported and ends the process
        print(f"perception_node: cannot start: {err}", file=sys.stderr)
        rclpy.shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.stop()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
