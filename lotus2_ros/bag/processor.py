"""``process_bag``: the live node's perception pipeline over a recorded bag, into a new bag.

The same code as ``perception_node`` does the work — :class:`FrameAssembler` (decoding,
camera_info checks, pairing with the reference nearest in time), :class:`PerceptionPipeline`
(preprocessing, core predictor, detail sharpener, metric fit with the temporal filter, products)
and :func:`output_messages` (the node's messages and topic names). This module only feeds it
from a bag and writes what the node would publish into another bag:

1. Plan (:func:`plan_bag_run`): open the input, choose the topics, check the output; nothing is
   written, so a bad command fails before the model is loaded.
2. Index (:func:`~lotus2_ros.bag.index.index_bag`): stamps of camera_info and reference
   messages, and the bag's TF (camera–LiDAR extrinsic).
3. Stream: read every message in log-time order, copy it to the output, and hand each image to
   the pipeline once its camera_info and reference partners have been read. Offline there is no
   real-time budget, so by default every frame gets the detail sharpener too; the core outputs
   go to ``<prefix>…`` and the sharpened ones to ``<prefix>refined/…``, as the node publishes
   them, all stamped with the image stamp (header and bag receive time alike).
4. Finish (:class:`~lotus2_ros.bag.journal.PartialRun`): everything is written under
   ``<output>.partial/`` and renamed to the output at the end; an interrupted run can resume.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.errors import MessageError
from ..io.msg_types import rosbags_types
from ..model.spec import ModelSettings
from ..perception.assembly import FrameAssembler
from ..perception.config import ConfigError, PerceptionConfig
from ..perception.export import FrameExporter
from ..perception.messages import output_messages
from ..perception.metric import MetricFitter
from ..perception.outputs import OUTPUT_TOPICS, REFINED_PREFIX, planned_output_topics
from ..perception.outputs import REFERENCE_SOURCES as _REFERENCE_SOURCES
from ..perception.pipeline import PerceptionOutput, PerceptionPipeline, model_settings
from .errors import BagError, BagReadError, BagTopicError, Interrupted, OutputExistsError
from .index import BagIndex, RecentMessages, index_bag
from .journal import Checkpoint, PartialRun, partial_path
from .reader import CAMERA_INFO_TYPE, BagTopics, InputBag, cdr_header_stamp_ns
from .stats import RunStats, is_forward
from .tf import extrinsic_lookup
from .selection import DEFAULT_SELECTION, OutputSelection
from .writer import STORAGES, BackgroundWriter, BagCompression, OutputBag

log = logging.getLogger("lotus2.process_bag")

#: Where the node publishes with the launch file's defaults (namespace ``lotus2``, node
#: ``lotus2_perception``): the names ``config/lotus2.rviz`` shows.
DEFAULT_OUTPUT_PREFIX = "/lotus2/lotus2_perception/"
#: Configuration fields a resumed attempt may change (where it runs, not what it computes).
_RESOURCE_FIELDS = ("device", "torch_threads", "host_threads", "diagnostics_period_s")
#: Raw reference / camera_info messages kept beyond those a waiting image is paired with.
_KEEP_REFERENCES = 16
_KEEP_CAMERA_INFOS = 64


@dataclass(frozen=True)
class ProcessBagOptions:
    """One bag run.

    Attributes:
        input_bag: ROS 2 bag folder (sqlite3 or mcap), or a lone ``.db3`` / ``.mcap`` file. Read only.
        output_bag: Bag folder to create.
        config: The node's parameters (``config/perception.yaml``). ``sharpen_enabled`` /
            ``sharpen_steps`` choose the sharpener; ``sharpen_rate_hz`` is not used offline.
        image_topic, camera_info_topic: None picks the bag's only candidate (see
            :meth:`InputBag.resolve_topics`).
        reference_topic: LiDAR (or depth-reference) topic; giving one while ``metric_source``
            is ``none`` selects ``lidar``.
        sharpen_every: Sharpen every n-th processed frame (1: all, the default; 0: none).
        write_core: Also write the core (unsharpened) outputs of sharpened frames (default: a
            sharpened frame gets its refined outputs only). Frames that are not sharpened always
            get their core outputs.
        outputs: Which outputs to write (:class:`~lotus2_ros.bag.selection.OutputSelection` or its
            ``--outputs`` text; default: every topic, clouds without normals).
        compression: Output compression (:class:`~lotus2_ros.bag.writer.BagCompression`;
            default zstd level 1: mcap chunk / sqlite3 message compression, lossless).
        storage: ``sqlite3`` or ``mcap``; None: as the input.
        copy_inputs: Copy every input topic into the output bag.
        output_prefix: Namespace of the output topics (the node's ``/<ns>/<node name>/``).
        export_dir: Also write per-frame files there (see :mod:`~lotus2_ros.perception.export`).
        force: Replace an existing output (only once the new one is complete) and start over.
        resume: Continue an interrupted run from its last checkpoint.
        progress: Show a progress bar on stderr.
    """

    input_bag: Path
    output_bag: Path
    config: PerceptionConfig
    image_topic: str | None = None
    camera_info_topic: str | None = None
    reference_topic: str | None = None
    sharpen_every: int = 1
    write_core: bool = False
    outputs: OutputSelection = DEFAULT_SELECTION
    compression: BagCompression = BagCompression()
    storage: str | None = None
    copy_inputs: bool = True
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    export_dir: Path | None = None
    force: bool = False
    resume: bool = False
    progress: bool = False

    def __post_init__(self):
        for name in ("input_bag", "output_bag", "export_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.storage is not None and self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES} or None, got {self.storage!r}")
        if self.sharpen_every < 0:
            raise ValueError(f"sharpen_every must be >= 0, got {self.sharpen_every}")
        if isinstance(self.outputs, str):
            object.__setattr__(self, "outputs", OutputSelection.parse(self.outputs))
        prefix = "/" + self.output_prefix.strip("/")
        object.__setattr__(self, "output_prefix", "/" if prefix == "/" else prefix + "/")


@dataclass
class BagPlan:
    """What a run will do, decided before the model is loaded.

    Attributes:
        options: The request.
        config: The effective configuration (reference source and sharpener settled).
        topics: Input topics.
        storage: Output storage.
        sharpen_steps: Sharpener steps per refined frame (0: no refined outputs).
        output_topics: Relative output topics, in the order their connections are created.
        image_count: Image messages in the bag.
        settings: Everything that determines the output (a resumed run must match it).
    """

    options: ProcessBagOptions
    config: PerceptionConfig
    topics: BagTopics
    storage: str
    sharpen_steps: int
    output_topics: list[str]
    image_count: int
    settings: dict

    @property
    def sharpening(self) -> bool:
        return self.sharpen_steps > 0 and self.options.sharpen_every > 0

    def output_topic(self, relative: str) -> str:
        return self.options.output_prefix + relative


def _check_export_dir(opt: ProcessBagOptions) -> None:
    d = opt.export_dir
    if d is not None and d.is_dir() and any(d.iterdir()) and not (opt.force or opt.resume):
        raise OutputExistsError(f"export folder {d} is not empty; pass --force to write into it anyway")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def plan_bag_run(options: ProcessBagOptions, model: ModelSettings | None = None) -> BagPlan:
    """Check the request against the input bag and settle topics, configuration and outputs.

    Args:
        options: The request.
        model: The loaded model's settings (``backend.info.settings``); None reads them from the
            model folders the configuration names, without loading the model (the command line
            plans before the slow load).

    Raises:
        BagReadError: The input is missing or unreadable.
        BagTopicError: A needed topic is missing or ambiguous, or an input topic has an output's name.
        OutputExistsError: The output would overwrite the input, or exists (or a partial run, or a
            non-empty export folder) without ``force`` / ``resume``.
        ConfigError: The configuration is inconsistent.
    """
    opt = options
    if opt.input_bag.exists():
        for what, path in (("output bag", opt.output_bag), ("export folder", opt.export_dir),
                           ("partial output", partial_path(opt.output_bag))):
            if path is not None and (_inside(path, opt.input_bag) or _inside(opt.input_bag, path)):
                raise OutputExistsError(f"the {what} {path} overlaps the input bag {opt.input_bag}; "
                                        "the input is never modified")
    PartialRun(opt.output_bag).check(force=opt.force, resume=opt.resume)
    _check_export_dir(opt)
    config = opt.config
    if opt.reference_topic is not None and config.metric_source == "none":
        config = config.replace(metric_source="lidar")
    elif opt.reference_topic is not None and config.metric_source not in _REFERENCE_SOURCES:
        raise ConfigError(f"a reference topic ({opt.reference_topic}) was given but metric_source is "
                          f"{config.metric_source!r}")
    with InputBag(opt.input_bag) as bag:
        topics = bag.resolve_topics(image=opt.image_topic, camera_info=opt.camera_info_topic,
                                    reference=opt.reference_topic, metric_source=config.metric_source,
                                    require_camera_info=config.require_camera_info)
        if config.metric_source == "lidar" and config.extrinsic_source == "tf" and not topics.tf:
            raise BagTopicError(f"input bag {opt.input_bag} has no /tf_static or /tf, but extrinsic_source is tf "
                                "(use auto or parameter with lidar_extrinsic)")
        if topics.camera_info is None and config.metric_source in _REFERENCE_SOURCES:
            raise BagTopicError(f"input bag {opt.input_bag}: metric_source {config.metric_source} needs a "
                                "camera_info topic (to project the reference into the image)")
        storage = opt.storage or bag.storage
        image_count = bag.message_count(topics.image)
        input_topics = bag.topic_types()
        fingerprint = bag.fingerprint()
    if model is None:
        try:
            model = model_settings(config)  # the model's own tasks / steps where the config leaves them open
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"cannot use the model: {err}") from None
    tasks = tuple(config.tasks) or model.tasks
    if any(t not in model.tasks for t in tasks):
        raise ConfigError(f"tasks {list(tasks)} requested but the model predicts {list(model.tasks)}")
    steps = (config.refine_setting or model.refine_steps) if config.sharpen_enabled and opt.sharpen_every > 0 else 0
    # The model's own defaults are written into the plan: a resumed run with another model differs.
    config = config.replace(sharpen_enabled=steps > 0, tasks=list(tasks),
                            **{config.refine_field: steps if steps > 0 else config.refine_setting})
    refined = steps > 0
    output_topics = planned_output_topics(config, tasks, depth_output=model.depth_output, refinement=model.refinement,
                                          core=opt.write_core or not refined or opt.sharpen_every > 1,
                                          refined=refined, camera_info=topics.camera_info is not None)
    chosen = opt.outputs.topics
    output_topics = [t for t in output_topics if t.removeprefix(REFINED_PREFIX) in chosen]
    if opt.copy_inputs:
        clash = sorted({opt.output_prefix + t for t in output_topics} & set(input_topics))
        if clash:
            raise BagTopicError(f"input bag {opt.input_bag} already has output topic(s) {', '.join(clash)} "
                                "(a processed bag?); choose another --output-prefix or --no-copy-inputs")
    settings = {
        "input": str(opt.input_bag.resolve()), "input_files": fingerprint,
        # Execution resources may differ between attempts (another GPU); everything else must not.
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESOURCE_FIELDS},
        "topics": dataclasses.asdict(topics), "storage": storage, "copy_inputs": opt.copy_inputs,
        "output_prefix": opt.output_prefix, "sharpen_steps": steps, "sharpen_every": opt.sharpen_every,
        "write_core": opt.write_core, "output_topics": output_topics, "outputs": list(opt.outputs.names),
        # The threads do not change the bytes a reader gets back; format and level change the files.
        "compression": [opt.compression.format, opt.compression.level],
        "export_dir": str(opt.export_dir.resolve()) if opt.export_dir else None,
    }
    return BagPlan(opt, config, topics, storage, steps, output_topics, image_count, settings)


def process_bag(options: ProcessBagOptions, engine: Any, *, should_stop: Callable[[], bool] | None = None,
                on_frame: Callable[[int], None] | None = None) -> RunStats:
    """Plan and run one bag with a loaded engine (see :func:`run_bag`)."""
    return run_bag(plan_bag_run(options, engine.info.settings), engine, should_stop=should_stop, on_frame=on_frame)


def run_bag(plan: BagPlan, engine: Any, *, should_stop: Callable[[], bool] | None = None,
            on_frame: Callable[[int], None] | None = None) -> RunStats:
    """Process the bag of ``plan`` with ``engine`` (loaded with the plan's tasks and sharpener).

    Args:
        plan: From :func:`plan_bag_run`.
        engine: A loaded model backend (:func:`~lotus2_ros.perception.pipeline.load_model`).
        should_stop: Polled between messages and frames; True stops the run at a consistent
            point and raises :class:`Interrupted` (the CLI sets it on SIGINT/SIGTERM).
        on_frame: Called with the number of images done after each image is finished (written
            or skipped); an exception from it stops the run like any failure (checkpointed).

    Returns:
        The counters and timings of the whole run (all attempts, when resumed).

    Raises:
        Interrupted: ``should_stop`` asked to stop; ``--resume`` continues.
        BagError: Input/output problems (the partial output is kept for ``--resume`` where possible).
    """
    return _BagRun(plan, engine, should_stop or (lambda: False), on_frame).run()


class _StopRequested(Exception):
    pass


@dataclass
class _Pending:
    """An image read from the bag, waiting for its partners or for its turn."""

    index: int
    raw: Any
    msgtype: str
    stamp_ns: int | None
    info_stamp: int | None
    ref_stamp: int | None


class _BagRun:
    def __init__(self, plan: BagPlan, engine: Any, should_stop: Callable[[], bool],
                 on_frame: Callable[[int], None] | None = None):
        self.plan = plan
        self.on_frame = on_frame
        self.opt = plan.options
        self.config = plan.config
        self.engine = engine
        self.should_stop = should_stop
        self.types = rosbags_types()
        self.stats = RunStats(images_total=plan.image_count)
        self.fitter = MetricFitter(self.config) if self.config.metric_source in _REFERENCE_SOURCES else None
        self.pipeline = PerceptionPipeline(self.config, engine, metric=self.fitter)
        self.wanted = {t.removeprefix(REFINED_PREFIX) for t in plan.output_topics}
        # Products nobody writes are not built (the exporter writes every product it gets).
        self._products = None if plan.options.export_dir else frozenset(self.wanted)
        # Progress of this attempt (see Checkpoint).
        self._read_index = 0
        self._image_index = 0
        self._images_done = 0
        self._start_messages = 0
        # True while a frame or a batch of copies is being handed to the writer: a stop then cannot
        # tell whether it was queued, so the attempt's segment is discarded instead of checkpointed.
        self._dirty = False
        self._filters_snapshot = pickle.dumps(self._temporal_state())
        self._pending: deque[_Pending] = deque()
        self._infos = RecentMessages(_KEEP_CAMERA_INFOS)
        self._refs = RecentMessages(_KEEP_REFERENCES)
        self._applied_info: int | None = None
        self._added_refs: OrderedDict[int, None] = OrderedDict()
        self._out_conns: dict[str, Any] = {}
        self._copy_conns: dict[int, Any] = {}
        self._copies: list[tuple[Any, int, Any]] = []
        self._copies_bytes = 0
        self._bytes_written = self._messages_written = 0  # by the writer thread, folded in by _flush
        self._io: BackgroundWriter | None = None
        self._out: OutputBag | None = None
        self._read_ms = 0.0
        self._t_frame_end = 0.0
        self._warned: dict[str, int] = {}
        self._bar: Any = None

    # ------------------------------------------------------------------ run
    def run(self) -> RunStats:
        opt, plan = self.opt, self.plan
        partial = PartialRun(opt.output_bag)
        partial.check(force=opt.force, resume=opt.resume)
        _check_export_dir(opt)
        checkpoint, state = partial.start(plan.settings, force=opt.force, resume=opt.resume)
        try:
            self._run(partial, checkpoint, state)
        except BaseException:
            partial.remove_if_empty()  # nothing resumable: leave no partial folder behind
            raise
        return self.stats

    def _run(self, partial: PartialRun, checkpoint: Checkpoint | None, state: bytes | None) -> None:
        opt, plan = self.opt, self.plan
        if state is not None:
            self._restore(state)
        self.stats.attempts += 1
        if checkpoint is not None and checkpoint.complete:  # finished earlier, only the rename was missing
            partial.finalize(plan.storage, self.types.typestore, opt.compression)
            return
        if checkpoint is not None:
            log.info("resuming %s: %d of %d images done", opt.output_bag, checkpoint.images_done, plan.image_count)
        t0 = time.perf_counter()
        with InputBag(opt.input_bag) as bag:
            if bag.fingerprint() != plan.settings["input_files"]:
                raise BagReadError(f"input bag {opt.input_bag} changed since the run was planned")
            t_index = time.perf_counter()
            index = index_bag(bag, plan.topics)
            self.stats.index_ms_total += (time.perf_counter() - t_index) * 1e3
            assembler_extrinsic = None
            if plan.topics.reference and self.config.metric_source == "lidar":
                assembler_extrinsic = extrinsic_lookup(index.tf, self.config.extrinsic_source,
                                                       self.config.T_camera_lidar)
            self.assembler = FrameAssembler(self.config, assembler_extrinsic)
            self.exporter = FrameExporter(opt.export_dir) if opt.export_dir else None
            seg_name, seg_path = partial.next_segment()
            out = OutputBag(seg_path, plan.storage, self.types.typestore, compression=opt.compression)
            self._io = BackgroundWriter()
            try:
                connections, typestore = bag.connections, bag.typestore
                self._io.call(lambda: self._register(out, connections, typestore))  # opens the bag
                self._open_progress(checkpoint)
                self._stream(bag, out, index, checkpoint)
                self._flush()
            except BaseException as err:
                self._close_progress()
                self.stats.wall_s += time.perf_counter() - t0
                self._stop_attempt(partial, out, seg_name)
                if isinstance(err, _StopRequested):
                    raise Interrupted(f"stopped after {self._images_done} of {plan.image_count} images; "
                                      f"continue with --resume (partial output: {partial.path})",
                                      str(partial.path)) from None
                raise
            self._io.call(out.close)
            self._io.close()
            self._close_progress()
            self.stats.wall_s += time.perf_counter() - t0
            partial.commit(Checkpoint(seg_name, self._read_index, self._images_done, complete=True), self._state())
        partial.finalize(plan.storage, self.types.typestore, opt.compression)

    def _stop_attempt(self, partial: PartialRun, out: OutputBag, seg_name: str) -> None:
        """Close the segment and commit a checkpoint if nothing was half-written; else drop the segment."""
        try:
            consistent = not self._dirty and not self._io.failed
            if consistent:
                try:
                    self._flush()  # everything queued is a whole frame or whole copies
                except BagError:
                    consistent = False
            if not consistent:
                self._io.call(out.abort)
                self._io.close()
                partial.discard_segment(seg_name)
                log.warning("stopped in the middle of a write: this attempt's output is discarded")
                return
            self._io.call(out.close)
            self._io.close()
            partial.commit(Checkpoint(seg_name, max(self._read_index, self._start_messages), self._images_done),
                           self._state())
        except Exception as err:  # noqa: BLE001 - the original error matters more
            log.error("could not save a checkpoint: %s", err)

    # ------------------------------------------------------------------ state (resume)
    def _state(self) -> bytes:
        return pickle.dumps({"filters": self._filters_snapshot, "stats": self.stats})

    def _temporal_state(self) -> tuple:
        """What carries from frame to frame: the scale filters and the relative-output aligners."""
        return self.fitter.filters if self.fitter else None, self.pipeline.aligners

    def _restore(self, state: bytes) -> None:
        doc = pickle.loads(state)  # noqa: S301 - written by this tool into the run's own folder
        self.stats = doc["stats"]
        self._filters_snapshot = doc["filters"]
        filters, aligners = pickle.loads(doc["filters"])  # noqa: S301
        if self.fitter is not None:
            self.fitter.filters = filters
        if self.pipeline.aligners is not None:
            self.pipeline.aligners = aligners

    # ------------------------------------------------------------------ connections
    def _register(self, out: OutputBag, connections: list[Any], typestore: Any) -> None:
        """Writer thread: open the segment bag and create its connections (inputs, then outputs)."""
        out.open()
        self._out = out
        if self.opt.copy_inputs:
            for c in connections:
                self._copy_conns[c.id] = out.add_copy(c, typestore)
        for rel in self.plan.output_topics:
            self._out_conns[rel] = out.add_topic(self.plan.output_topic(rel),
                                                 OUTPUT_TOPICS[rel.removeprefix(REFINED_PREFIX)])

    # ------------------------------------------------------------------ stream
    def _stream(self, bag: InputBag, out: OutputBag, index: BagIndex, start: Checkpoint | None) -> None:
        topics = self.plan.topics
        self._start_messages = start.messages_read if start else 0
        self._images_done = start.images_done if start else 0
        start_images = self._images_done
        types = bag.topic_types()
        self._ref_type = types.get(topics.reference) if topics.reference else None
        self._info_type = CAMERA_INFO_TYPE
        max_offset_ns = int(self.config.metric_max_offset_ms * 1e6)
        it = bag.messages(None if self.opt.copy_inputs else topics.needed)
        self._t_frame_end = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            if item is None:
                break
            if self.should_stop():
                raise _StopRequested
            conn, t_ns, raw = item
            if self.opt.copy_inputs and self._read_index >= self._start_messages:
                self._copy(conn, t_ns, raw)
            self._read_index += 1
            topic = conn.topic
            if topic == topics.image:
                if self._image_index >= start_images:
                    self._enqueue(conn, raw, index, max_offset_ns)
                self._image_index += 1
            elif topic == topics.camera_info or topic == topics.reference:
                store = self._infos if topic == topics.camera_info else self._refs
                try:
                    store.add(cdr_header_stamp_ns(raw), raw)
                except ValueError:
                    pass  # unreadable header: index_bag has already refused such a bag
            self._read_ms += (time.perf_counter() - t0) * 1e3
            self._drain(bag, out, final=False)
        self._drain(bag, out, final=True)

    def _enqueue(self, conn: Any, raw: Any, index: BagIndex, max_offset_ns: int) -> None:
        try:
            stamp = cdr_header_stamp_ns(raw)
        except ValueError:
            stamp = None  # decoding will report the bad message
        info = index.camera_info.nearest(stamp) if index.camera_info is not None and stamp is not None else None
        ref = (index.reference.nearest(stamp, max_offset_ns)
               if index.reference is not None and stamp is not None else None)
        if info is not None:
            self._infos.pin(info)
        if ref is not None:
            self._refs.pin(ref)
        self._pending.append(_Pending(self._image_index, raw, conn.msgtype, stamp, info, ref))

    def _ready(self, p: _Pending) -> bool:
        return ((p.info_stamp is None or p.info_stamp in self._infos.seen)
                and (p.ref_stamp is None or p.ref_stamp in self._refs.seen))

    def _drain(self, bag: InputBag, out: OutputBag, final: bool) -> None:
        while self._pending and (final or self._ready(self._pending[0])):
            if self.should_stop():
                raise _StopRequested
            p = self._pending[0]
            self._handle(bag, out, p)
            self._pending.popleft()
            if p.info_stamp is not None:
                self._infos.unpin(p.info_stamp)
            if p.ref_stamp is not None:
                self._refs.unpin(p.ref_stamp)
            self._images_done += 1
            if self.fitter is not None or self.pipeline.aligners is not None:
                self._filters_snapshot = pickle.dumps(self._temporal_state())
            self._dirty = False  # the frame is queued and counted: a consistent point again
            if self._bar is not None:
                self._bar.update(1)
                valid, total = self.stats.fit_rate("core")
                self._bar.set_postfix(skipped=self.stats.frames_skipped,
                                      fits=f"{valid}/{total}" if total else "-", refresh=False)
            if self.on_frame is not None:
                self.on_frame(self._images_done)

    # ------------------------------------------------------------------ one image
    def _warn(self, kind: str, message: str) -> None:
        n = self._warned.get(kind, 0)
        self._warned[kind] = n + 1
        if n < 3:
            log.warning("%s%s", message, " (further ones are counted in the summary)" if n == 2 else "")

    def _skip(self, p: _Pending, reason: str, detail: str) -> None:
        self.stats.skipped[reason] += 1
        self._warn(reason, f"image {p.index} (stamp {p.stamp_ns}) skipped: {detail}")
        self._t_frame_end = time.perf_counter()
        self._read_ms = 0.0

    def _handle(self, bag: InputBag, out: OutputBag, p: _Pending) -> None:
        topics = self.plan.topics
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            msg = bag.deserialize(p.raw, p.msgtype, topics.image)
        except BagReadError as err:
            self._skip(p, "image message does not deserialise", str(err))
            return
        self._prepare_partners(bag, p)
        got = self.assembler.try_assemble(msg, topics.compressed)
        if got.dropped == "no_camera_info":
            self._skip(p, "no camera_info", "no usable camera_info for it")
            return
        if got.dropped == "bad_image":
            self._skip(p, "unusable image", str(got.error))
            return
        frame = got.frame
        if got.reference == "unusable":
            self.stats.reference_missing["reference unusable"] += 1
            self._warn("reference unusable", f"image {p.index}: reference not used: {got.error}")
        elif got.reference == "missing":
            self.stats.reference_missing["no reference within metric_max_offset_ms"] += 1
        stages["decode"] = (time.perf_counter() - t0) * 1e3

        # The node's code path: core pass, then (offline: every frame) the detail sharpener. When
        # only the refined outputs are written, the core prediction is not decoded at all.
        core: PerceptionOutput | None = None
        refined: PerceptionOutput | None = None
        if self.plan.sharpening and self.stats.frames_processed % self.opt.sharpen_every == 0:
            if self.opt.write_core:
                core, ctx = self.pipeline.process(frame, self._products)
                refined = self.pipeline.start_refinement(ctx, self.plan.sharpen_steps).result()
            else:
                refined = self.pipeline.process_refined(frame, self.plan.sharpen_steps, self._products)
        else:
            core, _ = self.pipeline.process(frame, self._products)
        first = core if core is not None else refined

        # Message building, serialising, writing and exporting run on the writer thread, overlapping
        # the next frame (the outputs are not modified after the pipeline returns them).
        outs = [o for o in (core, refined) if o is not None]
        self._dirty = True
        stages["write_wait"] = self._submit_copies() if self._copies else 0.0
        stages["write_wait"] += self._io.submit("write", lambda: self._write_frame(out, first.stamp_ns, outs))
        if self.exporter is not None:
            exporter, product = self.exporter, refined if refined is not None else core
            stages["write_wait"] += self._io.submit("export", lambda: exporter.export(product))

        # Counters only once the frame is queued (a failure above leaves it to be redone).
        s = self.stats
        s.frames_processed += 1
        for o in (core, refined):
            if o is not None and o.scale_fit is not None:
                kind = "refined" if o.refined else "core"
                s.fits[f"{kind}_{'valid' if o.scale_fit.valid else 'invalid'}"] += 1
                if o.scale_fit.reason_code:
                    s.fits[f"{kind}_not_used:{o.scale_fit.reason_label}"] += 1
        stages["read"] = self._read_ms
        forward_ms = 0.0
        if core is not None:
            s.add_stages(core.timings_ms)
            forward_ms += sum(v for k, v in core.timings_ms.items() if is_forward(k))
        if refined is not None:
            s.frames_refined += 1
            s.add_stages(refined.timings_ms, prefix="refined_")
            forward_ms += sum(v for k, v in refined.timings_ms.items() if is_forward(k))
        s.add_stages(stages)
        now = time.perf_counter()
        s.frame_overhead_ms.append((now - self._t_frame_end) * 1e3 - forward_ms)
        self._t_frame_end = now
        self._read_ms = 0.0
        log.debug("frame %d/%d done: stamp %d%s", self._images_done + 1, self.plan.image_count,
                  first.stamp_ns, ", refined" if refined is not None else "")

    # ------------------------------------------------------------------ writing (see BackgroundWriter)
    def _copy(self, conn: Any, t_ns: int, raw: Any) -> None:
        """Queue the copy of an input message (sent to the writer in batches)."""
        self._copies.append((conn.id, t_ns, raw))
        self._copies_bytes += len(raw)
        self.stats.messages_copied += 1
        if len(self._copies) >= 256 or self._copies_bytes >= 32 * 2**20:
            self._dirty = True
            self._submit_copies()
            self._dirty = False

    def _submit_copies(self) -> float:
        batch, out = self._copies, self._out
        self._copies, self._copies_bytes = [], 0

        def job() -> None:
            for conn_id, t, raw in batch:
                out.write(self._copy_conns[conn_id], t, raw)

        return self._io.submit("copy", job)

    def _write_frame(self, out: OutputBag, stamp_ns: int, outputs: list[PerceptionOutput]) -> None:
        """Writer thread: the node's messages of one frame, serialised and written."""
        msgs: dict[str, Any] = {}
        for o in outputs:
            msgs.update(output_messages(self.types, o, self.wanted,
                                        cloud_normals=self.opt.outputs.cloud_normals))
        self._messages_written += len(msgs)
        for rel, m in msgs.items():
            conn = self._out_conns.get(rel)
            if conn is None:  # a topic the plan did not foresee: still written, as the node would
                conn = self._out_conns[rel] = out.add_topic(self.plan.output_topic(rel),
                                                            OUTPUT_TOPICS[rel.removeprefix(REFINED_PREFIX)])
            self._bytes_written += out.write_message(conn, stamp_ns, m)

    def _flush(self) -> None:
        """Write everything queued and fold the writer's timings into the stats."""
        if self._copies:
            self._submit_copies()
        self._io.flush()
        for kind, ms in self._io.timings:
            if kind == "copy":
                self.stats.copy_ms_total += ms
            else:
                self.stats.stage_ms.setdefault(f"{kind}_bg", []).append(ms)
        self._io.timings.clear()
        self.stats.bytes_written += self._bytes_written
        self.stats.messages_written += self._messages_written
        self._bytes_written = self._messages_written = 0

    def _prepare_partners(self, bag: InputBag, p: _Pending) -> None:
        """Give the assembler this image's camera_info and reference (as the node has them when live)."""
        topics = self.plan.topics
        if p.info_stamp is not None and p.info_stamp != self._applied_info:
            raw = self._infos.get(p.info_stamp)
            if raw is not None:
                self._applied_info = p.info_stamp
                try:
                    self.assembler.add_camera_info(bag.deserialize(raw, self._info_type, topics.camera_info))
                except (BagError, MessageError, ValueError) as err:  # the node drops a bad camera_info too
                    self._warn("camera_info", f"camera_info stamped {p.info_stamp} dropped: {err}")
        if p.ref_stamp is not None and p.ref_stamp not in self._added_refs:
            raw = self._refs.get(p.ref_stamp)
            if raw is not None:
                try:
                    self.assembler.add_reference(bag.deserialize(raw, self._ref_type, topics.reference))
                except BagError as err:
                    self._warn("reference", f"reference stamped {p.ref_stamp} dropped: {err}")
                self._added_refs[p.ref_stamp] = None
                while len(self._added_refs) > 4 * _KEEP_REFERENCES:
                    self._added_refs.popitem(last=False)

    # ------------------------------------------------------------------ progress bar
    def _open_progress(self, start: Checkpoint | None) -> None:
        if not self.opt.progress:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self.plan.image_count, initial=start.images_done if start else 0, unit="frame",
                         desc=self.opt.input_bag.name, dynamic_ncols=True, smoothing=0.05)

    def _close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
