"""The training objectives: flow-time sampling, the sharpener's straight flow on a toy case with a
known exact solution, and the tie between the trained velocity and the engine's Euler sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lotus2_ros.model.latents import FlowSchedule
from lotus2_ros.train.objectives import (
    RELATIVE_LOSS_FLOOR,
    flow_point,
    latent_weight,
    rollout_point,
    sample_sigmas,
    sharpener_loss,
    shift_sigmas,
    weighted_mse,
)

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")


def euler(x: torch.Tensor, velocity, sigmas: np.ndarray) -> torch.Tensor:
    """The engine's integration rule: x ← x + (σ_{i+1} − σ_i)·v(x, σ_i), σ from 1 to 0."""
    for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
        x = x + float(s1 - s0) * velocity(x, torch.full((x.shape[0],), float(s0)))
    return x


def test_shifted_sigmas_are_the_family_of_the_inference_grid():
    sched = FlowSchedule()
    for seq_len in (64, 1024, 4096):
        grid = sched.sigmas(7, seq_len)[:-1]
        u = torch.from_numpy(np.linspace(1.0, 1.0 / 7, 7))
        np.testing.assert_allclose(shift_sigmas(u, sched, seq_len).numpy(), grid, rtol=1e-6)
    static = FlowSchedule(use_dynamic_shifting=False, shift=3.0)
    np.testing.assert_allclose(shift_sigmas(torch.tensor([0.5]), static, 1).numpy(), [0.75])


def test_sigma_sampling_modes():
    sched = FlowSchedule()
    gen = torch.Generator().manual_seed(0)
    s = sample_sigmas(sched, 256, 10000, gen)
    assert s.min() > 0 and s.max() <= 1
    # with mu(256) = 0.5 the shift pushes times up: median e^.5/(e^.5+1) ≈ 0.62 instead of 0.5
    assert float(s.median()) == pytest.approx(np.exp(0.5) / (np.exp(0.5) + 1), abs=0.02)
    g = sample_sigmas(sched, 256, 500, gen, mode="grid", grid_steps=4)
    assert set(np.round(g.numpy(), 6)) == set(np.round(sched.sigmas(4, 256)[:-1], 6))
    with pytest.raises(ValueError, match="sigma sampling"):
        sample_sigmas(sched, 256, 1, gen, mode="uniform")
    with pytest.raises(ValueError, match="rollout_point"):
        sample_sigmas(sched, 256, 1, gen, mode="rollout")


def test_rollout_states_of_the_exact_velocity_are_the_straight_path_and_zero_velocity_stays_coarse():
    # Toy with a known exact field: fine = coarse / 2, so on the straight path z_σ = c·(1 + σ)/2 the
    # velocity c/2 is z_σ / (1 + σ) — a function of the state alone, whichever samples a step moves.
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(5, 4, 6, 8, generator=gen)
    fine = 0.5 * coarse
    exact = lambda z, s: z / (1.0 + s.view(-1, 1, 1, 1))
    grid = torch.from_numpy(FlowSchedule().sigmas(4, 12))  # [5], 1 … 0
    steps = torch.tensor([3, 0, 2, 1, 3])
    x, sigma, target = rollout_point(exact, coarse, fine, grid, steps)
    torch.testing.assert_close(sigma, grid[steps].float())
    for i, k in enumerate(steps.tolist()):  # the sampler with the exact velocity walks the straight path
        torch.testing.assert_close(x[i], (sigma[i] * coarse[i] + (1 - sigma[i]) * fine[i]), atol=1e-5, rtol=0)
    torch.testing.assert_close(target, coarse - fine, atol=1e-4, rtol=0)
    assert sharpener_loss(exact, coarse, fine, None, rollout=(grid, steps)).item() == pytest.approx(0.0, abs=1e-8)
    # A zero velocity (a fresh LoRA) never moves: every state is the coarse latent, each target
    # the velocity that reaches the fine latent in the time left.
    x, sigma, target = rollout_point(lambda z, s: torch.zeros_like(z), coarse, fine, grid, steps)
    torch.testing.assert_close(x, coarse)
    for i, k in enumerate(steps.tolist()):
        torch.testing.assert_close(target[i], (coarse[i] - fine[i]) / grid[k].float(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rollout steps must be in 0..3"):
        rollout_point(exact, coarse, fine, grid, torch.tensor([0, 4, 1, 1, 0]))


def test_rollout_states_are_the_engine_samplers_own(tiny_engine):
    """The state after k rollout steps is what ``Lotus2Engine.iter_sharpen`` yields after k steps."""
    gen = torch.Generator().manual_seed(0)
    coarse, fine = torch.randn(3, 16, 6, 8, generator=gen), torch.randn(3, 16, 6, 8, generator=gen)
    grid = torch.from_numpy(tiny_engine.schedule.sigmas(3, 12))
    with torch.no_grad():
        sampled = [coarse] + list(tiny_engine.iter_sharpen(coarse, "depth", 3))
        x, _, _ = rollout_point(lambda z, s: tiny_engine.velocity(z, "depth", s), coarse, fine, grid,
                                torch.tensor([2, 0, 1]))
    for i, k in enumerate((2, 0, 1)):
        torch.testing.assert_close(x[i], sampled[k][i], atol=1e-5, rtol=0)


def test_toy_sharpener_trained_on_its_own_rollout_states_lands_on_the_fine_latent():
    # The toy of the straight-path test below, trained on the 3-step sampler's own states.
    torch.manual_seed(0)
    sched = FlowSchedule()
    model = ScaleByTime()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    grid = torch.from_numpy(sched.sigmas(3, 16))
    for _ in range(600):
        coarse = torch.randn(16, 4, 4, 4, generator=gen)
        loss = sharpener_loss(model, coarse, 0.5 * coarse, None, rollout=(grid, torch.randint(3, (16,), generator=gen)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    coarse = torch.randn(2, 4, 4, 4, generator=gen)
    with torch.no_grad():
        fine = euler(coarse, model, grid.numpy())
        untrained = euler(coarse, ScaleByTime(), grid.numpy())
    torch.testing.assert_close(fine, 0.5 * coarse, atol=0.01 * coarse.abs().max().item(), rtol=0)
    assert (untrained - 0.5 * coarse).abs().mean() > 10 * (fine - 0.5 * coarse).abs().mean()


def test_exact_velocity_has_zero_loss_and_euler_lands_on_the_fine_latent_for_any_step_count():
    gen = torch.Generator().manual_seed(0)
    coarse, fine = torch.randn(3, 4, 6, 8, generator=gen), torch.randn(3, 4, 6, 8, generator=gen)
    sigma = torch.tensor([0.1, 0.5, 0.9])
    x, v = flow_point(coarse, fine, sigma)
    torch.testing.assert_close(x[1], 0.5 * coarse[1] + 0.5 * fine[1])
    assert sharpener_loss(lambda *_: v, coarse, fine, sigma).item() == 0.0
    # Along the straight path the velocity is constant, so Euler is exact on any grid.
    oracle = lambda z, s: coarse - fine
    for n in (1, 3, 10):
        torch.testing.assert_close(euler(coarse, oracle, FlowSchedule().sigmas(n, 12)), fine, atol=1e-5, rtol=0)


class ScaleByTime(torch.nn.Module):
    """v(z, σ) = z · g(σ), g a small MLP: can represent the toy's exact flow."""

    def __init__(self):
        super().__init__()
        self.g = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def forward(self, z, sigma):
        return z * self.g(sigma.view(-1, 1)).view(-1, *([1] * (z.ndim - 1)))


def test_toy_sharpener_learns_the_known_flow_and_its_euler_steps_move_coarse_to_fine():
    # Toy: the fine latent is half the coarse one. On the path z_σ = c·(1+σ)/2 the exact
    # velocity is c/2 = z_σ / (1 + σ), i.e. g*(σ) = 1 / (1 + σ).
    torch.manual_seed(0)
    sched = FlowSchedule()
    model = ScaleByTime()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1500)
    gen = torch.Generator().manual_seed(1)
    for _ in range(1500):
        coarse = torch.randn(16, 4, 4, 4, generator=gen)
        sigma = sample_sigmas(sched, 16, 16, gen)
        loss = sharpener_loss(model, coarse, 0.5 * coarse, sigma)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    s = torch.linspace(0.25, 1.0, 16)  # where the shifted schedule puts its mass
    with torch.no_grad():
        g = model.g(s.view(-1, 1)).view(-1)
        np.testing.assert_allclose(g.numpy(), (1 / (1 + s)).numpy(), atol=0.02)
        coarse = torch.randn(2, 4, 4, 4, generator=gen)
        for n in (2, 10):
            fine = euler(coarse, model, sched.sigmas(n, 16))
            torch.testing.assert_close(fine, 0.5 * coarse, atol=0.03 * coarse.abs().max().item(), rtol=0)
        untrained = euler(coarse, ScaleByTime(), sched.sigmas(10, 16))
        assert (untrained - 0.5 * coarse).abs().mean() > 5 * (euler(coarse, model, sched.sigmas(10, 16)) - 0.5 * coarse).abs().mean()


def test_engine_velocity_is_what_each_sharpener_step_integrates(tiny_engine):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 6, 8, generator=gen)
    sigmas = tiny_engine.schedule.sigmas(3, 12)
    with torch.no_grad():
        stepped = next(iter(tiny_engine.iter_sharpen(latents, "depth", 3)))
        v = tiny_engine.velocity(latents, "depth", float(sigmas[0]))
    torch.testing.assert_close(stepped, latents + float(sigmas[1] - sigmas[0]) * v, atol=1e-6, rtol=0)


def test_activating_an_adapter_never_changes_what_trains(tiny_engine):
    flags = {n: p.requires_grad for n, p in tiny_engine.transformer.named_parameters()}
    with torch.no_grad():
        tiny_engine.velocity(torch.zeros(1, 16, 2, 2), "normal", 0.5)
        tiny_engine.core(torch.zeros(1, 16, 2, 2), "depth")
    assert flags == {n: p.requires_grad for n, p in tiny_engine.transformer.named_parameters()}
    assert not any(flags.values())  # the engine's adapters are frozen


def test_the_relative_sharpener_loss_weighs_every_frame_by_its_own_coarse_error():
    # Two frames whose coarse errors differ 10x: under "mse" the large one decides the loss, under
    # "relative" each frame counts by the fraction of its error left (doing nothing scores 1).
    gen = torch.Generator().manual_seed(0)
    fine = torch.randn(2, 4, 3, 5, generator=gen)
    err = torch.randn(2, 4, 3, 5, generator=gen)
    err[1] *= 10.0
    coarse, sigma = fine + err, torch.tensor([1.0, 0.5])
    exact_on_first = lambda x, s: torch.stack([err[0], torch.zeros_like(err[1])])
    exact_on_second = lambda x, s: torch.stack([torch.zeros_like(err[0]), err[1]])
    for velocity in (exact_on_first, exact_on_second):
        assert sharpener_loss(velocity, coarse, fine, sigma, loss="relative").item() == pytest.approx(0.5)
    mse_first = sharpener_loss(exact_on_first, coarse, fine, sigma, loss="mse").item()
    mse_second = sharpener_loss(exact_on_second, coarse, fine, sigma, loss="mse").item()
    assert mse_first > 50 * mse_second
    zero = lambda x, s: torch.zeros_like(x)
    assert sharpener_loss(zero, coarse, fine, sigma, loss="relative").item() == pytest.approx(1.0)
    half = lambda x, s: 0.5 * err
    assert sharpener_loss(half, coarse, fine, sigma, loss="relative").item() == pytest.approx(0.25)
    # Only weighted pixels count, in the error and in the normaliser alike.
    w = torch.ones(2, 1, 3, 5)
    w[..., 0, :] = 0
    masked = lambda x, s: torch.where(w.bool(), torch.zeros_like(err), err + 100.0)
    assert sharpener_loss(masked, coarse, fine, sigma, w, loss="relative").item() == pytest.approx(1.0)
    # A frame the core gets exactly right: the floored normaliser keeps the loss finite.
    perfect = sharpener_loss(lambda x, s: torch.ones_like(x), fine, fine, sigma, loss="relative").item()
    assert perfect == pytest.approx(1.0 / RELATIVE_LOSS_FLOOR)
    with pytest.raises(ValueError, match="sharpener loss must be one of"):
        sharpener_loss(zero, coarse, fine, sigma, loss="l1")


def test_weighted_mse_ignores_zero_weight_pixels_and_latent_weight_averages_blocks():
    pred, target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    target[..., 0, 0] = 100.0
    w = torch.ones(1, 1, 2, 2)
    w[..., 0, 0] = 0
    assert weighted_mse(pred, target, w).item() == pytest.approx(1.0)
    assert weighted_mse(pred, target, torch.zeros(1, 1, 2, 2)).item() == 0.0
    px = torch.zeros(1, 1, 16, 16)
    px[..., :8, :4] = 1
    torch.testing.assert_close(latent_weight(px, 8), torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]]))
