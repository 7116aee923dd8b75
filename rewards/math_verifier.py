"""The `math` verifier: final answer of a completion vs a gold answer, compared with math-verify.

How it differs from calling `math_verify.parse` on the whole completion:
- we find the answer ourselves (rewards.extract: last \\boxed{}, then configurable fallbacks) in
  linear time, and hand math-verify only that short string, so megabyte outputs stay cheap and
  math-verify's backtracking regexes never see model text;
- a math-verify timeout (its signal.alarm, which works only in a main thread) is an `error`
  outcome, not a wrong answer: the verifier could not decide;
- an answer written exactly like the gold one (up to spacing and \\left/\\right) is correct
  without parsing: the common right answer costs microseconds, not a SymPy comparison;
- the gold answer is parsed once per process (LRU cache): in a group of N completions it repeats.

Variants: `math` (box, then "the answer is X", then the last number) and `math_boxed` (box only,
for training that must reward the boxed format). Both accept gold in LaTeX or plain form.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any

from rewards.base import Outcome, Verifier
from rewards.extract import FALLBACKS, MAX_ANSWER_CHARS, extract_answer
from rewards.registry import register

# math-verify's own limit per parse and per comparison (whole seconds, signal.alarm). A
# 0.6 s parse of a long Minerva answer took over 2 s on a loaded 2-core machine; 3 + 3 s stays
# below the pool's default per-call timeout (10 s), so slow SymPy work reports itself.
TIMEOUT_S = 3


class _Undecided(Exception):
    """math-verify hit its own timeout."""


def _alarm_seconds(seconds: int) -> int | None:
    # signal.alarm only works in the main thread; elsewhere (the serial path called from a
    # thread) run without math-verify's timeout rather than fail every call.
    return seconds if threading.current_thread() is threading.main_thread() else None


def _parse(text: str, configs: list, timeout_s: int) -> list:
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(text, configs, parsing_timeout=_alarm_seconds(timeout_s), raise_on_error=True)
    except TimeoutException:
        raise _Undecided("math-verify timeout while parsing") from None
    except Exception:  # malformed LaTeX is an unparsable answer, not a verifier failure
        return []


# Spacing and sizing commands that never change a value; used only to spot identical answers.
_COSMETIC = re.compile(r"\s+|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\[,;:! ]|\\displaystyle|\$")


def same_text(answer: str, gold: str) -> bool:
    """True if the two strings are the same answer written the same way (cosmetics aside)."""
    a = _COSMETIC.sub("", answer).rstrip(".")
    return bool(a) and a == _COSMETIC.sub("", gold).rstrip(".")


# "4.5e33" (Minerva's gold style, and what models print) would read as 4.5 * e * 33 in LaTeX.
_SCIENTIFIC = re.compile(r"^([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)[eE]([-+]?\d{1,4})$")


def parse_math(answer: str, timeout_s: int = TIMEOUT_S) -> list:
    """Parse an answer string as LaTeX (inside \\boxed{} so math-verify normalises it) and, when
    that yields no expression, as a plain expression. Returns math-verify's list of candidates
    (SymPy objects and string forms); empty when nothing parses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    answer = answer.strip()
    if len(answer) > 1 and answer[0] == "$" and answer[-1] == "$":
        answer = answer.strip("$").strip()
    answer = _SCIENTIFIC.sub(r"\1 \\times 10^{\2}", answer)
    parsed = _parse("\\boxed{" + answer + "}", [LatexExtractionConfig()], timeout_s)
    if not any(not isinstance(p, str) for p in parsed):
        parsed = parsed + _parse(answer, [ExprExtractionConfig()], timeout_s)
    return parsed


def parse_phrase(phrase: str, timeout_s: int = TIMEOUT_S) -> list:
    """Parse a short "the answer is X" phrase with math-verify's own anchored extraction."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return _parse(phrase, [LatexExtractionConfig(), ExprExtractionConfig()], timeout_s)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout_s: int) -> tuple:
    return tuple(parse_math(gold, timeout_s))


def equivalent(gold: list | tuple, pred: list, timeout_s: int = TIMEOUT_S) -> bool:
    """True if any (gold, prediction) candidate pair is equal to math-verify. String pairs go
    first, and identical expression trees count as equal at once: both are cheap, and make a
    later SymPy timeout irrelevant when they already match."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    pairs = [(g, p) for g in gold for p in pred]
    pairs.sort(key=lambda gp: not (isinstance(gp[0], str) and isinstance(gp[1], str)))
    for g, p in pairs:
        if not isinstance(g, str) and not isinstance(p, str) and g == p:
            return True  # the same expression tree: equal, and SymPy need not simplify g - p
        try:
            if verify(
                g, p, timeout_seconds=_alarm_seconds(timeout_s), raise_on_error=True
            ) and not _tiny_numbers_differ(g, p):
                return True
        except TimeoutException:
            raise _Undecided("math-verify timeout while comparing") from None
        except Exception:  # SymPy cannot compare this pair; others may still match
            continue
    return False


# math-verify rounds numbers to 6 decimal places before comparing, so below 1 it keeps few
# significant digits and every value under 5e-7 equals 0: Minerva's 2.88e-19 "equalled"
# 1.325e-27. Below 1 we also require agreement to this relative tolerance (only ever rejecting
# more than math-verify does; 1/3 vs 0.333333 still passes).
_SMALL_REL_TOL = 1e-4


def _tiny_numbers_differ(gold: object, pred: object) -> bool:
    """True if both are real numbers below 1 in magnitude that differ relatively."""
    if not (getattr(gold, "is_number", False) and getattr(pred, "is_number", False)):
        return False
    try:
        g, p = abs(float(gold)), abs(float(pred))
        scale = max(g, p)
        return scale < 1 and abs(float(gold) - float(pred)) > _SMALL_REL_TOL * scale
    except (TypeError, ValueError, OverflowError):
        return False


def make_math_verifier(
    fallbacks: tuple[str, ...] = ("answer_is", "last_number"),
    *,
    timeout_s: int = TIMEOUT_S,
    shortcut: bool = True,
) -> Verifier:
    """A math verifier whose answer is the last box, else the first of `fallbacks` that finds
    one (names from rewards.extract.FALLBACKS, tried in order). `timeout_s` bounds each
    math-verify parse and comparison; `shortcut=False` sends even an answer written exactly
    like the gold one through math-verify (for testing the parser on real gold answers)."""
    unknown = [f for f in fallbacks if f not in FALLBACKS]
    if unknown:
        raise ValueError(f"unknown fallbacks {unknown}; valid: {', '.join(FALLBACKS)}")

    def verify_math(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
        found = extract_answer(completion, fallbacks)
        if found is None:
            return Outcome.incorrect(reason="no answer")
        how, answer = found
        if len(answer) > MAX_ANSWER_CHARS:
            return Outcome.incorrect(reason="answer too long")
        if shortcut and how != "answer_is" and same_text(answer, str(gold)):
            return Outcome.correct()
        try:
            gold_parsed = _parse_gold(str(gold), timeout_s)
            if not gold_parsed:
                return Outcome.error(f"gold answer does not parse: {str(gold)[:80]!r}")
            parser = parse_phrase if how == "answer_is" else parse_math
            pred = parser(answer, timeout_s)
            if not pred:
                return Outcome.incorrect(reason="answer does not parse")
            if equivalent(gold_parsed, pred, timeout_s):
                return Outcome.correct()
            return Outcome.incorrect(reason="wrong answer")
        except _Undecided as e:
            return Outcome.error(str(e))

    verify_math.__qualname__ = verify_math.__name__ = (
        "verify_math" if fallbacks else "verify_math_boxed"
    )
    return verify_math


verify_math = register("math")(make_math_verifier())
verify_math_boxed = register("math_boxed")(make_math_verifier(fallbacks=()))


def warm_up() -> None:
    """Load math-verify's grammar (the first LaTeX parse costs about 0.1 s) before timing calls."""
    verify_math("so \\boxed{\\frac{1}{2}}", "0.5", {})
