"""Turning completions into rewards through the verifier pool, keeping errors apart."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewards import Outcome
from rewards.pool import VerifyRequest
from rollout.gates import zero_variance_admit
from rollout.types import Completions


@dataclass
class Scores:
    """Per completion: reward_N (float, NaN where the verifier errored), correct_N and error_N
    (bool), plus the decoded texts."""

    reward_N: torch.Tensor
    correct_N: torch.Tensor
    error_N: torch.Tensor
    texts: list[str]

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        return Scores(
            torch.cat([p.reward_N for p in parts]),
            torch.cat([p.correct_N for p in parts]),
            torch.cat([p.error_N for p in parts]),
            [t for p in parts for t in p.texts],
        )


def score(pool, tokenizer, rows: list[dict], comps: Completions) -> Scores:
    """rows[i] is the data row of prompt i of the generate call that produced `comps`."""
    texts = tokenizer.batch_decode(
        [comps.tokens(i) for i in range(len(comps))], skip_special_tokens=True
    )
    requests = []
    for i, text in enumerate(texts):
        row = rows[int(comps.prompt_index_N[i])]
        extra = {k: v for k, v in row.items() if k not in ("prompt", "answer")}
        requests.append(
            VerifyRequest(row.get("verifier", "arith"), text, str(row["answer"]), extra)
        )
    outcomes: list[Outcome] = pool.verify_batch(requests)
    return Scores(
        reward_N=torch.tensor([o.score for o in outcomes], dtype=torch.float32),
        correct_N=torch.tensor([o.status == "correct" for o in outcomes]),
        error_N=torch.tensor([o.is_error for o in outcomes]),
        texts=texts,
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
