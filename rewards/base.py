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

MAX_REASON_CHARS = 200  # reasons travel between processes and into logs; inputs can be 1 MB


def checked(result: object) -> Outcome:
    """`result` if it is a well-formed Outcome, else an error outcome saying what was wrong.

    Catches plug-in bugs that would otherwise poison the advantages: a bool instead of an
    Outcome, an unknown status, a NaN or infinite score on a correct/incorrect outcome.
    """
    if not isinstance(result, Outcome):
        return Outcome.error(f"verifier returned {type(result).__name__}, not Outcome")
    if result.status not in (CORRECT, INCORRECT, ERROR):
        return Outcome.error(
            f"verifier returned unknown status {result.status!r}"[:MAX_REASON_CHARS]
        )
    if result.status != ERROR and not math.isfinite(result.score):
        return Outcome.error(f"verifier returned a non-finite score for {result.status}")
    if not isinstance(result.reason, str) or len(result.reason) > MAX_REASON_CHARS:
        return Outcome(result.status, result.score, str(result.reason)[:MAX_REASON_CHARS])
    return result


def describe(exc: BaseException) -> str:
    """`Type: message`, cut to MAX_REASON_CHARS; safe even when str(exc) itself fails."""
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text[:MAX_REASON_CHARS]}"[:MAX_REASON_CHARS]


def call_verifier(fn: Verifier, completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Run one verifier; an exception becomes an error outcome naming it (never a zero reward)."""
    try:
        return checked(fn(completion, gold, row))
    except Exception as e:  # the contract: bad input or a plug-in bug never stops the batch
        return Outcome.error(describe(e))
