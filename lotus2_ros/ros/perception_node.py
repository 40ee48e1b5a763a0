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

Threads: the executor runs callbacks, which check an image in O(1) and store it (latest frame
wins; a valid frame that is replaced before the worker took it is counted in ``frames_dropped``).
The image subscription has a callback group of its own and the executor two threads, so the
diagnostics timer, parameter services and the other inputs never hold it up. One worker thread
owns the GPU: it runs the core predictor on each new frame and, only while no frame waits,
advances the detail sharpener one transformer forward at a time — so a new frame waits at most
one sharpener step and the sharpener never stalls the core's rate.

Start-up: the parameters are checked (unknown names refused) before the model is imported or
loaded; any failure, or SIGINT/SIGTERM while starting, ends the process with one line on stderr.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from ..geometry.transforms import rigid_transform
from ..perception.config import READ_ONLY, ConfigError, PerceptionConfig
from ..perception.metric import fit_reason_counter
from ..perception.outputs import OUTPUT_TOPICS, planned_output_topics
from ..perception.stats import NodeStats
from .params import check_overrides, declare_config, on_set_parameters

NODE_NAME = "lotus2_perception"
#: Subscribed reference topic per metric source.
REFERENCE_TOPICS = {"lidar": ("lidar/points", PointCloud2), "depth_image": ("depth_ref/image", Image)}
#: How long the worker waits for a frame before checking for sharpener work / shutdown.
IDLE_WAIT_S = 0.05
#: Images the DDS reader holds until the executor takes them. The mailbox keeps only the newest
#: (latest frame wins); this only absorbs a moment in which the executor thread waits for the
#: interpreter, so that a frame is not overwritten inside DDS before the node ever saw it.
IMAGE_READER_DEPTH = 3
#: How long the first image may wait for the first camera_info (they arrive on two topics, in
#: either order): only until the stream's first camera_info has come.
CAMERA_INFO_GRACE_S = 0.5
#: Seconds between GIL hand-offs: the worker's Python code would otherwise keep the executor
#: thread waiting up to 5 ms per hand-off (Python's default), several times per message.
SWITCH_INTERVAL_S = 0.001


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


class SequenceGaps:
    """Frames a publisher sent that never reached this subscription (per-publisher sequence gaps).

    Counts gaps between consecutive samples taken from the same publisher: lost in transport or
    overwritten in this node's DDS reader before the executor took them. Samples before the first
    one taken are not counted. Thread-safe through the caller (one subscription callback at a time).
    """

    def __init__(self):
        self._last: dict[bytes, int] = {}
        self.missed = 0

    def add(self, info: dict | None) -> int:
        """Record a sample's message info; the number of samples missed just before it."""
        if not info:
            return 0
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not seq or not gid:
            return 0
        key = bytes(gid.get("data", b""))
        last = self._last.get(key)
        self._last[key] = seq
        gap = seq - last - 1 if last is not None and seq > last else 0
        self.missed += gap
        return gap


class PerceptionNode(Node):
    """The ROS shell around :class:`~lotus2_ros.perception.pipeline.PerceptionPipeline`."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.config: PerceptionConfig = declare_config(self, PerceptionConfig)
        check_overrides(self)
        # The model stack (torch) is imported only once the parameters are known to be good.
        from ..model.quiet import quiet_third_party
        from ..perception.intake import Intake
        from ..perception.memory import retain_freed_memory
        from ..perception.pipeline import load_pipeline
        from .msg_types import rclpy_types

        quiet_third_party()
        # Each frame's buffers reuse the previous frame's pages instead of faulting in new ones.
        retain_freed_memory()
        self.types = rclpy_types()
        self.stats = NodeStats()
        self.pipeline = load_pipeline(self.config)  # before any subscription: fail fast
        self.pipeline.allocate = self.types.payload_array  # products computed into message payloads
        self.backend = self.pipeline.backend
        self.add_on_set_parameters_callback(on_set_parameters(self, lambda: self.config, self._apply, READ_ONLY))

        self._out_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self._classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
                         "sensor_msgs/msg/PointCloud2": PointCloud2, "lotus2_ros/msg/ScaleFit": self.types.ScaleFit}
        if self.types.ScaleFit is None and self.config.metric_source in REFERENCE_TOPICS:
            self.get_logger().warning("lotus2_ros.msg is not built (pip install without colcon): "
                                      "~/scale_fit is not published")
        self.pubs = {}
        self._pub_lock = threading.Lock()  # publishers change at run time (publish_colorized, ...)
        self._sync_publishers()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.extrinsic_note = ""
        self.intake = Intake(self.config, self.stats, self._tf_lookup(),
                             warn=lambda text: self.get_logger().warning(text, throttle_duration_sec=5.0))
        self._slot = LatestSlot()
        self._gaps = SequenceGaps()
        reliability = (ReliabilityPolicy.BEST_EFFORT if self.config.qos_reliability == "best_effort"
                       else ReliabilityPolicy.RELIABLE)
        image_qos = QoSProfile(depth=IMAGE_READER_DEPTH, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        in_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        events = self._image_events()
        image_group = MutuallyExclusiveCallbackGroup()
        if self.config.image_transport == "compressed":
            self.create_subscription(CompressedImage, "image/compressed", lambda m, i: self._on_image(m, i, True),
                                     image_qos, callback_group=image_group, event_callbacks=events)
        else:
            self.create_subscription(Image, "image", lambda m, i: self._on_image(m, i, False), image_qos,
                                     callback_group=image_group, event_callbacks=events)
        self._have_camera_info = threading.Event()
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)
        if self.config.metric_source in REFERENCE_TOPICS:
            topic, cls = REFERENCE_TOPICS[self.config.metric_source]
            ref_qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
            self.create_subscription(cls, topic, self.intake.reference, ref_qos)
        self._diag_timer = self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)

        self._stop = threading.Event()
        self._refinement = None
        self._last_refine_start = -float("inf")
        self._last_ctx = None
        self._worker = threading.Thread(target=self._run, name="lotus2_worker", daemon=True)
        self._worker.start()
        for note in self.backend.info.settings.notes:
            self.get_logger().info(f"model default: {note}")
        self.get_logger().info(
            f"ready: model {self.backend.describe()}, input "
            f"{self.resolve_topic_name('image/compressed' if self.config.image_transport == 'compressed' else 'image')}"
            f", outputs {sorted(self.pubs)}")

    # ------------------------------------------------------------------ set-up
    def _apply(self, config: PerceptionConfig) -> None:
        old = self.config
        self.config = config
        self.intake.config = config
        self.pipeline.reconfigure(config)
        self._sync_publishers()
        if config.diagnostics_period_s != old.diagnostics_period_s:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(config.diagnostics_period_s, self._publish_diagnostics)

    def _planned_topics(self) -> list[str]:
        """What this configuration can ever publish (``perception.outputs``): refined topics only
        when the sharpener is loaded and the model can refine."""
        info = self.backend.info
        refine = self.config.sharpen_enabled and bool(info.refine_tasks) and self.pipeline.refine_steps > 0
        return planned_output_topics(self.config, self.pipeline.tasks, refined=refine,
                                     depth_output=info.depth_output, refinement=info.refinement or "sharpen")

    def _sync_publishers(self) -> None:
        """Advertise exactly the planned outputs (they change with publish_colorized / publish_points)."""
        planned = {t for t in self._planned_topics() if self._classes[OUTPUT_TOPICS[t.split("refined/")[-1]]]}
        with self._pub_lock:
            for name in [n for n in self.pubs if n not in planned]:
                self.destroy_publisher(self.pubs.pop(name))
            for name in sorted(planned - set(self.pubs)):
                cls = self._classes[OUTPUT_TOPICS[name.split("refined/")[-1]]]
                self.pubs[name] = self.create_publisher(cls, "~/" + name, self._out_qos)

    def _image_events(self):
        """DDS's own count of samples lost on the way to the image subscription (where supported)."""
        try:
            from rclpy.event_handler import SubscriptionEventCallbacks
        except ImportError:  # pragma: no cover - older rclpy
            return None

        def lost(event) -> None:
            self.stats.count("frames_lost_transport", int(event.total_count_change))

        return SubscriptionEventCallbacks(message_lost=lost)

    def _tf_lookup(self):
        """``T_camera_lidar`` from TF when configured (or ``auto`` and tf2_ros is installed), else None."""
        cfg = self.config
        if cfg.metric_source != "lidar":
            return None
        if cfg.extrinsic_source == "parameter":
            self.extrinsic_note = "lidar_extrinsic parameter"
            return None
        try:
            import tf2_ros
        except ImportError:
            if cfg.extrinsic_source == "tf":
                raise ConfigError("extrinsic_source is 'tf' but tf2_ros is not installed") from None
            identity = bool(abs(cfg.T_camera_lidar - rigid_transform([0, 0, 0, 0, 0, 0, 1])).max() < 1e-12)
            self.extrinsic_note = ("lidar_extrinsic parameter (extrinsic_source auto, tf2_ros not installed)"
                                   + (": IDENTITY" if identity else ""))
            self.get_logger().warning(
                "extrinsic_source is 'auto' but tf2_ros is not installed: the LiDAR -> camera transform is the "
                f"lidar_extrinsic parameter {cfg.lidar_extrinsic}"
                + (", the identity: LiDAR points are projected as if the LiDAR sat in the camera's optical "
                   "frame. Install tf2_ros and publish TF, or set lidar_extrinsic with extrinsic_source: parameter"
                   if identity else ""))
            return None
        from rclpy.duration import Duration
        from rclpy.time import Time

        self.extrinsic_note = "tf"
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

    # ------------------------------------------------------------------ callbacks (executor threads)
    def _on_image(self, msg, info, compressed: bool) -> None:
        self.stats.input()
        missed = self._gaps.add(info)
        if missed:
            self.stats.count("frames_missed_upstream", missed)
        if not self.intake.check_image(msg, compressed):
            return
        if self._slot.put(_Pending(msg, compressed)):
            self.stats.count("frames_dropped")

    def _on_camera_info(self, msg) -> None:
        if self.intake.camera_info(msg):
            self._have_camera_info.set()

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
        if self.config.require_camera_info and not self._have_camera_info.is_set():
            self._have_camera_info.wait(CAMERA_INFO_GRACE_S)  # the first camera_info may trail the first image
        frame = self.intake.assemble(item.msg, item.compressed)
        if frame is None:
            return
        self.stats.count("frames_processed")
        out, ctx = self.pipeline.process(frame, self._wanted())
        self._last_ctx = ctx
        self._publish(out)

    def _wanted(self) -> set[str]:
        """Output topics (core or refined) someone subscribes to: only their products are made."""
        return {t for t in OUTPUT_TOPICS
                if any(p in self.pubs and self.pubs[p].get_subscription_count() > 0
                       for p in (t, "refined/" + t))}

    def _has_subscribers(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in list(self.pubs.values()))

    def _publish(self, out) -> None:
        from ..perception.messages import output_messages

        prefix = "refined/" if out.refined else ""
        with self._pub_lock:
            pubs = self.pubs
            wanted = {t for t in OUTPUT_TOPICS if prefix + t in pubs and pubs[prefix + t].get_subscription_count() > 0}
            for topic, msg in output_messages(self.types, out, wanted).items():
                pubs[topic].publish(msg)
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
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: lotus2 perception", hardware_id=str(self.backend.device))
        level, message = DiagnosticStatus.OK, "running"
        if snap["seconds_since_input"] > 5.0:
            level, message = DiagnosticStatus.WARN, "no images received"
        elif snap.get("frames_without_camera_info", 0) and self.intake.assembler.calibration is None:
            level, message = DiagnosticStatus.WARN, "waiting for camera_info"
        elif (self.config.sharpen_enabled and self.config.sharpen_rate_hz > 0 and snap["refined_rate_hz"] == 0
              and snap["output_rate_hz"] > 0 and snap.get("frames_dropped", 0) > 0):
            level, message = DiagnosticStatus.WARN, "detail sharpener starved: the core predictor keeps the GPU busy"
        elif "IDENTITY" in self.extrinsic_note:
            level, message = DiagnosticStatus.WARN, "LiDAR extrinsic is the identity (tf2_ros not installed)"
        status.level, status.message = level, message
        values = {**snap, **{k: v for k, v in self.backend.describe().items()}}
        if self.extrinsic_note:
            values["lidar_extrinsic_source"] = self.extrinsic_note
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
    """Run the node until SIGINT/SIGTERM; 0 on a clean shutdown (also when stopped while starting),
    1 if it cannot start (one line on stderr, no traceback).

    The signals are handled here rather than by rclpy: while starting they end the process at once
    (a model load can take minutes); once running they stop the worker (finishing the forward in
    progress) before the ROS context goes away under it.
    """
    def interrupt(*_):
        # Not an exception: the main thread may be inside a C++ call that calls back into Python
        # (torch's imports do), where an exception raised here ends in std::terminate (exit -6).
        # Nothing is published or written before the node runs, so the process just ends.
        print("perception_node: stopped while starting", file=sys.stderr, flush=True)
        os._exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    stop = threading.Event()
    try:
        rclpy.init(args=["perception_node", *(argv or [])], signal_handler_options=SignalHandlerOptions.NO)
    except Exception as err:  # noqa: BLE001 - e.g. a missing or malformed --params-file
        print(f"perception_node: cannot start: bad arguments: {_one_line(err)}", file=sys.stderr)
        return 1
    try:
        node = PerceptionNode()
    except Exception as err:  # noqa: BLE001 - any start-up failure is reported and ends the process
        print(f"perception_node: cannot start: {_one_line(err)}", file=sys.stderr)
        rclpy.shutdown()
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.stop()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__
