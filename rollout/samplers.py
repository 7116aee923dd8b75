"""Prompt samplers: which B training prompts a step uses.

Contract: `next_batch(size) -> list[int]` (indices into the training rows),
`observe(indices, successes, counts)` after verification (successes = correct completions,
counts = verified completions, per selected prompt), `state_dict()` / `load_state_dict()` for
checkpoints, and `metrics()` (flat floats).

Registry: `uniform` (below) and `mopps` (rollout/mopps.py); every sampler class is built as
`cls(num_prompts, seed, config, prompts)` from the `sampler` section (`SamplerConfig`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from rollout.mopps import MoPPSConfig, MoPPSSampler


class SamplerConfig(MoPPSConfig):
    """The `sampler` section: which prompt sampler, plus MoPPS's options (docs/sampling.md)."""

    name: Literal["uniform", "mopps"] = Field(
        "uniform", description="prompt sampler: uniform epochs, or MoPPS Bayesian selection"
    )


class UniformSampler:
    """Epochs over a shuffled permutation of the training prompts (without replacement)."""

    def __init__(
        self, num_prompts: int, seed: int, config: Any = None, prompts: Sequence[str] | None = None
    ):
        """`config` and `prompts` are accepted for the registry's common signature, unused."""
        if num_prompts < 1:
            raise ValueError("UniformSampler needs at least one prompt")
        self.num_prompts = num_prompts
        self.rng = random.Random(seed)
        self.epoch, self.cursor = 0, 0
        self.order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(self.num_prompts))
        self.rng.shuffle(order)
        return order

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            if self.cursor == len(self.order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self.order = self._permutation()
            take = min(size - len(out), len(self.order) - self.cursor)
            out.extend(self.order[self.cursor : self.cursor + take])
            self.cursor += take
        return out

    def observe(self, indices: list[int], successes: list[float], counts: list[int]) -> None:
        """Uniform selection learns nothing from outcomes."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "order": list(self.order),
            "rng": self.rng.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["order"]) != self.num_prompts:
            raise ValueError(
                f"sampler state covers {len(state['order'])} prompts, "
                f"the data has {self.num_prompts}"
            )
        self.epoch, self.cursor, self.order = state["epoch"], state["cursor"], list(state["order"])
        self.rng.setstate(tuple(_tuplify(state["rng"])))

    def metrics(self) -> dict[str, float]:
        return {"sampler/epoch": self.epoch + self.cursor / self.num_prompts}


def _tuplify(x):
    """random.getstate() round-trips through JSON/pickle as lists; setstate wants tuples."""
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


SAMPLERS = {"uniform": UniformSampler, "mopps": MoPPSSampler}


def make_sampler(
    config: SamplerConfig, num_prompts: int, seed: int, prompts: Sequence[str] | None = None
):
    """The sampler the `sampler` section names. `prompts` (the training rows' texts) is only
    read by a MoPPS prior file that names prompts by text."""
    return SAMPLERS[config.name](num_prompts, seed, config, prompts)
