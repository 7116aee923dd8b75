"""Example rlvr verifier plug-in: multiple-choice questions with letter answers.

Gold is a letter ("C"). The completion's choice is the letter of its last "Answer: X",
"answer is (X)" or \\boxed{X}; optional row field `choices` (list) limits the valid letters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rewards.base import Outcome

_CHOICE = re.compile(r"(?i)(?:answer\s*(?:is|:)\s*\(?|\\boxed\{\s*(?:\\text\{)?\(?)([A-Z])\b")


def verify_multiple_choice(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(row.get("choices") or "ABCDE")]
    gold = str(gold).strip().upper()
    if gold not in letters:
        return Outcome.error(f"gold {gold!r} is not one of {letters}")
    found = _CHOICE.findall(completion[-2000:])
    if not found:
        return Outcome.incorrect(reason="no answer")
    choice = found[-1].upper()
    if choice not in letters:
        return Outcome.incorrect(reason=f"{choice} is not a choice")
    return Outcome.correct() if choice == gold else Outcome.incorrect(reason="wrong answer")
