"""Throughput and memory of the Lotus-2 backend at the real model size (prints a table; not a test).

Builds the model **randomly initialised at the real FLUX.1-dev / Lotus-2 sizes** (12B transformer,
the FLUX VAE, rank-128 depth and rank-256 normal LoRA adapters on the official targets, LCMs,
512-token prompt embeddings) directly on the device in the chosen dtype — the same FLOPs and
memory traffic as the real weights, without downloading them — and times whole frames through
the backend's stages (preprocess → encode → core + LCM → sharpener steps → decode →
post-process, what the perception pipeline runs):

* depth alone: core only, core + 1 / 4 / 10 sharpener steps;
* depth + normal with separate forwards per task and with both tasks in one batched forward
  (``batch_tasks``), core only and core + 1 step;

at 512x512 and 768x1024 (processed at that size). It reports ms per frame (median of
``--repeats``), the transformer and VAE shares, ms per transformer forward, the peak device
memory, and the FLOP rate of a transformer forward (counted with ``torch.utils.flop_counter``)
as a fraction of the GPU's dense bf16 peak (table below, or ``--peak-tflops``). ``--compile``
compiles the transformer with ``torch.compile`` first.

    python benchmarks/gpu_throughput.py                         # CUDA, bf16, real size
    python benchmarks/gpu_throughput.py --compile --json out.json
    python benchmarks/gpu_throughput.py --device cpu --size tiny --resolutions 64x64 --repeats 1

Without CUDA it runs unchanged on the CPU (``--size tiny`` by default there: the tiny model's
widths, fp32), which the test suite does. Model families are built by :data:`BUILDERS`
(``lotus2``; Lotus-1 plugs in there once its backend exists).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the published configs in real_model_memory.py

import real_model_memory  # noqa: E402

from lotus2_ros.model.backend import DTYPES, ModelInfo, StageTimer  # noqa: E402
from lotus2_ros.model.engine import Lotus2Engine  # noqa: E402
from lotus2_ros.model.latents import FlowSchedule  # noqa: E402
from lotus2_ros.model.lcm import LocalContinuityModule  # noqa: E402
from lotus2_ros.model.prompt_embeds import PromptEmbeds  # noqa: E402
from lotus2_ros.model.spec import ModelSettings  # noqa: E402
from lotus2_ros.model.tiny import TINY_LORA_RANKS, TINY_TEXT_DIM, TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG  # noqa: E402
from lotus2_ros.model.weights import OFFICIAL_LORA_TARGETS  # noqa: E402

#: FLUX.1-dev's published configurations (``real_model_memory.py``), plus the VAE's latent scaling.
FLUX_DEV_TRANSFORMER = real_model_memory.FLUX_DEV_TRANSFORMER
FLUX_DEV_VAE = dict(real_model_memory.FLUX_DEV_VAE, scaling_factor=0.3611, shift_factor=0.1159)
SIZES = {
    "real": dict(transformer=FLUX_DEV_TRANSFORMER, vae=FLUX_DEV_VAE, ranks={"depth": 128, "normal": 256},
                 prompt=(512, 4096, 768)),
    "tiny": dict(transformer=TINY_TRANSFORMER_CONFIG, vae=TINY_VAE_CONFIG, ranks=TINY_LORA_RANKS,
                 prompt=(8, TINY_TEXT_DIM, TINY_TEXT_DIM)),
}
#: Dense bf16 tensor-core peak, TFLOP/s, by a substring of ``torch.cuda.get_device_name()`` (first match).
BF16_PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0),
                    ("L4", 121.0), ("RTX 6000 Ada", 364.0), ("4090", 165.0), ("3090", 71.0), ("A6000", 155.0),
                    ("Orin", 42.0)]


def build_lotus2(size: str, device: torch.device, dtype: torch.dtype, tasks=("depth", "normal")) -> Lotus2Engine:
    """A Lotus-2 engine with random weights at ``size`` ("real" or "tiny"), built on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from peft import LoraConfig

    spec = SIZES[size]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype, on device: no fp32 copy of 12B weights
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**spec["transformer"])
            vae = AutoencoderKL(**spec["vae"])
            for task in tasks:
                rank = spec["ranks"][task]
                for kind in ("core", "sharpener"):
                    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(OFFICIAL_LORA_TARGETS),
                                        init_lora_weights=False)  # random A and B: the adapters compute
                    transformer.add_adapter(config, adapter_name=f"{task}_{kind}")
            lcms = {task: LocalContinuityModule(vae.config.latent_channels) for task in tasks}
            tokens, t5_dim, clip_dim = spec["prompt"]
            prompt = PromptEmbeds(torch.randn(1, tokens, t5_dim), torch.randn(1, clip_dim))
    finally:
        torch.set_default_dtype(previous)
    for module in (transformer, vae, *lcms.values()):
        module.requires_grad_(False).eval()
    info = ModelInfo(family="lotus2", settings=ModelSettings(tuple(tasks), None, 10), depth_output="disparity",
                     refinement="sharpen", refine_tasks=tuple(tasks), source=f"random init ({size} size)")
    engine = Lotus2Engine(transformer, vae, lcms, prompt, FlowSchedule(), info=info, device=device, dtype=dtype)
    engine._use_adapter(f"{tasks[0]}_core")
    return engine


#: Model families this script can build: name -> builder(size, device, dtype).
BUILDERS = {"lotus2": build_lotus2}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_frame(engine, image: np.ndarray, tasks: tuple[str, ...], steps: int) -> dict[str, float]:
    """One frame through the backend's stages as the pipeline runs them; stage times in ms (+ ``frame``)."""
    timer = StageTimer(engine.device)
    _sync(engine.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        with timer("preprocess"):
            x = engine.preprocess(image)
        with timer("encode"):
            cond = engine.encode(x)
        latents = engine.predict(cond, tasks, timer)
        for step in engine.iter_refine(cond, latents, steps, timer):
            latents = step
        for task, z in latents.items():
            with timer(f"decode_{task}"):
                decoded = engine.decode(z)
            with timer(f"postprocess_{task}"):
                (engine.to_depth if task == "depth" else engine.to_normals)(decoded, image.shape[:2])
    _sync(engine.device)
    return {**timer.timings_ms, "frame": (time.perf_counter() - t0) * 1e3}


def transformer_flops(engine, latent_hw: tuple[int, int], batch: int = 1) -> float:
    """FLOPs of one transformer forward at a latent size (matmuls and attention, as torch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from lotus2_ros.model.latents import pack_latents

    h, w = latent_hw
    tokens = pack_latents(torch.zeros(batch, engine.latent_channels, h, w, device=engine.device, dtype=engine.dtype))
    timestep = torch.full([batch], 1e-3, device=engine.device, dtype=engine.dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        engine._transformer(tokens, timestep, (h, w))
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in BF16_PEAK_TFLOPS if key in name), None)


CASES = [  # (label, tasks, batched)
    ("depth", ("depth",), False),
    ("depth+normal, separate forwards", ("depth", "normal"), False),
    ("depth+normal, one batched forward", ("depth", "normal"), True),
]


def bench(engine, resolutions, depth_steps, both_steps, repeats: int, warmup: int, peak: float | None) -> list[dict]:
    """Every case at every resolution; returns one row per (resolution, case, steps)."""
    rows = []
    device = engine.device
    for h, w in resolutions:
        image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        latent_hw = (h // engine.vae_scale_factor, w // engine.vae_scale_factor)
        flops = transformer_flops(engine, latent_hw)
        for label, tasks, batched in CASES:
            engine.batch_tasks = batched
            for steps in (depth_steps if len(tasks) == 1 else both_steps):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                runs = [run_frame(engine, image, tasks, steps) for _ in range(warmup + repeats)][warmup:]
                med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
                fwd_ms = sum(v for k, v in med.items() if k.startswith(("core_", "sharpen_")))
                n_fwd = (1 + steps) * (1 if batched or len(tasks) == 1 else len(tasks))
                per_fwd = fwd_ms / n_fwd
                # Achieved rate: FLOPs of the forwards made (a batched forward does len(tasks) samples).
                sample_fwd = (1 + steps) * len(tasks)
                tflops = flops * sample_fwd / (fwd_ms / 1e3) / 1e12 if fwd_ms > 0 else 0.0
                rows.append(dict(
                    resolution=f"{w}x{h}", case=label, steps=steps, frame_ms=med["frame"],
                    frame_min_ms=min(r["frame"] for r in runs), transformer_ms=fwd_ms, forwards=n_fwd,
                    ms_per_forward=per_fwd,
                    vae_ms=sum(v for k, v in med.items() if k == "encode" or k.startswith("decode_")),
                    peak_mem_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
                    tflops=tflops, peak_fraction=tflops / peak if peak else None,
                    gflop_per_forward=flops / 1e9))
    engine.batch_tasks = True
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("| resolution | tasks | sharpener steps | ms/frame (min) | transformer ms (forwards) | ms/forward "
            "| VAE ms | peak memory | TFLOP/s | of bf16 peak |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        mem = f"{r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] is not None else "–"
        frac = f"{100 * r['peak_fraction']:.0f} %" if r["peak_fraction"] is not None else "–"
        print(f"| {r['resolution']} | {r['case']} | {r['steps']} | {r['frame_ms']:.1f} ({r['frame_min_ms']:.1f}) "
              f"| {r['transformer_ms']:.1f} ({r['forwards']}) | {r['ms_per_forward']:.1f} | {r['vae_ms']:.1f} "
              f"| {mem} | {r['tflops']:.3g} | {frac} |")


def _resolution(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"{text}: both sides must be multiples of 16")
    return h, w


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(BUILDERS), default="lotus2")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="default: real on CUDA, tiny on the CPU")
    p.add_argument("--resolutions", nargs="+", type=_resolution, default=None,
                   help="WxH, multiples of 16 (default: 512x512 768x1024 at real size, 64x64 96x128 tiny)")
    p.add_argument("--steps", nargs="+", type=int, default=[0, 1, 4, 10], help="sharpener steps, depth alone")
    p.add_argument("--both-steps", nargs="+", type=int, default=[0, 1], help="sharpener steps, both tasks")
    p.add_argument("--repeats", type=int, default=None, help="timed frames per case (default 3 on CUDA, 2 on the CPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer first")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: table)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is steadier on a busy machine)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if on_cuda else "fp32")]
    size = args.size or ("real" if on_cuda else "tiny")
    resolutions = args.resolutions or ([(512, 512), (768, 1024)] if size == "real" else [(64, 64), (96, 128)])
    repeats = args.repeats or (3 if on_cuda else 2)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")  # four adapters, on purpose
    torch.manual_seed(0)

    t0 = time.perf_counter()
    engine = BUILDERS[args.family](size, device, dtype)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in engine.transformer.parameters())
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if on_cuda else None
    name = torch.cuda.get_device_name(device) if on_cuda else "CPU"
    peak = peak_tflops(device, args.peak_tflops)
    dtype_name = str(dtype).replace("torch.", "")
    print(f"{args.family} ({size} size, random init), {name}, {dtype_name}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}; transformer + adapters {params / 1e9:.2f} B parameters"
          + (f", {weights_gib:.1f} GiB resident" if weights_gib is not None else "")
          + f"; built in {build_s:.0f} s; bf16 peak {peak or '–'} TFLOP/s")
    if args.compile:
        engine.transformer.compile()
    rows = bench(engine, resolutions, args.steps, args.both_steps, repeats, args.warmup, peak)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(dict(device=name, dtype=str(dtype), size=size, compiled=args.compile,
                                             weights_gib=weights_gib, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
