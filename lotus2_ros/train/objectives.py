"""The two training objectives, written on the engine's own stage methods.

Core predictor (single step, clean-data objective, latent space)::

    z_x   = encode(rgb)                                  # posterior mode, shifted and scaled
    z_y   = encode(target)                               # 3-channel disparity / normal image
    ẑ_y   = LCM(core(z_x))                               # one forward, timestep 1/1000 as at inference
    L     = Σ w·(ẑ_y − z_y)² / Σ w                       # w: valid-pixel fraction per latent pixel

Detail sharpener (noise-free rectified flow from the coarse to the fine latent)::

    z_c   = sg(LCM(core(z_x)))                           # the frozen core's coarse latent
    σ     ~ the shifted schedule family the engine integrates (see sample_sigmas)
    z_σ   = σ·z_c + (1 − σ)·z_y                          # straight path: σ = 1 coarse, σ = 0 fine
    L     = Σ w·(v(z_σ, σ) − (z_c − z_y))² / Σ w         # constant velocity of that path ("mse")
    L_rel = mean_b [Σ w·(v − (z_c − z_y))² / Σ w·(z_c − z_y)²]   # per frame, over its coarse error ("relative")

The "relative" loss weighs every frame by how much of the core's own error the sharpener removes,
not by how large that error is (doing nothing, v = 0, scores 1 on every frame). Under "mse" the
frames with large latent error dominate: on the demo model's synthetic data the indoor frames'
depth error is ~10x the street frames', so the street frames' velocity is barely trained, yet
their far pixels decide AbsRel (a 0.01 disparity error at 100 m is a 20 % depth error).

The engine integrates ``x ← x + (σ_{i+1} − σ_i)·v`` from σ = 1 to 0, so with the exact velocity
every step schedule lands on ``z_c − (z_c − z_y) = z_y``: N Euler steps of
:meth:`~lotus2_ros.model.engine.Lotus2Engine.sharpen` move the coarse prediction to the fine one.

Rollout states (``sigma_sampling="rollout"``, an option of this package; the Lotus-2 recipe is the
straight path above). On the straight path ``z_σ`` below σ = 1 holds a ``1 − σ`` share of the
target itself, which the sampler never sees: from ``z_c`` its states carry only what the earlier
steps added. A velocity that learns to separate the two halves of ``z_σ`` has nothing to separate
at inference (exposure bias). Rollout training fits the states the sampler visits instead::

    k     ~ U{0, …, N−1};  σ_0 = 1 > σ_1 > … > σ_N = 0   # the N-step inference grid
    x_0   = z_c;  x_{j+1} = x_j + (σ_{j+1} − σ_j)·sg(v(x_j, σ_j))   # the sampler, current weights
    L     = Σ w·(v(x_k, σ_k) − (x_k − z_y)/σ_k)² / Σ w  # straight from where it is to the target

At ``k = 0`` this is the straight-path loss at σ = 1; a zero velocity (a fresh LoRA) returns the
coarse prediction unchanged, and each state's target is the velocity that would reach ``z_y`` in
the remaining time, so the sampler is trained to correct its own earlier steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..model.latents import FlowSchedule, pack_latents

SIGMA_SAMPLING = ("shifted", "grid", "rollout")
SHARPENER_LOSSES = ("mse", "relative")
#: Floor of the per-frame normaliser of the relative loss (mean squared latent error): a frame the
#: core already gets right cannot blow the loss up.
RELATIVE_LOSS_FLOOR = 1e-4


def latent_weight(pixel_weight: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B,1,H,W]`` pixel weights → ``[B,1,H/f,W/f]``: the valid fraction under each latent pixel."""
    return F.avg_pool2d(pixel_weight.float(), kernel_size=factor, stride=factor)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over channels and the pixels ``weight`` (``[B,1,h,w]``, broadcast) keeps.

    An all-zero weight gives 0 (still connected to the graph, so data-parallel gradient
    reduction sees every parameter).
    """
    err = (pred.float() - target.float()) ** 2  # [B,C,h,w]
    if weight is None:
        return err.mean()
    w = weight.float().expand_as(err)
    return (w * err).sum() / w.sum().clamp_min(1e-12)


def shift_sigmas(u: torch.Tensor, schedule: FlowSchedule, image_seq_len: int) -> torch.Tensor:
    """Apply the schedule's time shift to uniform times ``u`` in (0, 1].

    The same map :meth:`FlowSchedule.sigmas` applies to ``linspace(1, 1/N, N)``: with dynamic
    shifting ``σ = e^μ / (e^μ + (1/u − 1))``, μ linear in the token count; otherwise
    ``σ = s·u / (1 + (s − 1)·u)``.
    """
    u = u.double().clamp_min(1e-12)
    if schedule.use_dynamic_shifting:
        e = math.exp(schedule.mu(image_seq_len))
        sigma = e / (e + (1.0 / u - 1.0))
    else:
        s = schedule.shift
        sigma = s * u / (1 + (s - 1) * u)
    return sigma.float()


def sample_sigmas(schedule: FlowSchedule, image_seq_len: int, batch: int, generator: torch.Generator,
                  mode: str = "shifted", grid_steps: int = 10) -> torch.Tensor:
    """Flow times ``[B]`` for the sharpener objective.

    Args:
        mode: ``"shifted"``: ``u ~ U(0, 1]`` then :func:`shift_sigmas` (the continuous family
            the inference grid is drawn from, so any step count is covered); ``"grid"``: one of
            the ``grid_steps`` sigmas the engine visits with that many steps, uniformly
            (``"rollout"`` draws its step index itself: :func:`rollout_point`).
    """
    if mode == "shifted":
        u = 1.0 - torch.rand(batch, generator=generator, dtype=torch.float64)  # (0, 1]
        return shift_sigmas(u, schedule, image_seq_len)
    if mode == "rollout":
        raise ValueError("rollout states are drawn by rollout_point, not as flow times alone")
    if mode == "grid":
        grid = torch.from_numpy(schedule.sigmas(grid_steps, image_seq_len)[:-1])  # [N], σ=1 … σ_N
        return grid[torch.randint(len(grid), (batch,), generator=generator)]
    raise ValueError(f"sigma sampling must be one of {SIGMA_SAMPLING}, got {mode!r}")


def flow_point(coarse: torch.Tensor, fine: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The straight path and its velocity: ``(σ·z_c + (1 − σ)·z_y, z_c − z_y)``; ``sigma`` ``[B]``."""
    s = sigma.to(coarse.dtype).view(-1, *([1] * (coarse.ndim - 1)))
    return s * coarse + (1 - s) * fine, coarse - fine


def rollout_point(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], coarse: torch.Tensor,
                  fine: torch.Tensor, sigmas: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A state the sampler visits and its straight velocity to the target (see the module docstring).

    Args:
        velocity: ``velocity(x [b,C,h,w], σ [b]) → [b,C,h,w]``, run here without gradients.
        coarse / fine: ``[B,C,h,w]`` float32, the coarse latent (σ = 1) and the target.
        sigmas: The inference grid ``[N+1]`` (``σ_0 = 1`` … ``σ_N = 0``).
        steps: ``[B]`` int, each sample's number of Euler steps taken before its state (``< N``).

    Returns:
        ``x_k [B,C,h,w]``, ``σ_k [B]`` and the target velocity ``(x_k − fine)/σ_k``.
    """
    n = sigmas.numel() - 1
    if steps.numel() and not (0 <= int(steps.min()) and int(steps.max()) < n):
        raise ValueError(f"rollout steps must be in 0..{n - 1}, got {steps.tolist()}")
    sigmas = sigmas.to(device=coarse.device, dtype=torch.float32)
    steps = steps.to(coarse.device)
    x = coarse.float().clone()
    with torch.no_grad():
        for j in range(int(steps.max()) if steps.numel() else 0):
            moving = (steps > j).nonzero().flatten()  # samples that take step j
            v = velocity(x[moving], sigmas[j].expand(moving.numel()))
            # Euler step in float32, as the engine's sampler takes it.
            x[moving] = x[moving] + (sigmas[j + 1] - sigmas[j]) * v.float()
    sigma = sigmas[steps]  # [B], > 0
    return x, sigma, (x - fine.float()) / sigma.view(-1, *([1] * (x.ndim - 1)))


def relative_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample ``Σ w·(pred − target)² / Σ w·target²`` (the normaliser floored at
    :data:`RELATIVE_LOSS_FLOOR` per weighted element), averaged over the batch; ``[B,C,h,w]``."""
    err = (pred.float() - target.float()) ** 2  # [B,C,h,w]
    ref = target.float() ** 2  # [B,C,h,w]
    w = torch.ones_like(err) if weight is None else weight.float().expand_as(err)
    count = w.sum(dim=(1, 2, 3))  # [B]
    num = (w * err).sum(dim=(1, 2, 3))  # [B]
    den = torch.maximum((w * ref).sum(dim=(1, 2, 3)), RELATIVE_LOSS_FLOOR * count).clamp_min(1e-12)  # [B]
    return (num / den).mean()


def sharpener_loss(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], coarse: torch.Tensor,
                   fine: torch.Tensor, sigma: torch.Tensor, weight: torch.Tensor | None = None,
                   loss: str = "mse", rollout: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The sharpener objective for any velocity model ``velocity(z_σ [B,C,h,w], σ [B]) → [B,C,h,w]``.

    ``loss``: ``"mse"`` (weighted mean over the batch) or ``"relative"`` (:func:`relative_mse`).
    ``rollout``: ``(grid [N+1], steps [B])`` to fit the sampler's own states (:func:`rollout_point`;
    ``sigma`` is then ignored) instead of the straight path at ``sigma``.
    """
    if loss not in SHARPENER_LOSSES:
        raise ValueError(f"sharpener loss must be one of {SHARPENER_LOSSES}, got {loss!r}")
    if rollout is not None:
        x, sigma, v_target = rollout_point(velocity, coarse, fine, *rollout)
    else:
        x, v_target = flow_point(coarse, fine, sigma)
    if loss == "relative":
        return relative_mse(velocity(x, sigma), v_target, weight)
    return weighted_mse(velocity(x, sigma), v_target, weight)


# ----------------------------------------------------------------------------- per-step losses
def encode_batch(engine, batch: dict, tasks: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image latent and target latents of a micro-batch, without gradients (the VAE is frozen)."""
    with torch.no_grad():
        z_x = engine.encode(batch["rgb"])  # [B,C,h,w]
        z_y = {task: engine.encode(batch[task]) for task in tasks}
    return z_x, z_y


def core_losses(engine, batch: dict, tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Core-predictor loss per task for one micro-batch (see the module docstring)."""
    z_x, z_y = encode_batch(engine, batch, tasks)
    losses = {}
    for task in tasks:
        pred = engine.lcm(engine.core(z_x, task), task)  # [B,C,h,w]
        w = latent_weight(batch[f"{task}_weight"], engine.vae_scale_factor)
        losses[task] = weighted_mse(pred, z_y[task], w)
    return losses


def sharpener_losses(engine, batch: dict, tasks: tuple[str, ...], *, sigma_sampling: str = "shifted",
                     grid_steps: int = 10, loss: str = "mse") -> dict[str, torch.Tensor]:
    """Detail-sharpener loss per task for one micro-batch; flow times come from ``batch["seed"]``."""
    z_x, z_y = encode_batch(engine, batch, tasks)
    gen = torch.Generator().manual_seed(int(batch["seed"]))
    seq_len = pack_latents(z_x[:1]).shape[1]
    losses = {}
    for task in tasks:
        with torch.no_grad():
            coarse = engine.lcm(engine.core(z_x, task), task).float()  # frozen core + LCM
        rollout = None
        if sigma_sampling == "rollout":
            grid = torch.from_numpy(engine.schedule.sigmas(grid_steps, seq_len))  # [N+1]
            rollout = (grid, torch.randint(grid_steps, (z_x.shape[0],), generator=gen))
            sigma = None
        else:
            sigma = sample_sigmas(engine.schedule, seq_len, z_x.shape[0], gen, sigma_sampling, grid_steps)
            sigma = sigma.to(coarse.device)
        w = latent_weight(batch[f"{task}_weight"], engine.vae_scale_factor)
        losses[task] = sharpener_loss(lambda x, s, t=task: engine.velocity(x, t, s), coarse, z_y[task].float(), sigma, w,
                                      loss, rollout)
    return losses


# ----------------------------------------------------------------------------- Lotus-1
def detail_preserver_count(batch: int, ratio: float) -> int:
    """Reconstruction samples added to a micro-batch of ``batch`` annotation samples (``round(ratio·B)``)."""
    return int(round(ratio * batch))


def add_noise_at(target: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                 timestep: int) -> torch.Tensor:
    """DDPM forward noising at one timestep: ``√ᾱ_t · x0 + √(1 − ᾱ_t) · ε`` (Lotus-G's training input)."""
    a = alphas_cumprod[timestep]
    return (a.sqrt() * target.double() + (1 - a).sqrt() * noise.double()).to(target.dtype)


def lotus1_losses(engine, batch: dict, task: str, *, alphas_cumprod: torch.Tensor,
                  preserver_ratio: float) -> dict[str, torch.Tensor]:
    """The Lotus-1 objective of one micro-batch (x0 prediction at timestep 999, latent space).

    With ``k = round(ratio·B)`` (the official code: ``k = B``), the U-Net sees ``B + k`` samples::

        input   = [z_x ; z_x[:k]]                         # image latents (posterior mode)
        target  = [z_y ; z_x[:k]]                         # annotation latents, then the image itself
        switch  = [[1,0]]·B ++ [[0,1]]·k                  # → [sin a, sin b, cos a, cos b]
        Lotus-G: input ← [input, √ᾱ₉₉₉·target + √(1−ᾱ₉₉₉)·ε] (8 channels; ε from batch["seed"])
        ẑ       = unet(input, 999, empty prompt, switch)  # the x0 latent
        L_task  = Σ w·(ẑ[:B] − z_y)² / Σ w                # w: valid fraction per latent pixel
        L_rec   = mean (ẑ[B:] − z_x[:k])²                 # the detail preserver (equal weight)

    Returns ``{task: L_task}`` plus ``{"reconstruction": L_rec}`` when ``k > 0``.
    """
    from ..model.lotus1 import ANNOTATION_SWITCH, RECONSTRUCTION_SWITCH, TIMESTEP, task_switcher

    with torch.no_grad():
        z_x = engine.encode(batch["rgb"])[task]  # [B,4,h,w]
        z_y = engine.encode(batch[task])[task]  # [B,4,h,w]
    b = z_x.shape[0]
    k = detail_preserver_count(b, preserver_ratio)
    cond = torch.cat([z_x, z_x[:k]])  # [B+k,4,h,w]
    target = torch.cat([z_y, z_x[:k]])  # [B+k,4,h,w]
    switch = torch.cat([task_switcher(ANNOTATION_SWITCH, b, engine.device),
                        task_switcher(RECONSTRUCTION_SWITCH, k, engine.device)])  # [B+k,4]
    unet = engine.unets[task]
    if engine.mode(task) == "g":
        gen = torch.Generator().manual_seed(int(batch["seed"]))
        noise = torch.randn(target.shape, generator=gen, dtype=torch.float32).to(target.device, target.dtype)
        x = torch.cat([cond, add_noise_at(target, noise, alphas_cumprod, TIMESTEP)], dim=1)  # [B+k,8,h,w]
    else:
        x = cond
    timestep = torch.full((b + k,), TIMESTEP, dtype=torch.long, device=x.device)
    prompt = engine.prompts[task].expand(b + k, -1, -1)
    dtype = next(unet.parameters()).dtype  # the trained U-Net's (float32), whatever the frozen VAE's
    pred = unet(x.to(dtype), timestep, encoder_hidden_states=prompt.to(dtype), class_labels=switch.to(dtype),
                return_dict=False)[0]  # [B+k,4,h,w]
    w = latent_weight(batch[f"{task}_weight"], 2 ** (len(engine.vaes[task].config.block_out_channels) - 1))
    losses = {task: weighted_mse(pred[:b], z_y, w)}
    if k:
        losses["reconstruction"] = weighted_mse(pred[b:], target[b:])
    return losses
