"""Verifier for the built-in `arith` task: the completion must be exactly the integer answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewards.base import Outcome
from rewards.registry import register


@register("arith")
def verify_arith(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Correct iff the completion, stripped of surrounding whitespace, equals the gold integer.

    Exact match on purpose: "046" or "46.0" is wrong, so the policy must learn the canonical form.
    """
    text = completion.strip()
    if text == str(gold).strip():
        return Outcome.correct()
    return Outcome.incorrect(reason="empty" if not text else "")
