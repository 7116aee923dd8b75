"""Format verifiers, meant as weighted reward components beside an answer check (rewards/
components.py): `format_boxed`, `format_think` and `format_regex`. Each scores 1 (correct) when
the completion has the format and 0 (incorrect) otherwise; none looks at the gold answer.

A verifier may carry a `check_args(args)` attribute that raises ValueError for arguments it
cannot use; the trainer calls it for every component at start-up, so a bad pattern in a recipe
fails before any work rather than as an error on every completion.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from rewards.base import Outcome
from rewards.extract import last_boxed
from rewards.registry import register

OPEN, CLOSE = "<think>", "</think>"


@register("format_boxed")
def verify_format_boxed(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Correct iff the completion ends its answer in a usable \\boxed{} (the box `math` reads:
    balanced, at most 1000 characters). Right or wrong does not matter here."""
    if last_boxed(completion) is not None:
        return Outcome.correct()
    return Outcome.incorrect(reason="no usable \\boxed{}")


@register("format_think")
def verify_format_think(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Correct iff the completion is `<think>REASONING</think>ANSWER`: one block of non-empty
    reasoning, opened first (only whitespace before it), closed once, then a non-empty answer.

    With `think_opened: true` in the component's args (chat templates such as DeepSeek-R1's or
    Qwen3's that end the prompt with `<think>`), the completion starts inside the block: it must
    hold no `<think>` of its own and is `REASONING</think>ANSWER`.
    """
    opened = bool(row.get("think_opened", False))
    body = completion
    if not opened:
        stripped = completion.lstrip()
        if not stripped.startswith(OPEN):
            return Outcome.incorrect(reason="does not open with <think>")
        body = stripped[len(OPEN) :]
    if OPEN in body:
        return Outcome.incorrect(reason="more than one <think>")
    if body.count(CLOSE) != 1:
        return Outcome.incorrect(reason=f"{body.count(CLOSE)} </think> (need exactly 1)")
    reasoning, _, answer = body.partition(CLOSE)
    if not reasoning.strip():
        return Outcome.incorrect(reason="empty reasoning")
    if not answer.strip():
        return Outcome.incorrect(reason="no answer after </think>")
    return Outcome.correct()


@register("format_regex")
def verify_format_regex(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Correct iff the whole completion, stripped of surrounding whitespace, matches the
    component's `pattern` (Python `re`, `.` matching newlines too), e.g. `-?[0-9]+` for "just
    an integer". Patterns come from the recipe: keep them free of nested quantifiers, or set
    verifier.num_workers so the pool's timeout can stop a runaway match."""
    pattern = row.get("pattern")
    if not isinstance(pattern, str):
        return Outcome.error("format_regex needs a string 'pattern' in the component's args")
    if _compiled(pattern).fullmatch(completion.strip()):
        return Outcome.correct()
    return Outcome.incorrect(reason="no match")


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.DOTALL)


def _check_regex_args(args: Mapping[str, Any]) -> None:
    pattern = args.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("format_regex needs args: {pattern: REGEX}")
    try:
        _compiled(pattern)
    except re.error as exc:
        raise ValueError(f"format_regex pattern {pattern!r}: {exc}") from None


def _check_think_args(args: Mapping[str, Any]) -> None:
    if not isinstance(args.get("think_opened", False), bool):
        raise ValueError("format_think's think_opened must be true or false")


verify_format_regex.check_args = _check_regex_args
verify_format_think.check_args = _check_think_args
