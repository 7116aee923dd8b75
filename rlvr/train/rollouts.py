"""`Rollouts`: what one generation round of a step produced, typed, and how rounds merge."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

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
    """

    idx: list[int]
    prompts: list[list[int]]
    comps: Completions
    scores: Scores
    stats: GroupStats
    extra_P: torch.Tensor
    admit_P: torch.Tensor

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
