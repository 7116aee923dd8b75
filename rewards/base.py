"""The verifier contract: a verifier is a plain function returning an Outcome.

    verifier(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome

`completion` is the decoded model output (special tokens removed), `gold` the row's reference
answer, `row` every other column of the data row. Verifiers never raise on bad model output;
an exception or a timeout becomes an `error` outcome, which is *not* a wrong answer: the
controller leaves it out of the group statistics and counts it (ALGORITHMS.md section 1).

This module imports neither torch nor ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CORRECT, INCORRECT, ERROR = "correct", "incorrect", "error"


@dataclass(frozen=True)
class Outcome:
    """Result of one verification. `score` is the reward; NaN for errors."""

    status: str
    score: float
    reason: str = ""

    @classmethod
    def correct(cls, score: float = 1.0) -> Outcome:
        return cls(CORRECT, float(score))

    @classmethod
    def incorrect(cls, score: float = 0.0, reason: str = "") -> Outcome:
        return cls(INCORRECT, float(score), reason)

    @classmethod
    def error(cls, reason: str) -> Outcome:
        return cls(ERROR, math.nan, reason)

    @property
    def is_error(self) -> bool:
        return self.status == ERROR


Verifier = Callable[[str, str, Mapping[str, Any]], Outcome]
