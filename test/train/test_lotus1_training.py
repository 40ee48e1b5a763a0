"""Lotus-1 training on the shared trainer (``train-core --backend lotus1``), on a tiny SD2 base (CPU).

What must hold: Lotus-D and Lotus-G really fit a few fixed frames; the U-Net is built from the SD2
base as the paper does (task switcher, Lotus-G's halved 8-channel ``conv_in``); the objective is
the official one (x0 at timestep 999, the detail preserver's mixed batch, checked against an
independent computation); a resumed run continues bit-for-bit; the export in the released
layout loads with the package's Lotus-1 loader and predicts exactly what the trained module
predicts; LoRA trains only the LoRA, the task switcher and ``conv_in``; bad combinations fail
clearly.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lotus2_ros.model.backend import BackendConfig
from lotus2_ros.model.lotus1 import Lotus1Engine, task_switcher
from lotus2_ros.model.tiny_lotus1 import TINY_UNET_CONFIG, TINY_VAE_CONFIG
from lotus2_ros.perception.pipeline import offline_pipeline
from lotus2_ros.train.config import LOTUS1_LORA_TARGETS, TrainConfig
from lotus2_ros.train.data import BatchStream, SyntheticOptions
from lotus2_ros.train.lotus1_model import lotus1_unet_from_base
from lotus2_ros.train.lotus1_trainer import Lotus1Trainer
from lotus2_ros.train.objectives import lotus1_losses
from lotus2_ros.train.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*TensorBoard.*", "ignore:.*peft_config.*:UserWarning")

FRAME_WH = (64, 48)
FIXED_FRAMES = SyntheticOptions(width_px=FRAME_WH[0], height_px=FRAME_WH[1], num_scenes=1, frames_per_scene=4,
                                kinds=("indoor",))
SIN1, COS1 = float(np.sin(np.float32(1.0))), float(np.cos(np.float32(1.0)))


@pytest.fixture(scope="module")
def sd2_base(tmp_path_factory):
    """A tiny random folder in Stable Diffusion 2 layout (U-Net without task switcher, 4 channels)."""
    from lotus2_ros.train.lotus1_demo import build_sd2_base

    unet = {k: v for k, v in TINY_UNET_CONFIG.items() if k not in ("class_embed_type",
                                                                  "projection_class_embeddings_input_dim")}
    return build_sd2_base(tmp_path_factory.mktemp("sd2"), unet_config=dict(unet, in_channels=4),
                          vae_config=TINY_VAE_CONFIG, vae_train=None, progress=False)


def _config(base, out, **kw) -> TrainConfig:
    values = dict(stage="core", backend="lotus1", mode="g", base_model=base, output_dir=out, tasks=("depth",),
                  batch_size=2, learning_rate=2e-3, synthetic=FIXED_FRAMES, validate_every=0, checkpoint_every=0,
                  num_workers=0, progress=False, lr_scheduler="constant", lora_rank=4, seed=3)
    return TrainConfig(**(values | kw))


def _image(seed=0):
    return (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- model set-up
def test_the_sd2_unet_becomes_lotus_g_as_the_paper_sets_it_up(sd2_base):
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(sd2_base / "unet")
    g = lotus1_unet_from_base(base, "g", seed=0)
    assert g.config.in_channels == 8 and g.config.class_embed_type == "projection"
    assert g.config.projection_class_embeddings_input_dim == 4
    w4 = base.conv_in.weight
    torch.testing.assert_close(g.conv_in.weight, torch.cat([w4, w4], dim=1) * 0.5, rtol=0, atol=0)
    torch.testing.assert_close(g.conv_in.bias, base.conv_in.bias, rtol=0, atol=0)
    assert g.class_embedding.linear_1.in_features == 4
    assert g.class_embedding.linear_2.out_features == g.time_embedding.linear_2.out_features
    sb, sg = base.state_dict(), g.state_dict()
    assert all(torch.equal(sb[k], sg[k]) for k in sb if not k.startswith("conv_in."))
    d = lotus1_unet_from_base(base, "d", seed=0)
    assert d.config.in_channels == 4 and torch.equal(d.conv_in.weight, w4)
    again = lotus1_unet_from_base(base, "g", seed=0)  # the fresh task switcher is seeded
    assert torch.equal(again.class_embedding.linear_1.weight, g.class_embedding.linear_1.weight)
    assert lotus1_unet_from_base(g, "g") is g  # already Lotus-G: fine-tuned as it is
    with pytest.raises(ValueError, match="cannot become Lotus-D"):
        lotus1_unet_from_base(g, "d")


# ----------------------------------------------------------------------------- objective
def _captured_forward(unet):
    seen = {}

    def hook(module, args, kwargs):
        seen["x"], seen["t"] = args[0].detach().clone(), args[1]
        seen["labels"] = kwargs["class_labels"].detach().clone()

    return seen, unet.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("mode", ["d", "g"])
def test_the_detail_preserver_batch_and_the_loss_follow_the_official_step(sd2_base, tmp_path, mode):
    """Independent re-computation of one step as the official train script does it: doubled batch
    (annotation [sin1,0,cos1,1] then reconstruction [0,sin1,1,cos1]), diffusers' DDPM add_noise at
    999 for Lotus-G, x0 targets, equal-weight MSE of the two halves."""
    from diffusers import DDPMScheduler

    trainer = Trainer(_config(sd2_base, tmp_path / "t", mode=mode))
    engine = trainer.engine
    batch = BatchStream(trainer.datasets, [1.0], 2, ("depth",), seed=5).batch(0)
    seen, handle = _captured_forward(engine.unets["depth"])
    with torch.no_grad():
        losses = lotus1_losses(engine, batch, "depth", alphas_cumprod=trainer.alphas_cumprod, preserver_ratio=1.0)
    handle.remove()
    assert set(losses) == {"depth", "reconstruction"}
    x, labels = seen["x"], seen["labels"]
    assert x.shape == (4, 8 if mode == "g" else 4, 6, 8) and seen["t"].tolist() == [999] * 4
    torch.testing.assert_close(labels, torch.tensor([[SIN1, 0, COS1, 1]] * 2 + [[0, SIN1, 1, COS1]] * 2))

    # The official computation on the same batch.
    vae, unet = engine.vaes["depth"], engine.unets["depth"]
    sf = vae.config.scaling_factor
    with torch.no_grad():
        rgb = vae.encode(torch.cat([batch["rgb"], batch["rgb"]])).latent_dist.mode() * sf
        target = vae.encode(torch.cat([batch["depth"], batch["rgb"]])).latent_dist.mode() * sf
        torch.testing.assert_close(x[:, :4], rgb)
        inp = rgb
        if mode == "g":
            scheduler = DDPMScheduler.from_pretrained(sd2_base / "scheduler")
            noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(int(batch["seed"])))
            inp = torch.cat([rgb, scheduler.add_noise(target, noise, torch.tensor([999] * 4))], dim=1)
        torch.testing.assert_close(x, inp, rtol=1e-6, atol=1e-6)
        emb = engine.prompts["depth"].repeat(4, 1, 1)
        task_emb = torch.tensor([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2)
        task_emb = torch.cat([torch.sin(task_emb), torch.cos(task_emb)], dim=-1)
        pred = unet(inp, torch.tensor([999] * 4).long(), emb, class_labels=task_emb).sample
    torch.testing.assert_close(losses["depth"], F.mse_loss(pred[:2], target[:2]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(losses["reconstruction"], F.mse_loss(pred[2:], target[2:]), rtol=1e-5, atol=1e-7)


def test_the_detail_preserver_ratio_sets_the_reconstruction_share(sd2_base, tmp_path):
    trainer = Trainer(_config(sd2_base, tmp_path / "t", mode="d"))
    engine = trainer.engine
    batch = BatchStream(trainer.datasets, [1.0], 2, ("depth",), seed=5).batch(0)
    for ratio, rows in ((0.5, 3), (0.0, 2)):
        seen, handle = _captured_forward(engine.unets["depth"])
        with torch.no_grad():
            losses = lotus1_losses(engine, batch, "depth", alphas_cumprod=trainer.alphas_cumprod,
                                   preserver_ratio=ratio)
        handle.remove()
        assert seen["x"].shape[0] == rows
        assert ("reconstruction" in losses) == (ratio > 0)
        torch.testing.assert_close(seen["labels"][:2], task_switcher((1.0, 0.0), 2, torch.device("cpu")))
    torch.testing.assert_close(seen["labels"], task_switcher((1.0, 0.0), 2, torch.device("cpu")))


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("mode", ["d", "g"])
def test_lotus_d_and_g_fit_a_few_fixed_frames(sd2_base, tmp_path, mode):
    result = Trainer(_config(sd2_base, tmp_path / mode, mode=mode, full_finetune=True, max_steps=40,
                             learning_rate=1e-3)).run()
    losses = np.array([loss for _, loss in result.losses])
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[-8:].mean() < 0.6 * losses[:4].mean(), losses
    lines = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
    assert {"train/depth", "train/reconstruction", "train/loss"} <= set(lines[-1])


def test_resume_continues_bit_for_bit(sd2_base, tmp_path):
    cfg = _config(sd2_base, tmp_path / "a", max_steps=4, grad_accum=2, lr_scheduler="cosine", warmup_steps=1)
    full = Trainer(cfg).run().losses
    split = replace(cfg, output_dir=tmp_path / "b", checkpoint_every=2)
    assert Trainer(split).run().losses == full
    resumed = Trainer(split).run(resume=tmp_path / "b" / "checkpoints" / "step_00000002").losses
    assert resumed == full[2:] and [s for s, _ in resumed] == [3, 4]
    with pytest.raises(ValueError, match="other settings"):
        Trainer(replace(split, detail_preserver_ratio=0.5)).run(resume="latest")


def test_lora_trains_only_the_lora_the_task_switcher_and_conv_in(sd2_base, tmp_path):
    trainer = Trainer(_config(sd2_base, tmp_path / "lora", mode="g", max_steps=3))
    unet = trainer.module.unet
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if ".lora_" in n or n.startswith(("class_embedding.", "conv_in."))}
    assert any(".lora_A" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if ".lora_" in n} <= {"to_q", "to_k", "to_v", "0"}
    assert trainer.config.lora_targets == LOTUS1_LORA_TARGETS
    trainer.run()
    changed = {n for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    # Every LoRA B has moved off its zero start, except q and k of the mid block's self-attention:
    # at 64x48 the mid block sees a 1x1 latent, one token, and a softmax over one key has no
    # gradient with respect to q or k (whether round-off moves them under Adam is up to the kernel).
    one_token = "mid_block.attentions.0.transformer_blocks.0.attn1.to_"
    assert FRAME_WH == (64, 48)
    no_gradient = {n for n in trainable if n.startswith((one_token + "q.", one_token + "k."))}
    assert len(no_gradient) == 4  # lora_A and lora_B of to_q and to_k
    assert not any(n.endswith("lora_B.default.weight") and n not in changed for n in trainable - no_gradient)


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("mode, full", [("d", True), ("g", False)])
def test_the_export_has_the_released_layout_and_predicts_what_the_trained_module_predicts(sd2_base, tmp_path,
                                                                                          mode, full):
    cfg = _config(sd2_base, tmp_path / "run", mode=mode, full_finetune=full, max_steps=3)
    trainer = Trainer(cfg)
    assert isinstance(trainer, Lotus1Trainer)
    result = trainer.run()
    folder = result.export_weights
    assert folder.name == f"lotus-depth-{mode}-disparity" and result.export_base_model is None
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == {"g": "LotusGPipeline", "d": "LotusDPipeline"}[mode]
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["prediction_type"] == "sample"
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_cfg["in_channels"] == (8 if mode == "g" else 4) and unet_cfg["class_embed_type"] == "projection"
    for part in ("vae", "text_encoder", "tokenizer", "feature_extractor"):
        assert (folder / part).is_dir(), part
    from safetensors.torch import load_file

    assert not any("lora" in k for k in load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")))

    loaded = offline_pipeline(Lotus1Engine.load(BackendConfig(family="lotus1", weights=folder, full_resolution=True,
                                                              seed=cfg.seed)))
    assert loaded.backend.mode("depth") == mode and loaded.backend.info.depth_output == "disparity"
    rgb = _image(1)
    with torch.no_grad():
        trained = trainer.val_pipeline.predict(rgb, wanted=set())
    exported = loaded.predict(rgb, wanted=set())
    assert np.abs(trained.disparity - exported.disparity).max() <= 1e-5
    assert trained.disparity.std() > 1e-3  # a real prediction, not a constant


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    (dict(backend="lotus2", mode="g"), "Lotus-1 setting"),
    (dict(stage="sharpener"), "no detail sharpener"),
    (dict(mode=None), "needs mode"),
    (dict(tasks=("depth", "normal")), "one task per"),
    (dict(detail_preserver_ratio=1.5), "detail_preserver_ratio"),
])
def test_bad_combinations_are_refused_with_clear_errors(sd2_base, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _config(sd2_base, tmp_path, **kw)


def test_command_line_trains_lotus1_and_refuses_lotus2_only_options(sd2_base, tmp_path, capsys, caplog):
    from lotus2_ros.cli.main import main

    out = tmp_path / "cli"
    common = ["--base-model", str(sd2_base), "--max-steps", "1", "--batch-size", "1", "--num-workers", "0",
              "--synthetic-size", "64x48", "--validate-every", "0", "--no-progress"]
    assert main(["train-core", "--backend", "lotus1", "--mode", "g", "--lora-rank", "2", *common, "-o", str(out)]) == 0
    assert "--backend lotus1 --weights" in capsys.readouterr().out
    assert (out / "export" / "lotus-depth-g-disparity" / "unet" / "config.json").is_file()
    assert main(["train-core", "--mode", "g", *common, "-o", str(tmp_path / "x")]) == 2
    assert "--backend lotus1" in caplog.text
    assert main(["train-sharpener", "--backend", "lotus1", *common, "-o", str(tmp_path / "y")]) == 2
    assert "no detail sharpener" in caplog.text


def test_a_bf16_frozen_vae_trains_under_bf16_autocast_and_needs_it(sd2_base, tmp_path):
    cfg = _config(sd2_base, tmp_path / "bf16", max_steps=2, mixed_precision="bf16", base_dtype="bf16",
                  validate_every=2, val_samples=1)
    result = Trainer(cfg).run()
    assert len(result.losses) == 2 and np.isfinite([loss for _, loss in result.losses]).all()
    assert np.isfinite(result.validations[0][1]["depth_abs_rel"])
    with pytest.raises(ValueError, match="needs --mixed-precision"):
        Trainer(replace(cfg, mixed_precision="no", output_dir=tmp_path / "no"))


@pytest.mark.slow
def test_two_data_parallel_processes_train_lotus1_and_export(sd2_base, tmp_path):
    """The distributed code path for Lotus-1 (DDP over gloo on the CPU, as accelerate runs it under torchrun)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "lotus2_ros.cli.main", "train-core", "--backend", "lotus1", "--mode", "g",
           "--base-model", str(sd2_base), "--lora-rank", "2", "--max-steps", "2", "--batch-size", "1",
           "--num-workers", "0", "--synthetic-size", "64x48", "--validate-every", "2", "--val-samples", "1",
           "--checkpoint-every", "1", "--log-every", "1", "--no-progress", "--cpu", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == [1, 2]
    ckpt = out / "checkpoints" / "step_00000002"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    assert (out / "export" / "lotus-depth-g-disparity" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
