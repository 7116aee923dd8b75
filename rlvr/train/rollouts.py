"""`Rollouts`: what one generation round of a step produced, typed, how rounds merge, and how a
batch is stored in a checkpoint (the batch in flight under trainer.async_mode=one_step_off)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from rlvr.train.scoring import GroupStats, Scores
from rollout.types import Completions


@dataclass
class Rollouts:
    """P prompts and their (possibly DARS-expanded) groups of N completions in all.

    idx:      the prompts' rows in the training data.
    prompts:  their token ids.
    comps:    the completions; comps.prompt_index_N points into 0..P-1.
    scores:   the verifier's verdicts, one per completion.
    stats:    per-group outcomes of the final (expanded) groups.
    extra_P:  long [P], completions the rollout schedule added to each prompt.
    admit_P:  bool [P], groups that enter the update (the gate's decision).
    metrics:  the sampler's, schedule's and gate's metrics and the phase times (time/*) of the
              rounds, taken when they finished (the step that trains on the batch logs them).
    """

    idx: list[int]
    prompts: list[list[int]]
    comps: Completions
    scores: Scores
    stats: GroupStats
    extra_P: torch.Tensor
    admit_P: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.idx)

    @staticmethod
    def merge(rounds: list[Rollouts]) -> Rollouts:
        """All rounds of a step as one batch (group indices offset by earlier rounds' prompts)."""
        offsets = list(itertools.accumulate([0] + [len(r) for r in rounds[:-1]]))
        return Rollouts(
            idx=[i for r in rounds for i in r.idx],
            prompts=[p for r in rounds for p in r.prompts],
            comps=Completions.concat([r.comps for r in rounds], offsets),
            scores=Scores.concat([r.scores for r in rounds]),
            stats=GroupStats.concat([r.stats for r in rounds]),
            extra_P=torch.cat([r.extra_P for r in rounds]),
            admit_P=torch.cat([r.admit_P for r in rounds]),
        )

    def state(self) -> dict[str, Any]:
        """Plain data and tensors (rlvr.train.checkpoint stores it as JSON + safetensors)."""
        return {
            "idx": list(self.idx),
            "prompts": [list(p) for p in self.prompts],
            "comps": _fields(self.comps),
            "scores": _fields(self.scores),
            "stats": _fields(self.stats),
            "extra_P": self.extra_P,
            "admit_P": self.admit_P,
            "metrics": dict(self.metrics),
        }

    @staticmethod
    def from_state(state: dict[str, Any]) -> Rollouts:
        """Inverse of `state`."""
        scores = dict(state["scores"])
        scores["names"] = tuple(scores["names"])
        return Rollouts(
            idx=list(state["idx"]),
            prompts=[list(p) for p in state["prompts"]],
            comps=Completions(**state["comps"]),
            scores=Scores(**scores),
            stats=GroupStats(**state["stats"]),
            extra_P=state["extra_P"],
            admit_P=state["admit_P"],
            metrics=dict(state["metrics"]),
        )


def _fields(obj) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
