"""process_bag end to end on synthetic bags: topics, types, counts, stamps, values, exports, storage."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_helpers import (
    NUM_FRAMES,
    TINY_SETTINGS,
    assert_same_message,
    deserialize,
    expected_outputs,
    fixed_config,
    folder_digest,
    input_rgb,
    lidar_config,
    read_bag,
)

from lotus2_ros.bag import (
    DEFAULT_OUTPUT_PREFIX,
    BagReadError,
    BagTopicError,
    InputBag,
    OutputExistsError,
    ProcessBagOptions,
    partial_path,
    plan_bag_run,
    process_bag,
    run_bag,
)
from lotus2_ros.bag.synthetic import CAMERA_FRAME, write_synthetic_bag
from lotus2_ros.bag.tf import TfTree
from lotus2_ros.io.ply import read_ply
from lotus2_ros.perception.messages import OUTPUT_TOPICS, REFINED_PREFIX

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

LIDAR_BASE = ["disparity", "depth/image", "depth/camera_info", "depth/colorized", "normals/image",
              "normals/colorized", "points", "scale_fit"]


def _outputs(messages):
    return [m for m in messages if m[0].startswith(DEFAULT_OUTPUT_PREFIX)]


# ----------------------------------------------------------------------------- the LiDAR run
def test_output_bag_has_the_node_topics_core_and_refined_with_their_types(lidar_run):
    with InputBag(lidar_run.output) as bag:
        types = bag.topic_types()
    expected = {DEFAULT_OUTPUT_PREFIX + p + t: OUTPUT_TOPICS[t] for p in ("", REFINED_PREFIX) for t in LIDAR_BASE}
    assert {t: ty for t, ty in types.items() if t.startswith(DEFAULT_OUTPUT_PREFIX)} == expected
    assert expected[DEFAULT_OUTPUT_PREFIX + "refined/scale_fit"] == "lotus2_ros/msg/ScaleFit"


def test_every_output_is_stamped_with_its_image_stamp_in_header_and_bag_time(lidar_run):
    stamps = lidar_run.source.stamps_ns
    per_topic: dict[str, list[int]] = {}
    for topic, msgtype, t, raw in _outputs(read_bag(lidar_run.output)):
        msg = deserialize(raw, msgtype)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp == t, topic
        assert msg.header.frame_id == CAMERA_FRAME, topic
        per_topic.setdefault(topic, []).append(t)
    # One message per frame on every topic that had something to say (metric ones need a valid fit).
    for rel in ("disparity", "depth/camera_info", "normals/image", "scale_fit"):
        for prefix in ("", REFINED_PREFIX):
            assert sorted(per_topic[DEFAULT_OUTPUT_PREFIX + prefix + rel]) == stamps, rel


def test_outputs_equal_the_node_pipeline_for_the_same_frames(lidar_run, tiny_engine):
    src = lidar_run.source
    # The extrinsic comes from the bag's /tf_static (base_link -> camera, base_link -> lidar): the
    # mount's transform up to rounding, and that rounding is used here too because the robust fit
    # amplifies a 1e-16 change in T to ~1e-6 in the scale.
    tree = TfTree()
    for topic, ty, _, raw in read_bag(src.path):
        if topic == "/tf_static":
            tree.add_message(deserialize(raw, ty), static=True)
    T = tree.lookup(CAMERA_FRAME, "lidar", src.stamps_ns[0])
    np.testing.assert_allclose(T, src.T_camera_lidar, atol=1e-12)
    expected = expected_outputs(tiny_engine, lidar_run.plan.config, src, input_rgb(src), sharpen_steps=1,
                                T_camera_lidar=T)
    actual = {(topic.removeprefix(DEFAULT_OUTPUT_PREFIX), t): deserialize(raw, ty)
              for topic, ty, t, raw in _outputs(read_bag(lidar_run.output))}
    assert set(actual) == set(expected)
    for key, msg in expected.items():
        assert_same_message(actual[key], msg, f"{key}", rtol=0.0)
    # Each image was paired with the LiDAR sweep taken with it although that sweep was recorded
    # 150 ms later (after the next image): every frame has a fit report.
    assert lidar_run.stats.fits["core_valid"] + lidar_run.stats.fits["core_invalid"] == NUM_FRAMES
    assert not lidar_run.stats.reference_missing


def test_input_topics_are_copied_unchanged_and_the_input_untouched(lidar_run):
    assert folder_digest(lidar_run.source.path) == lidar_run.input_digest
    original = read_bag(lidar_run.source.path)
    copied = [m for m in read_bag(lidar_run.output) if not m[0].startswith(DEFAULT_OUTPUT_PREFIX)]
    assert sorted(copied) == sorted(original)
    assert {m[0] for m in original} == {"/camera/image_raw", "/camera/camera_info", "/lidar/points", "/tf_static",
                                        "/notes"}
    assert not partial_path(lidar_run.output).exists()


def test_output_bag_embeds_the_definitions_so_readers_need_no_typestore(lidar_run):
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Reader

    with Reader(lidar_run.output) as reader:
        conn = next(c for c in reader.connections if c.msgtype == "lotus2_ros/msg/ScaleFit")
        assert "float64 scale" in conn.msgdef.data and "MSG: std_msgs/Header" in conn.msgdef.data
        assert conn.digest.startswith("RIHS01_")
        assert reader.storage.metadata.message_count > 0
    with AnyReader([lidar_run.output]) as reader:  # no default typestore: only the bag's definitions
        conn = next(c for c in reader.connections if c.msgtype == "lotus2_ros/msg/ScaleFit")
        raw = next(raw for _, _, raw in reader.messages([conn]))
        fit = reader.deserialize(raw, conn.msgtype)
        assert fit.fit_space == "disparity" and fit.num_points >= 0


def test_summary_counts_frames_fits_and_stages(lidar_run):
    s = lidar_run.stats
    assert (s.images_total, s.frames_processed, s.frames_refined, s.frames_skipped) == (NUM_FRAMES,) * 3 + (0,)
    assert s.messages_copied == len(read_bag(lidar_run.source.path))
    assert s.messages_written == len(read_bag(lidar_run.output)) - s.messages_copied and s.bytes_written > 0
    text = s.summary()
    assert f"frames processed: {NUM_FRAMES} of {NUM_FRAMES} images" in text
    assert "scale fits (core):" in text and "scale fits (refined):" in text
    for stage in ("read", "decode", "write_wait", "write_bg", "export_bg", "encode", "refined_sharpen"):
        assert any(k.startswith(stage) for k in s.stage_ms), stage
    assert len(s.frame_overhead_ms) == NUM_FRAMES and all(v > 0 for v in s.frame_overhead_ms)


def test_export_dir_has_the_files_of_every_frame_named_by_stamp(lidar_run):
    names = sorted(p.name for p in lidar_run.export.iterdir())
    stems = [f"{s:019d}" for s in lidar_run.source.stamps_ns]
    # The exported frame is the sharpened one; metric files exist for frames whose refined fit is valid.
    metric = {t for topic, _, t, _ in read_bag(lidar_run.output) if topic.endswith("/refined/depth/image")}
    assert names == sorted(f"{s}{x}" for s, stamp in zip(stems, lidar_run.source.stamps_ns, strict=True) for x in
                           (".json", "_depth.npy", "_depth.png", "_normal.npy", "_normal.png")
                           + (("_depth_m.npy", "_depth_m.png", ".ply") if stamp in metric else ()))
    stem = lidar_run.export / stems[1]
    meta = json.loads((lidar_run.export / f"{stems[1]}.json").read_text())
    assert meta["stamp_ns"] == lidar_run.source.stamps_ns[1] and meta["refined"] is True
    assert meta["frame_id"] == CAMERA_FRAME and np.allclose(meta["K"], lidar_run.source.camera.K)
    assert "relative" in meta["files"][f"{stems[1]}_depth.npy"] and "not metres" in meta["files"][f"{stems[1]}_depth.npy"]
    disparity = np.load(f"{stem}_depth.npy")  # the official relative output, as `lotus2 predict` writes it
    png = cv2.imread(f"{stem}_depth.png", cv2.IMREAD_UNCHANGED)
    assert disparity.shape == (96, 128) and disparity.dtype == np.float32
    assert png.dtype == np.uint8 and png.shape == (96, 128, 3)  # colour-mapped for viewing
    normal = np.load(f"{stem}_normal.npy")
    assert normal.shape == (96, 128, 3) and np.allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-4)
    # The exported frame is the sharpened one, as written on refined/…
    refined = next(deserialize(raw, ty) for topic, ty, t, raw in read_bag(lidar_run.output)
                   if topic.endswith("/refined/disparity") and t == lidar_run.source.stamps_ns[1])
    assert np.array_equal(np.frombuffer(bytes(refined.data), np.float32).reshape(96, 128), disparity)


# ----------------------------------------------------------------------------- compressed, mcap, fixed scale
def test_compressed_mcap_bag_gives_mcap_output_with_metric_depth_and_points(fixed_run, tiny_engine):
    with InputBag(fixed_run.output) as bag:
        assert bag.storage == "mcap"
        types = bag.topic_types()
    metric_topics = ("disparity", "depth/image", "depth/camera_info", "depth/colorized", "points")
    outputs = {t for t in types if t.startswith(DEFAULT_OUTPUT_PREFIX)}
    assert outputs == {DEFAULT_OUTPUT_PREFIX + t for t in metric_topics}
    src = fixed_run.source
    jpegs = [raw for topic, _, _, raw in read_bag(src.path) if topic == "/camera/image_raw/compressed"]
    expected = expected_outputs(tiny_engine, fixed_run.plan.config, src, input_rgb(src, jpegs), sharpen_steps=0)
    actual = {(topic.removeprefix(DEFAULT_OUTPUT_PREFIX), t): deserialize(raw, ty)
              for topic, ty, t, raw in read_bag(fixed_run.output) if topic.startswith(DEFAULT_OUTPUT_PREFIX)}
    assert set(actual) == set(expected) and len(actual) == 5 * NUM_FRAMES
    for key, msg in expected.items():
        assert_same_message(actual[key], msg, f"{key}")


def test_export_of_metric_frames_has_depth_in_metres_and_millimetres_and_a_ply(fixed_run):
    stem = fixed_run.export / f"{fixed_run.source.stamps_ns[0]:019d}"
    depth = np.load(f"{stem}_depth_m.npy")
    disparity = np.load(f"{stem}_depth.npy")
    np.testing.assert_allclose(depth, 1.0 / (disparity + 0.1), rtol=1e-5)  # fixed s = 1, t = 0.1
    mm = cv2.imread(f"{stem}_depth_m.png", cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and np.array_equal(mm, np.rint(depth.astype(np.float64) * 1000).astype(np.uint16))
    ply = read_ply(f"{stem}.ply")
    assert len(ply["x"]) == depth.size  # every pixel has a valid depth here
    assert np.allclose(np.sort(ply["z"]), np.sort(depth.reshape(-1)), rtol=1e-5)
    meta = json.loads(Path(f"{stem}.json").read_text())
    assert meta["refined"] is False and meta["scale_shift"] == [1.0, 0.1]


# ----------------------------------------------------------------------------- options
def test_no_copy_inputs_refined_only_and_another_prefix_and_storage(small_bag, tiny_engine, tmp_path):
    options = ProcessBagOptions(small_bag.path, tmp_path / "out", fixed_config(sharpen_enabled=True,
                                sharpen_steps=1), copy_inputs=False, write_core=False, output_prefix="robot/geo",
                                storage="mcap")
    stats = process_bag(options, tiny_engine)
    messages = read_bag(tmp_path / "out")
    topics = {m[0] for m in messages}
    assert topics == {f"/robot/geo/refined/{t}" for t in
                      ("disparity", "depth/image", "depth/camera_info", "depth/colorized", "points")}
    assert len(messages) == 5 * 2 and stats.frames_refined == 2
    with InputBag(tmp_path / "out") as bag:
        assert bag.storage == "mcap"


def test_sharpen_every_other_frame_writes_core_outputs_for_the_others(small_bag, tiny_engine, tmp_path):
    config = lidar_config(tasks=["depth"], metric_source="none", publish_colorized=False)
    options = ProcessBagOptions(small_bag.path, tmp_path / "out", config, copy_inputs=False, write_core=False,
                                sharpen_every=2)
    stats = process_bag(options, tiny_engine)
    times = {}
    for topic, _, t, _ in read_bag(tmp_path / "out"):
        times.setdefault(topic.removeprefix(DEFAULT_OUTPUT_PREFIX), []).append(t)
    s = small_bag.stamps_ns
    assert times == {"refined/disparity": [s[0]], "refined/depth/camera_info": [s[0]],
                     "disparity": [s[1]], "depth/camera_info": [s[1]]}
    assert (stats.frames_processed, stats.frames_refined) == (2, 1)


def test_existing_output_is_refused_without_force_and_replaced_with_it(small_bag, tiny_engine, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    src = small_bag.path
    options = ProcessBagOptions(src, out, fixed_config(), copy_inputs=False)
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        process_bag(options, tiny_engine)
    assert (out / "keep.txt").read_text() == "precious" and not partial_path(out).exists()
    options = ProcessBagOptions(src, out, fixed_config(), copy_inputs=False, force=True)
    process_bag(options, tiny_engine)
    assert not (out / "keep.txt").exists() and (out / "metadata.yaml").is_file()


def test_output_inside_the_input_bag_is_refused(lidar_bag, tmp_path):
    with pytest.raises(OutputExistsError, match="overlaps the input bag"):
        plan_bag_run(ProcessBagOptions(lidar_bag.path, lidar_bag.path / "out", lidar_config()), TINY_SETTINGS)


def test_input_topics_named_like_outputs_are_refused(lidar_run):
    # The output of a run holds the output topics already: processing it again must not clash.
    with pytest.raises(BagTopicError, match="already has output topic"):
        plan_bag_run(ProcessBagOptions(lidar_run.output, lidar_run.output.with_name("again"), lidar_config(),
                                       image_topic="/camera/image_raw", camera_info_topic="/camera/camera_info",
                                       reference_topic="/lidar/points"), TINY_SETTINGS)


def test_an_image_recorded_before_any_camera_info_gets_the_nearest_one(tiny_engine, tmp_path):
    bag = write_synthetic_bag(tmp_path / "in", num_frames=2, width=64, height=48, lidar=False, tf_static=False)
    # Rewrite the bag without the first camera_info: its image has no calibration to pair with...
    messages = [m for m in read_bag(bag.path) if not (m[0] == "/camera/camera_info" and m[2] < bag.stamps_ns[1])]
    from lotus2_ros.bag.writer import OutputBag
    from lotus2_ros.io.msg_types import rosbags_types

    with OutputBag(tmp_path / "fewer", "sqlite3", rosbags_types().typestore) as out:
        conns = {}
        for topic, ty, t, raw in messages:
            conns.setdefault(topic, out.add_topic(topic, ty))
            out.write(conns[topic], t, raw)
    # ...but the nearest camera_info in time is used (offline the whole bag is known), so none is lost.
    stats = process_bag(ProcessBagOptions(tmp_path / "fewer", tmp_path / "out", fixed_config()), tiny_engine)
    assert stats.frames_processed == 2 and stats.frames_skipped == 0
    # Without any camera_info and require_camera_info false, frames go on without calibration.
    with OutputBag(tmp_path / "none", "sqlite3", rosbags_types().typestore) as out:
        conns = {}
        for topic, ty, t, raw in messages:
            if topic != "/camera/camera_info":
                conns.setdefault(topic, out.add_topic(topic, ty))
                out.write(conns[topic], t, raw)
    with pytest.raises(BagTopicError, match="no camera_info topic"):
        plan_bag_run(ProcessBagOptions(tmp_path / "none", tmp_path / "out2", fixed_config()), TINY_SETTINGS)
    stats = process_bag(ProcessBagOptions(tmp_path / "none", tmp_path / "out2",
                                          fixed_config(require_camera_info=False)), tiny_engine)
    assert stats.frames_processed == 2
    topics = {m[0] for m in read_bag(tmp_path / "out2")}
    assert DEFAULT_OUTPUT_PREFIX + "depth/image" in topics and DEFAULT_OUTPUT_PREFIX + "points" not in topics


def test_a_failure_before_any_checkpoint_leaves_no_partial_folder(tiny_engine, tmp_path):
    bag = write_synthetic_bag(tmp_path / "in", num_frames=1, width=64, height=48, tf_static=False)
    with pytest.raises(BagTopicError, match="no /tf_static or /tf, but extrinsic_source is tf"):
        plan_bag_run(ProcessBagOptions(bag.path, tmp_path / "out", lidar_config(extrinsic_source="tf")), TINY_SETTINGS)
    plan = plan_bag_run(ProcessBagOptions(bag.path, tmp_path / "out", lidar_config()), TINY_SETTINGS)
    (bag.path / "metadata.yaml").touch()  # the input changes between planning and running
    with pytest.raises(BagReadError, match="changed since the run was planned"):
        run_bag(plan, tiny_engine)
    assert not (tmp_path / "out").exists() and not partial_path(tmp_path / "out").exists()
