"""What a run writes by default (refined outputs, clouds without normals, zstd), ``--outputs``, and
that compression changes the files but not one byte of any message a reader gets back."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import yaml
from bag_helpers import TINY_SETTINGS, canonical, deserialize, fixed_config, read_bag

from lotus2_ros.bag import (
    DEFAULT_OUTPUT_PREFIX,
    BagCompression,
    OutputSelection,
    ProcessBagOptions,
    plan_bag_run,
    process_bag,
)
from lotus2_ros.bag.selection import OUTPUT_NAMES
from lotus2_ros.cli import process_bag as cli

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

BOTH = dict(tasks=["depth", "normal"], sharpen_enabled=True, sharpen_steps=1)


def _topics(path):
    return {m[0].removeprefix(DEFAULT_OUTPUT_PREFIX) for m in read_bag(path)}


def _size(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cloud_fields(path, topic="refined/points"):
    raw = next(m for m in read_bag(path) if m[0] == DEFAULT_OUTPUT_PREFIX + topic)
    return [f.name for f in deserialize(raw[3], raw[1]).fields]


@pytest.fixture(scope="module")
def runs(small_bag, tiny_engine, tmp_path_factory):
    """The small bag (depth + normal, one sharpener step, fixed metric) with the default options,
    in both storages, and in sqlite3 without compression."""
    tmp = tmp_path_factory.mktemp("outputs")
    out = {}
    for storage, compression in (("sqlite3", BagCompression()), ("mcap", BagCompression()),
                                 ("sqlite3", BagCompression("none"))):
        path = tmp / f"{storage}_{compression.format}"
        process_bag(ProcessBagOptions(small_bag.path, path, fixed_config(**BOTH), storage=storage,
                                      compression=compression), tiny_engine)
        out[storage, compression.format] = path
    return out


def test_by_default_a_sharpened_frame_gets_its_refined_outputs_only_and_clouds_without_normals(runs, small_bag):
    written = _topics(runs["sqlite3", "zstd"])
    inputs = {m[0] for m in read_bag(small_bag.path)}
    assert written - inputs == {f"refined/{t}" for t in (
        "disparity", "depth/image", "depth/camera_info", "depth/colorized", "normals/image", "normals/colorized",
        "points")}
    assert _cloud_fields(runs["sqlite3", "zstd"]) == ["x", "y", "z", "rgb"]  # normals are in normals/image


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_compression_keeps_every_message_byte_for_byte_and_makes_the_bag_smaller(runs, storage):
    compressed, plain = runs[storage, "zstd"], runs["sqlite3", "none"]
    assert canonical(read_bag(compressed)) == canonical(read_bag(plain))
    assert _size(compressed) < _size(plain)


def test_sqlite3_output_declares_rosbag2_message_compression(runs):
    info = yaml.safe_load((runs["sqlite3", "zstd"] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert (info["compression_mode"], info["compression_format"]) == ("message", "zstd")
    plain = yaml.safe_load((runs["sqlite3", "none"] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert plain["compression_mode"] == ""


def test_mcap_output_has_zstd_chunks(runs):
    from rosbags.rosbag2.storage_mcap import McapReader

    (mcap,) = runs["mcap", "zstd"].glob("*.mcap")
    reader = McapReader(mcap)
    reader.open()
    try:
        if not reader.chunks:
            reader.read_index()
        assert reader.chunks and {c.compression for c in reader.chunks} == {"zstd"}
        assert all(c.compressed_size < c.uncompressed_size for c in reader.chunks if c.uncompressed_size > 2**16)
    finally:
        reader.close()


def test_outputs_choose_the_topics_and_a_cloud_with_normals_holds_the_lean_cloud_and_more(small_bag, tiny_engine,
                                                                                         runs, tmp_path):
    options = ProcessBagOptions(small_bag.path, tmp_path / "chosen", fixed_config(**BOTH), copy_inputs=False,
                                outputs="depth,normals,point_normals")
    process_bag(options, tiny_engine)
    assert _topics(tmp_path / "chosen") == {"refined/depth/image", "refined/normals/image", "refined/points",
                                            "refined/depth/camera_info"}
    assert _cloud_fields(tmp_path / "chosen") == ["x", "y", "z", "rgb", "normal_x", "normal_y", "normal_z"]
    full = next(m for m in read_bag(tmp_path / "chosen") if m[0].endswith("refined/points"))
    lean = next(m for m in read_bag(runs["sqlite3", "zstd"]) if m[0].endswith("refined/points"))
    a, b = deserialize(full[3], full[1]), deserialize(lean[3], lean[1])
    rec_a = np.frombuffer(a.data, np.float32).reshape(-1, a.point_step // 4)
    rec_b = np.frombuffer(b.data, np.float32).reshape(-1, b.point_step // 4)
    assert b.point_step == 16 and a.point_step == 32
    assert np.array_equal(rec_a[:, :4].view(np.uint32), rec_b[:, :4].view(np.uint32))  # x y z rgb, NaN included


def test_output_selection_parses_names_and_rejects_unknown_ones():
    assert OutputSelection.parse("default") == OutputSelection()
    assert OutputSelection.parse("all").names == tuple(sorted(OUTPUT_NAMES))
    sel = OutputSelection.parse("default, point_normals")
    assert sel.cloud_normals and "depth/camera_info" in sel.topics
    assert OutputSelection.parse("points").topics == {"points", "depth/camera_info"}
    with pytest.raises(ValueError, match="unknown output.*pointz"):
        OutputSelection.parse("depth,pointz")
    with pytest.raises(ValueError, match="no output"):
        OutputSelection.parse(" , ")


def test_compression_settings_are_checked_and_part_of_what_a_resume_must_match(small_bag, tmp_path):
    with pytest.raises(ValueError, match="compression must be one of"):
        BagCompression("gzip")
    with pytest.raises(ValueError, match="level"):
        BagCompression(level=40)
    assert BagCompression(threads=0).threads >= 1
    plan = plan_bag_run(ProcessBagOptions(small_bag.path, tmp_path / "out", fixed_config()), TINY_SETTINGS)
    assert plan.settings["compression"] == ["zstd", 1] and plan.settings["outputs"] == list(OutputSelection().names)
    # Threads change nothing in the files: not part of the settings a resumed run must repeat.
    again = plan_bag_run(ProcessBagOptions(small_bag.path, tmp_path / "out", fixed_config(),
                                           compression=BagCompression(threads=3)), TINY_SETTINGS)
    assert again.settings == plan.settings
    other = plan_bag_run(ProcessBagOptions(small_bag.path, tmp_path / "out", fixed_config(),
                                           compression=BagCompression(level=3)), TINY_SETTINGS)
    assert other.settings != plan.settings  # a resume with another level is refused (see test_resume)


def test_the_command_line_maps_outputs_compression_and_core_onto_the_options(small_bag, tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([str(small_bag.path), "-o", str(tmp_path / "o"), "--outputs", "depth,points",
                              "--compression", "none", "--with-core", "--compression-threads", "2"])
    opt = cli.options_for(args, fixed_config(), args.input_bag, args.output_bag, None)
    assert opt.outputs == OutputSelection(("depth", "points")) and opt.write_core is True
    assert opt.compression == BagCompression("none", 1, 2)
    default = cli.options_for(parser.parse_args([str(small_bag.path), "-o", str(tmp_path / "o")]), fixed_config(),
                              small_bag.path, tmp_path / "o", None)
    assert default.outputs == OutputSelection() and default.write_core is False
    assert default.compression.format == "zstd" and default.compression.level == 1
    with pytest.raises(SystemExit):
        parser.parse_args([str(small_bag.path), "-o", "x", "--outputs", "nonsense"])
    with pytest.raises(SystemExit):
        parser.parse_args([str(small_bag.path), "-o", "x", "--with-core", "--refined-only"])


def test_refined_only_skips_the_core_decode_and_gives_the_refined_messages_of_a_run_with_core(small_bag,
                                                                                            tiny_engine, runs,
                                                                                            tmp_path):
    stats = process_bag(ProcessBagOptions(small_bag.path, tmp_path / "core", fixed_config(**BOTH), write_core=True,
                                          compression=BagCompression("none")), tiny_engine)
    assert "decode_depth" in stats.stage_ms and "refined_decode_depth" in stats.stage_ms
    with_core = [m for m in canonical(read_bag(tmp_path / "core")) if "/refined/" in m[0] or
                 not m[0].startswith(DEFAULT_OUTPUT_PREFIX)]
    assert with_core == canonical(read_bag(runs["sqlite3", "none"]))  # fixed metric: no filter to differ
    lean = process_bag(ProcessBagOptions(small_bag.path, tmp_path / "lean", fixed_config(**BOTH), copy_inputs=False),
                       tiny_engine)
    assert "decode_depth" not in lean.stage_ms and "refined_decode_depth" in lean.stage_ms
