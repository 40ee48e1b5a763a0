"""The Lotus-1 backend on tiny seeded models (CPU): folders, seeds, ensembles, kinds and bad weights.

Agreement with the official algorithm is checked in ``test_lotus1_reference.py``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lotus2_ros.cli.main import main
from lotus2_ros.model.backend import BackendConfig, load_backend
from lotus2_ros.model.lotus1 import PROMPT_EMBEDS_FILENAME, Lotus1Engine
from lotus2_ros.model.lotus1_folders import Lotus1FolderError, find_lotus1_folders
from lotus2_ros.perception.pipeline import Frame, offline_pipeline

HW = (40, 56)


def _image(hw=HW, seed=0):
    return (np.random.default_rng(seed).random((*hw, 3)) * 255).astype(np.uint8)


def _load(root, **kw):
    return Lotus1Engine.load(BackendConfig(family="lotus1", weights=root, **kw))


@pytest.fixture(scope="module")
def g_engine(tiny_lotus1):
    return _load(tiny_lotus1.root, process_res=64)


# ----------------------------------------------------------------------------- folders
def test_a_folder_of_pipelines_gives_both_tasks_with_their_mode_and_kind(tiny_lotus1, tiny_lotus1_d):
    g = find_lotus1_folders(tiny_lotus1.root)
    assert sorted(g) == ["depth", "normal"] and {f.mode for f in g.values()} == {"g"}
    assert g["depth"].depth_output == "disparity"  # named …-disparity, as the v2 releases
    d = find_lotus1_folders(tiny_lotus1_d.root)
    assert {f.mode for f in d.values()} == {"d"} and d["depth"].depth_output == "depth"
    one = find_lotus1_folders(tiny_lotus1.folders["normal"])  # a pipeline folder itself
    assert list(one) == ["normal"]


def test_the_engine_reports_the_official_defaults(g_engine, tiny_lotus1):
    defaults = _load(tiny_lotus1.root).info.settings
    assert (defaults.process_res, defaults.refine_steps, defaults.tasks) == (768, 0, ("depth", "normal"))
    assert g_engine.info.refinement == "ensemble" and g_engine.info.refine_tasks == ("depth", "normal")
    assert g_engine.info.depth_output == "disparity"
    # Identical VAEs are not assumed: each tiny folder has its own (different) one.
    assert g_engine.encoder_of == {"depth": "depth", "normal": "normal"}


def _copy(folder, tmp_path, name=None):
    dst = tmp_path / (name or folder.name)
    shutil.copytree(folder, dst)
    return dst


def test_a_lotus2_folder_given_as_lotus1_fails_naming_the_backend(tiny_model):
    with pytest.raises(Lotus1FolderError, match="Lotus-2 files.*--backend lotus2"):
        _load(tiny_model.weights)


def test_a_unet_with_the_wrong_input_channels_is_refused(tiny_lotus1, tmp_path):
    folder = _copy(tiny_lotus1.folders["depth"], tmp_path)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["in_channels"] = 6
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(Lotus1FolderError, match="in_channels is 6; a Lotus-1 U-Net takes 8"):
        _load(folder)


def test_a_missing_scheduler_or_prompt_cache_is_named(tiny_lotus1, tmp_path):
    folder = _copy(tiny_lotus1.folders["depth"], tmp_path)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(Lotus1FolderError, match="lacks scheduler/"):
        _load(folder)
    folder = _copy(tiny_lotus1.folders["normal"], tmp_path, "lotus-normal-x")
    (folder / PROMPT_EMBEDS_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match="export-prompt-embeds --backend lotus1"):
        _load(folder)


def test_the_task_comes_from_model_json_when_the_name_does_not_say(tiny_lotus1, tmp_path):
    folder = _copy(tiny_lotus1.folders["depth"], tmp_path, "my_robot_model")
    with pytest.raises(Lotus1FolderError, match="cannot tell the task"):
        find_lotus1_folders(folder)
    (folder / "model.json").write_text('{"tasks": ["depth"], "depth_output": "depth", "process_res": 64}')
    engine = _load(folder)
    assert engine.info.tasks == ("depth",) and engine.info.depth_output == "depth"
    assert engine.info.settings.process_res == 64


@pytest.mark.parametrize("argv, message", [
    (["--backend", "lotus1"], "Lotus-2 files"),         # the tiny Lotus-2 weights folder
    (["--backend", "lotus2"], "lacks transformer"),      # a Lotus-1 folder as FLUX base model
])
def test_the_predict_command_fails_cleanly_on_the_wrong_family(tiny_model, tiny_lotus1, tmp_path, caplog, argv,
                                                                 message):
    image = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(image), _image())
    model = (["--weights", str(tiny_model.weights)] if argv[1] == "lotus1"
             else ["--base-model", str(tiny_lotus1.folders["depth"]), "--weights", str(tiny_model.weights)])
    assert main(["predict", *argv, *model, "-o", str(tmp_path / "out"), str(image)]) == 2
    assert message in caplog.text and "Traceback" not in caplog.text


# ----------------------------------------------------------------------------- seeds and modes
def test_lotus_g_depends_on_the_seed_and_reproduces_it(tiny_lotus1):
    image = _image()
    a = offline_pipeline(_load(tiny_lotus1.root, tasks=("depth",), seed=3, process_res=64)).predict(image)
    again = offline_pipeline(_load(tiny_lotus1.root, tasks=("depth",), seed=3, process_res=64)).predict(image)
    other = offline_pipeline(_load(tiny_lotus1.root, tasks=("depth",), seed=4, process_res=64)).predict(image)
    assert np.array_equal(a.disparity, again.disparity)
    assert np.abs(a.disparity - other.disparity).max() > 1e-3


def test_lotus_d_ignores_the_seed(tiny_lotus1_d):
    image = _image()
    a = offline_pipeline(_load(tiny_lotus1_d.root, seed=1, process_res=64)).predict(image)
    b = offline_pipeline(_load(tiny_lotus1_d.root, seed=99, process_res=64)).predict(image)
    assert a.relative_kind == "depth" and a.disparity is None
    assert np.array_equal(a.relative_depth, b.relative_depth) and np.array_equal(a.normals, b.normals)


def test_lotus_d_has_no_ensemble(tiny_lotus1_d):
    engine = _load(tiny_lotus1_d.root, process_res=64)
    assert engine.info.refine_tasks == ()
    with pytest.raises(ValueError, match="refinement .* not loaded"):
        offline_pipeline(engine).predict(_image(), refine_steps=4)


# ----------------------------------------------------------------------------- ensembles
def test_an_ensemble_is_the_mean_of_its_seeds_and_its_std_is_the_uncertainty(g_engine, tiny_lotus1):
    image, K = _image(seed=2), 4
    out = offline_pipeline(g_engine).predict(image, refine_steps=K)
    assert out.refined and out.refine_steps == K
    members = [offline_pipeline(_load(tiny_lotus1.root, process_res=64, seed=k)).predict(image, refine_steps=0)
               for k in range(K)]  # each seed alone (the engine's seed is 0: members 0..3)
    stack = np.stack([m.disparity for m in members])
    np.testing.assert_allclose(out.disparity, stack.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(out.depth_uncertainty, stack.std(axis=0, ddof=1), atol=1e-5)
    assert out.depth_uncertainty.shape == HW and np.nanmin(out.depth_uncertainty) >= 0.0
    assert np.nanmean(out.depth_uncertainty) > 1e-4  # the seeds really differ
    normals = np.stack([m.normals for m in members]).mean(axis=0)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    np.testing.assert_allclose(out.normals, normals, atol=1e-4)


def test_an_ensemble_of_one_is_refused(g_engine):
    with pytest.raises(ValueError, match="at least 2 seeds"):
        offline_pipeline(g_engine).predict(_image(), refine_steps=1)


def test_a_median_ensemble_and_its_refinement_steps(g_engine, tiny_lotus1):
    pipeline = offline_pipeline(g_engine, ensemble_reduce="median", ensemble_size=3)
    assert pipeline.refine_steps == 3
    out, ctx = pipeline.process(Frame(_image(), 0, ""))
    refinement = pipeline.start_refinement(ctx)
    assert refinement.total_steps == 2  # one batched forward per task
    refined = refinement.result()
    assert refined.refined and refined.depth_uncertainty is not None
    assert not np.array_equal(refined.disparity, out.disparity)


def test_bf16_stays_close_to_fp32(tiny_lotus1, g_engine):
    image = _image(seed=5)
    ref = offline_pipeline(g_engine).predict(image, refine_steps=0)
    bf16 = _load(tiny_lotus1.root, process_res=64, dtype="bf16")
    assert next(bf16.unets["depth"].parameters()).dtype == torch.bfloat16
    got = offline_pipeline(bf16).predict(image, refine_steps=0)
    assert np.abs(got.disparity - ref.disparity).mean() < 0.02
    assert not np.array_equal(got.disparity, ref.disparity)


def test_load_backend_dispatches_on_the_family(tiny_lotus1):
    assert isinstance(load_backend(BackendConfig(family="lotus1", weights=tiny_lotus1.root, tasks=("normal",))),
                      Lotus1Engine)
    with pytest.raises(ValueError, match="takes no base model"):
        load_backend(BackendConfig(family="lotus1", weights=tiny_lotus1.root, base_model="/flux"))


def test_make_tiny_model_and_export_prompt_embeds_for_lotus1(tmp_path, capsys):
    from safetensors.torch import load_file

    assert main(["make-tiny-model", "--backend", "lotus1", "--mode", "d", "--depth-output", "depth",
                 str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.strip() == f"--backend lotus1 --weights {tmp_path / 'm'}"
    folders = find_lotus1_folders(tmp_path / "m")
    assert {t: (f.path.name, f.mode, f.depth_output) for t, f in folders.items()} == {
        "depth": ("lotus-depth-d-tiny", "d", "depth"), "normal": ("lotus-normal-d-tiny", "d", "disparity")}
    index = json.loads((folders["depth"].path / "model_index.json").read_text())
    assert index["_class_name"] == "LotusDPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    cache = folders["normal"].path / PROMPT_EMBEDS_FILENAME
    before = load_file(str(cache))["prompt_embeds"]
    assert tuple(before.shape) == (1, 2, 32)  # BOS + EOS: the empty prompt, not padded to 77
    cache.unlink()
    assert main(["export-prompt-embeds", "--backend", "lotus1", "--weights", str(tmp_path / "m")]) == 0
    assert torch.equal(load_file(str(cache))["prompt_embeds"], before)


def test_identical_vaes_are_shared_and_encoded_once(tiny_lotus1, tmp_path):
    root = tmp_path / "shared"
    shutil.copytree(tiny_lotus1.root, root)
    depth, normal = (find_lotus1_folders(root)[t].path for t in ("depth", "normal"))
    shutil.rmtree(normal / "vae")
    shutil.copytree(depth / "vae", normal / "vae")  # as the releases: the same SD2 VAE in every folder
    engine = _load(root, process_res=64)
    assert engine.encoder_of == {"depth": "depth", "normal": "depth"}
    assert engine.vaes["normal"] is engine.vaes["depth"]
    cond = engine.encode(engine.preprocess(_image()))
    assert cond["normal"] is cond["depth"]
