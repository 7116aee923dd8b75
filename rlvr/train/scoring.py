"""Turning completions into rewards through the verifier pool, keeping errors apart.

A completion's reward is the weighted sum of its row's reward components (rewards/
components.py: the row's `rewards`, else the recipe's, else its `verifier`), plus DAPO's soft
overlong penalty as the component `overlong` when algorithm.overlong_buffer is set. A component
that errors makes the reward undefined (NaN): left out and counted, never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rewards import Outcome
from rewards.components import ROWS_KEY, combine, request_row
from rewards.pool import VerifyRequest
from rlvr.algorithms.overlong import overlong_penalty
from rollout.gates import zero_variance_admit
from rollout.types import Completions

OVERLONG = "overlong"


@dataclass(frozen=True)
class RewardSpec:
    """The run's reward components in the order they are logged, and DAPO's overlong penalty
    when it is on: (max_len, cache_len, weight)."""

    names: tuple[str, ...]
    overlong: tuple[int, int, float] | None = None

    @classmethod
    def of(cls, cfg, rows: list[dict]) -> RewardSpec:
        """From rows whose components are resolved (rewards.components.attach)."""
        names = tuple(dict.fromkeys(c["name"] for row in rows for c in components(row)))
        al = cfg.algorithm
        if al.overlong_buffer is None:
            return cls(names)
        shaping = (cfg.rollout.max_new_tokens, al.overlong_buffer, al.overlong_penalty_factor)
        return cls((*names, OVERLONG), shaping)


def components(row: dict) -> list[dict]:
    """A row's reward components; a row never resolved has its verifier, weight 1."""
    return row.get(ROWS_KEY) or [{"name": row.get("verifier", "arith"), "weight": 1.0, "args": {}}]


@dataclass
class Scores:
    """Per completion: reward_N (float64, NaN where a component errored), correct_N (the first
    component's verdict on a defined reward) and error_N (bool), the decoded texts, and the
    verifiers' reasons. Per component c of `names` (C) and completion n: score_CN, the
    component's own score (NaN where it errored or the row does not use it), weight_CN (0 where
    unused) and error_CN (bool)."""

    reward_N: torch.Tensor
    correct_N: torch.Tensor
    error_N: torch.Tensor
    texts: list[str]
    names: tuple[str, ...]
    score_CN: torch.Tensor
    weight_CN: torch.Tensor
    error_CN: torch.Tensor
    reasons: list[str]

    def part_CN(self) -> torch.Tensor:
        """Each component's weighted contribution to the reward: 0 where unused, NaN where
        it errored."""
        used_CN = self.weight_CN != 0
        return torch.where(used_CN, self.weight_CN * self.score_CN, 0.0)

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        names = parts[0].names
        if any(p.names != names for p in parts):
            raise ValueError(f"cannot join scores of components {[p.names for p in parts]}")
        return Scores(
            torch.cat([p.reward_N for p in parts]),
            torch.cat([p.correct_N for p in parts]),
            torch.cat([p.error_N for p in parts]),
            [t for p in parts for t in p.texts],
            names,
            torch.cat([p.score_CN for p in parts], dim=1),
            torch.cat([p.weight_CN for p in parts], dim=1),
            torch.cat([p.error_CN for p in parts], dim=1),
            [r for p in parts for r in p.reasons],
        )


def score(pool, tokenizer, rows: list[dict], comps: Completions, spec: RewardSpec | None = None):
    """Scores of `comps`; rows[i] is the data row of prompt i of the generate call that produced
    them. `spec` fixes the component order (default: as the rows name them, no overlong)."""
    texts = tokenizer.batch_decode(comps.token_lists(), skip_special_tokens=True)
    per_N = [components(rows[int(p)]) for p in comps.prompt_index_N]
    if spec is None:
        spec = RewardSpec(tuple(dict.fromkeys(c["name"] for cs in per_N for c in cs)))
    requests = [
        VerifyRequest(c["name"], text, str(rows[int(p)]["answer"]), request_row(rows[int(p)], c))
        for text, p, cs in zip(texts, comps.prompt_index_N, per_N)
        for c in cs
    ]
    outcomes: list[Outcome] = pool.verify_batch(requests)
    index = {name: c for c, name in enumerate(spec.names)}
    C, N = len(spec.names), len(comps)
    score = [[math.nan] * N for _ in range(C)]  # lists, then one tensor: per-element tensor
    weight = [[0.0] * N for _ in range(C)]  # writes would cost more than the verification
    failed = [[False] * N for _ in range(C)]
    reward, correct, error, reasons = [], [], [], []
    at = 0
    for n, cs in enumerate(per_N):
        mine = outcomes[at : at + len(cs)]
        at += len(cs)
        for c, o in zip(cs, mine):
            row = index[c["name"]]
            score[row][n], weight[row][n], failed[row][n] = o.score, c["weight"], o.is_error
        r, ok, bad = combine(mine, [c["weight"] for c in cs])
        reward.append(r)
        correct.append(ok)
        error.append(bad)
        reasons.append("; ".join(f"{c['name']}: {o.reason}" for c, o in zip(cs, mine) if o.reason))
    score_CN = torch.tensor(score, dtype=torch.float64).reshape(C, N)
    weight_CN = torch.tensor(weight, dtype=torch.float64).reshape(C, N)
    error_CN = torch.tensor(failed, dtype=torch.bool).reshape(C, N)
    reward_N = torch.tensor(reward, dtype=torch.float64)
    if spec.overlong is not None:
        max_len, cache_len, weight = spec.overlong
        penalty_N = overlong_penalty(comps.length_N, max_len, cache_len, dtype=torch.float64)
        score_CN[index[OVERLONG]], weight_CN[index[OVERLONG]] = penalty_N, weight
        reward_N = reward_N + weight * penalty_N  # NaN stays NaN
    return Scores(
        reward_N=reward_N,
        correct_N=torch.tensor(correct, dtype=torch.bool),
        error_N=torch.tensor(error, dtype=torch.bool),
        texts=texts,
        names=spec.names,
        score_CN=score_CN,
        weight_CN=weight_CN,
        error_CN=error_CN,
        reasons=reasons,
    )


@dataclass
class GroupStats:
    """Outcomes per group (prompt) of one round, computed once and read by every later phase.

    verified_P: long, completions with a verdict (not errored); correct_P: long, correct ones
    among them; informative_P: bool, the verified rewards are not all equal (see
    `rollout.gates.zero_variance_admit`): the group carries advantage signal.
    """

    verified_P: torch.Tensor
    correct_P: torch.Tensor
    informative_P: torch.Tensor

    @classmethod
    def of(cls, scores: Scores, group_N: torch.Tensor, num_groups: int) -> GroupStats:
        valid_N = ~scores.error_N
        verified = torch.zeros(num_groups, dtype=torch.long).index_add_(0, group_N, valid_N.long())
        correct = torch.zeros(num_groups, dtype=torch.long).index_add_(
            0, group_N, (scores.correct_N & valid_N).long()
        )
        return cls(verified, correct, zero_variance_admit(scores.reward_N, group_N, num_groups))

    @property
    def acc_P(self) -> torch.Tensor:
        """Fraction correct among each group's verified completions; NaN for a group with none."""
        seen = self.verified_P.float()
        hits = self.correct_P.float()
        return torch.where(seen > 0, hits / seen.clamp(min=1), torch.full_like(seen, float("nan")))

    @staticmethod
    def concat(parts: list[GroupStats]) -> GroupStats:
        return GroupStats(
            torch.cat([p.verified_P for p in parts]),
            torch.cat([p.correct_P for p in parts]),
            torch.cat([p.informative_P for p in parts]),
        )
