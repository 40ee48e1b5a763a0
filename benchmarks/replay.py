"""A Lotus-2 engine whose network forwards are replayed from its first results (benchmarks only).

Everything around the forwards — pre-processing, post-processing, colourising, stage timers —
runs as usual, so a benchmark measures all the non-network work in seconds instead of minutes.
Replayed at the backend interface (``encode``, ``predict``, ``iter_refine``, ``decode``), so it does
not depend on how the engine runs its forwards inside.
"""

from __future__ import annotations

from lotus2_ros.model.engine import Lotus2Engine


class ReplayEngine(Lotus2Engine):
    """The engine with its network forwards replaced by the first results (per stage, task and shape)."""

    def __init__(self, engine: Lotus2Engine):  # noqa: D107 - shares the loaded modules
        self.__dict__.update(engine.__dict__)
        self._cache: dict[tuple, object] = {}

    def _cached(self, key: tuple, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def encode(self, rgb):
        return self._cached(("encode", tuple(rgb.shape)), lambda: super(ReplayEngine, self).encode(rgb))

    def predict(self, cond, tasks, timer=None):
        out = self._cached(("predict", tuple(tasks), tuple(cond.shape)),
                           lambda: super(ReplayEngine, self).predict(cond, tasks, timer))
        return dict(out)

    def iter_refine(self, cond, latents, num_steps, timer=None):
        key = ("refine", tuple(latents), tuple(cond.shape), num_steps)
        steps = self._cached(key, lambda: list(super(ReplayEngine, self).iter_refine(cond, latents, num_steps, timer)))
        for item in steps:
            yield dict(item)

    def decode(self, latents, task=None):
        key = ("decode", tuple(latents.shape), float(latents.flatten()[0]))
        return self._cached(key, lambda: super(ReplayEngine, self).decode(latents))
