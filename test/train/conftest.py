"""A tiny base model whose VAE has really been trained on synthetic images.

A random VAE cannot reconstruct anything, so pixel-space metrics of a model built on one are
noise. The trainer tests therefore use the committed demo model's small VAE (trained on
synthetic RGB, disparity and normal images; it is frozen during core/sharpener training) under
a tiny random FLUX transformer. Without the demo model (a checkout that lacks ``models/demo``)
a tiny VAE is trained for a minute instead. Built once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lotus2_ros
from lotus2_ros.model.tiny import TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG

#: Frame size of every trainer test (W x H); the model works at 48x64.
FRAME_WH = (64, 48)
DEMO_VAE = Path(lotus2_ros.__file__).resolve().parents[1] / "models" / "demo" / "base_model" / "vae"


@pytest.fixture(scope="session")
def trained_base(tmp_path_factory):
    """``BaseModelFolders(base_model, prompt)``: tiny random FLUX transformer over a trained small VAE."""
    from lotus2_ros.train.demo_model import build_base_model
    from lotus2_ros.train.vae import VaeTrainConfig

    out = tmp_path_factory.mktemp("trained_base")
    if (DEMO_VAE / "config.json").is_file():
        return build_base_model(out, transformer_config=TINY_TRANSFORMER_CONFIG, pretrained_vae=DEMO_VAE, progress=False)
    vae_train = VaeTrainConfig(steps=150, batch_size=8, crop_px=32, num_frames=24, frame_width_px=FRAME_WH[0],
                               frame_height_px=FRAME_WH[1], learning_rate=3e-3)
    return build_base_model(out, transformer_config=TINY_TRANSFORMER_CONFIG,
                            vae_config=dict(TINY_VAE_CONFIG, mid_block_add_attention=False), vae_train=vae_train,
                            progress=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run trainer tests with one intra-op thread: their tensors are tiny, so threads only add
    barriers, and on a shared runner a second thread waiting at each barrier makes a training
    step several times slower. Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
