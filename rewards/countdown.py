"""The `countdown` verifier: an arithmetic equation over given numbers that must hit a target.

Row fields: `numbers` (list of integers) and `target` (integer; the gold answer is used when the
row has none). Optional `use_all` (bool, default false): every number must be used exactly once,
as in TinyZero's Countdown; by default each number may be used at most once.

The equation is the last <answer>...</answer> block, else the last non-empty line. A side of
"=" holding the numbers is evaluated (so "(6-2)*5 = 20" and "20 = (6-2)*5" both work). Parsing
uses `ast` with a whitelist of nodes (numbers, + - * /, unary minus, parentheses) and exact
rational arithmetic; nothing is ever passed to eval.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from rewards.base import Outcome
from rewards.registry import register

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_MAX_EXPR_CHARS = 300  # a real solution over six numbers is < 60 characters
_TRANSLATE = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"})
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Rejected(ValueError):
    """The expression uses something outside the whitelist."""


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Exact value of a whitelisted expression tree; appends every literal to `used`."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, used)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Rejected("division by zero")
        return _BINOPS[type(node.op)](left, right)
    raise _Rejected(f"{type(node).__name__} is not allowed")


def _equation(completion: str) -> str | None:
    tags = _ANSWER_TAG.findall(completion[-20_000:])
    if tags:
        return tags[-1].strip()
    lines = [line.strip() for line in completion[-2_000:].splitlines() if line.strip()]
    return lines[-1] if lines else None


def _as_int(value: Any) -> int:
    number = float(value) if not isinstance(value, int) else value
    if number != int(number):
        raise ValueError(f"not an integer: {value!r}")
    return int(number)


@register("countdown")
def verify_countdown(completion: str, gold: str, row: Mapping[str, Any]) -> Outcome:
    """Correct iff the equation's value equals the target and it uses only the given numbers,
    each at most once (exactly once with `use_all`)."""
    try:
        numbers = Counter(_as_int(n) for n in row["numbers"])
        target = _as_int(row["target"] if row.get("target") is not None else gold)
    except (KeyError, TypeError, ValueError) as e:
        return Outcome.error(f"bad countdown row: {type(e).__name__}: {e}"[:200])
    equation = _equation(completion)
    if not equation:
        return Outcome.incorrect(reason="no answer")
    if len(equation) > _MAX_EXPR_CHARS:
        return Outcome.incorrect(reason="answer too long")
    best = None
    for side in equation.translate(_TRANSLATE).split("="):
        try:
            tree = ast.parse(side.strip(), mode="eval")
            used: list[int] = []
            value = _evaluate(tree, used)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if best is None or len(used) > len(best[1]):
            best = (value, used)
    if best is None:
        return Outcome.incorrect(reason="no valid expression")
    value, used = best
    if Counter(used) - numbers:
        return Outcome.incorrect(reason="uses numbers not given")
    if row.get("use_all") and Counter(used) != numbers:
        return Outcome.incorrect(reason="does not use every number")
    if value != target:
        return Outcome.incorrect(reason="misses the target")
    return Outcome.correct()
