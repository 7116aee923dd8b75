"""The built-in `arith` task: procedurally generated arithmetic with graded difficulty.

A level 'D:OPS:K' draws K operands uniformly from 0..10^D-1 joined by operators from OPS
('+', '-', '*'); '*' binds tighter than '+' and '-'. The prompt is the expression followed by
'=', the answer its integer value, e.g. {'prompt': '12+34=', 'answer': '46'}.

Train and held-out splits are disjoint by construction: a problem is held out iff a hash of
its text falls below `heldout_fraction`, so membership never depends on the seed, the mix or
the requested sizes. Rows carry the columns real datasets use (prompt, answer, verifier).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from rlvr.errors import ConfigError


class ArithConfig(BaseModel):
    """`data.arith`: the built-in arithmetic task. A level is 'DIGITS:OPERATORS:OPERANDS', e.g.
    '2:+:2' is a + b with a, b in 0..99 and '3:+-:3' three operands of up to 3 digits joined by
    + or -."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mix: dict[str, Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: {"2:+:2": 1.0},
        description="level -> share of the training prompts",
    )
    train_size: int = Field(8000, ge=1, description="distinct training prompts")
    heldout_size: int = Field(500, ge=1, description="distinct held-out prompts (evaluation)")
    heldout_fraction: float = Field(
        0.1,
        gt=0.0,
        le=0.5,
        description="share of each level's problem space reserved for held-out",
    )
    seed: int = Field(
        0, description="seed of the problem draw (the split itself is fixed by a hash)"
    )


OPERATORS = "+-*"
MAX_DIGITS, MAX_OPERANDS = 6, 4
ENUMERATE_LIMIT = 200_000  # below this a level's space is listed exactly, above it is sampled


@dataclass(frozen=True)
class Level:
    digits: int
    ops: str
    operands: int

    @property
    def name(self) -> str:
        return f"{self.digits}:{self.ops}:{self.operands}"

    @property
    def space_size(self) -> int:
        return (10**self.digits) ** self.operands * len(self.ops) ** (self.operands - 1)

    def sample(self, rng: random.Random) -> str:
        nums = [rng.randrange(10**self.digits) for _ in range(self.operands)]
        ops = [rng.choice(self.ops) for _ in range(self.operands - 1)]
        return join(nums, ops)

    def enumerate(self):
        for nums in itertools.product(range(10**self.digits), repeat=self.operands):
            for ops in itertools.product(self.ops, repeat=self.operands - 1):
                yield join(nums, ops)


def parse_level(name: str) -> Level:
    """'2:+-:3' -> Level(2, '+-', 3). Raises ValueError with the accepted form."""
    parts = str(name).split(":")
    form = f"level {name!r} must be DIGITS:OPERATORS:OPERANDS like '2:+:2'"
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        raise ValueError(form)
    digits, ops, operands = int(parts[0]), parts[1], int(parts[2])
    if not 1 <= digits <= MAX_DIGITS:
        raise ValueError(f"{form}; DIGITS in 1..{MAX_DIGITS}")
    if not ops or any(o not in OPERATORS for o in ops) or len(set(ops)) != len(ops):
        raise ValueError(f"{form}; OPERATORS distinct characters of {OPERATORS!r}")
    if not 2 <= operands <= MAX_OPERANDS:
        raise ValueError(f"{form}; OPERANDS in 2..{MAX_OPERANDS}")
    return Level(digits, ops, operands)


def join(nums, ops) -> str:
    out = str(nums[0])
    for op, num in zip(ops, nums[1:]):
        out += op + str(num)
    return out


def evaluate(expr: str) -> int:
    """Value of a generated expression ('*' before '+'/'-'); no eval()."""
    total, term, sign, num = 0, 1, 1, ""
    for ch in expr + "+":
        if ch.isdigit():
            num += ch
            continue
        term *= int(num)
        num = ""
        if ch == "*":
            continue
        total += sign * term
        term, sign = 1, (1 if ch == "+" else -1)
    return total


def is_heldout(expr: str, fraction: float) -> bool:
    digest = hashlib.blake2b(expr.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def make_row(expr: str, level: Level) -> dict[str, Any]:
    return {
        "prompt": expr + "=",
        "answer": str(evaluate(expr)),
        "verifier": "arith",
        "level": level.name,
    }


def allocate(mix: dict[str, float], size: int) -> dict[str, int]:
    """Split `size` prompts over levels in proportion to the mix (largest remainder)."""
    total = sum(mix.values())
    exact = {name: size * w / total for name, w in mix.items()}
    counts = {name: int(x) for name, x in exact.items()}
    by_remainder = sorted(mix, key=lambda n: exact[n] - counts[n], reverse=True)
    for name in by_remainder[: size - sum(counts.values())]:
        counts[name] += 1
    return counts


def make_split(
    mix: dict[str, float], size: int, *, heldout: bool, fraction: float, seed: int
) -> list[dict[str, Any]]:
    """`size` distinct problems of the train or held-out region, drawn by the mix, shuffled."""
    split = "heldout" if heldout else "train"
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()  # levels overlap ('1:+:2' problems are also '2:+:2' problems)
    for name, count in allocate(mix, size).items():
        level = parse_level(name)
        rng = random.Random(f"{seed}:{split}:{name}")
        exprs = draw_distinct(level, count, rng, heldout, fraction, taken)
        taken.update(exprs)
        rows.extend(make_row(e, level) for e in exprs)
    random.Random(f"{seed}:{split}:order").shuffle(rows)
    return rows


def draw_distinct(
    level: Level, count: int, rng: random.Random, heldout: bool, fraction: float, taken: set[str]
) -> list[str]:
    """`count` problems of the level in the region, none of them in `taken`."""
    region = "held-out" if heldout else "train"
    if level.space_size <= ENUMERATE_LIMIT:
        pool = [
            e for e in level.enumerate() if is_heldout(e, fraction) == heldout and e not in taken
        ]
        if count > len(pool):
            raise ConfigError(
                f"data.arith: level {level.name} has only {len(pool)} {region} "
                f"problems, {count} requested; lower the size or change the mix"
            )
        return rng.sample(pool, count)
    seen: dict[str, None] = {}
    for _ in range(50 * count + 1000):
        if len(seen) == count:
            break
        expr = level.sample(rng)
        if is_heldout(expr, fraction) == heldout and expr not in taken:
            seen[expr] = None
    if len(seen) < count:
        raise ConfigError(
            f"data.arith: could not draw {count} distinct {region} problems of "
            f"level {level.name}; lower the size"
        )
    return list(seen)


class DemoSampler:
    """Endless SFT demonstrations from the train region (never a held-out problem).

    With probability `noise` one digit of the shown answer is shifted by +-1: the warm-started
    model then knows the format but is unreliable, which is what RL can sharpen (NOTES.md).
    """

    def __init__(self, mix: dict[str, float], fraction: float, noise: float, seed: int):
        self.levels = [parse_level(n) for n in mix]
        self.weights = list(mix.values())
        self.fraction, self.noise = fraction, noise
        self.rng = random.Random(f"{seed}:sft")

    def sample(self) -> tuple[str, str]:
        level = self.rng.choices(self.levels, self.weights)[0]
        expr = level.sample(self.rng)
        while is_heldout(expr, self.fraction):
            expr = level.sample(self.rng)
        answer = str(evaluate(expr))
        if self.rng.random() < self.noise:
            answer = perturb(answer, self.rng)
        return expr + "=", answer


def perturb(answer: str, rng: random.Random) -> str:
    """Shift one digit by +-1 (mod 10); the sign, if any, stays."""
    digits = [i for i, ch in enumerate(answer) if ch.isdigit()]
    i = rng.choice(digits)
    delta = rng.choice((-1, 1))
    if i == digits[0] and len(digits) > 1 and (int(answer[i]) + delta) % 10 == 0:
        delta = -delta  # never a leading zero: the noise is a wrong digit, not a bad format
    return answer[:i] + str((int(answer[i]) + delta) % 10) + answer[i + 1 :]
