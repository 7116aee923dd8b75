"""Misbehaving verifier plug-ins for the pool's isolation tests (loaded as module:function)."""

import os
import sys
import time

from rewards.base import Outcome
from rewards.math_verifier import make_math_verifier


def sleep_forever(completion, gold, row):
    while True:
        time.sleep(3600)


def spin_forever(completion, gold, row):
    """A C-level loop that holds the GIL: only SIGKILL stops it, signals never run."""
    return Outcome.correct() if 9 ** (9**9**9) else Outcome.incorrect()


def allocate_forever(completion, gold, row):
    hoard = []
    while True:
        hoard.append(bytearray(64 * 1024 * 1024))


def hard_exit(completion, gold, row):
    os._exit(7)


def soft_exit(completion, gold, row):
    sys.exit(3)


def raises(completion, gold, row):
    raise ValueError("bad plug-in " + completion)


def returns_bool(completion, gold, row):
    return completion == gold


def returns_nan(completion, gold, row):
    return Outcome.correct(score=float("nan"))


def echo(completion, gold, row):
    """Correct iff completion == gold; the reason reports what the worker received."""
    ok = completion == gold
    return Outcome(
        "correct" if ok else "incorrect",
        1.0 if ok else 0.0,
        f"len={len(completion)} row={sorted(row.items())}",
    )


def heavy_modules(completion, gold, row):
    """Reports which heavy frameworks are imported in the worker process."""
    loaded = sorted(
        m for m in ("torch", "ray", "transformers", "vllm", "deepspeed") if m in sys.modules
    )
    return Outcome.incorrect(reason=",".join(loaded) or "none")


def whoami(completion, gold, row):
    return Outcome.incorrect(reason=str(os.getpid()))


# The `math` verifier minus its exact-text shortcut and with patient math-verify timeouts: the
# real-data sweep uses it so reference answers test the parser (not string equality), and the
# verdict does not depend on how loaded the machine is.
math_without_shortcut = make_math_verifier(timeout_s=30, shortcut=False)


def nap(completion, gold, row):
    """Sleeps row["seconds"], then is correct: a slow but well-behaved verifier."""
    time.sleep(row["seconds"])
    return Outcome.correct()
