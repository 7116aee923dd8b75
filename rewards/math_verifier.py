"""The `math` verifier: final answer of a completion vs a gold answer, compared with math-verify.

How it differs from calling `math_verify.parse` on the whole completion:
- we find the answer ourselves (rewards.extract: last \\boxed{}, then configurable fallbacks) in
  linear time, and hand math-verify only that short string, so megabyte outputs stay cheap and
  math-verify's backtracking regexes never see model text;
- a math-verify timeout (its signal.alarm, which works only in a main thread) is an `error`
  outcome, not a wrong answer: the verifier could not decide;
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

# math-verify's own limits (whole seconds, signal.alarm). They sit below the pool's default
# per-call timeout (10 s) so an expensive comparison reports "math-verify timeout" itself.
PARSE_TIMEOUT_S = 2
COMPARE_TIMEOUT_S = 2


class _Undecided(Exception):
    """math-verify hit its own timeout."""


def _alarm_seconds(seconds: int) -> int | None:
    # signal.alarm only works in the main thread; elsewhere (the serial path called from a
    # thread) run without math-verify's timeout rather than fail every call.
    return seconds if threading.current_thread() is threading.main_thread() else None


def _parse(text: str, configs: list) -> list:
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(text, configs, parsing_timeout=_alarm_seconds(PARSE_TIMEOUT_S),
                     raise_on_error=True)
    except TimeoutException:
        raise _Undecided("math-verify timeout while parsing") from None
    except Exception:  # malformed LaTeX is an unparsable answer, not a verifier failure
        return []


# "4.5e33" (Minerva's gold style, and what models print) would read as 4.5 * e * 33 in LaTeX.
_SCIENTIFIC = re.compile(r"^([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)[eE]([-+]?\d{1,4})$")


def parse_math(answer: str) -> list:
    """Parse an answer string as LaTeX (inside \\boxed{} so math-verify normalises it) and, when
    that yields no expression, as a plain expression. Returns math-verify's list of candidates
    (SymPy objects and string forms); empty when nothing parses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    answer = answer.strip()
    if len(answer) > 1 and answer[0] == "$" and answer[-1] == "$":
        answer = answer.strip("$").strip()
    answer = _SCIENTIFIC.sub(r"\1 \\times 10^{\2}", answer)
    parsed = _parse("\\boxed{" + answer + "}", [LatexExtractionConfig()])
    if not any(not isinstance(p, str) for p in parsed):
        parsed = parsed + _parse(answer, [ExprExtractionConfig()])
    return parsed


def parse_phrase(phrase: str) -> list:
    """Parse a short "the answer is X" phrase with math-verify's own anchored extraction."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return _parse(phrase, [LatexExtractionConfig(), ExprExtractionConfig()])


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    return tuple(parse_math(gold))


def equivalent(gold: list | tuple, pred: list) -> bool:
    """True if any (gold, prediction) candidate pair is equal to math-verify. String pairs go
    first: they are cheap and make a later SymPy timeout irrelevant when they already match."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    pairs = [(g, p) for g in gold for p in pred]
    pairs.sort(key=lambda gp: not (isinstance(gp[0], str) and isinstance(gp[1], str)))
    for g, p in pairs:
        try:
            if verify(g, p, timeout_seconds=_alarm_seconds(COMPARE_TIMEOUT_S), raise_on_error=True):
                return True
        except TimeoutException:
            raise _Undecided("math-verify timeout while comparing") from None
        except Exception:  # SymPy cannot compare this pair; others may still match
            continue
    return False


def make_math_verifier(fallbacks: tuple[str, ...] = ("answer_is", "last_number")) -> Verifier:
    """A math verifier whose answer is the last box, else the first of `fallbacks` that finds
    one (names from rewards.extract.FALLBACKS, tried in order)."""
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
        try:
            gold_parsed = _parse_gold(str(gold))
            if not gold_parsed:
                return Outcome.error(f"gold answer does not parse: {str(gold)[:80]!r}")
            pred = parse_phrase(answer) if how == "answer_is" else parse_math(answer)
            if not pred:
                return Outcome.incorrect(reason="answer does not parse")
            if equivalent(gold_parsed, pred):
                return Outcome.correct()
            return Outcome.incorrect(reason="wrong answer")
        except _Undecided as e:
            return Outcome.error(str(e))

    verify_math.__qualname__ = verify_math.__name__ = (
        "verify_math" if fallbacks else "verify_math_boxed")
    return verify_math


verify_math = register("math")(make_math_verifier())
verify_math_boxed = register("math_boxed")(make_math_verifier(fallbacks=()))


def warm_up() -> None:
    """Load math-verify's grammar (the first LaTeX parse costs about 0.1 s) before timing calls."""
    verify_math("so \\boxed{\\frac{1}{2}}", "0.5", {})
