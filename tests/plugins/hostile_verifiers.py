"""Misbehaving verifier plug-ins for the pool's isolation tests (loaded as module:function)."""

import os
import sys
import time

from rewards.base import Outcome


def sleep_forever(completion, gold, row):
    while True:
        time.sleep(3600)


def spin_forever(completion, gold, row):
    """A C-level loop that holds the GIL: only SIGKILL stops it, signals never run."""
    return Outcome.correct() if 9 ** (9 ** 9 ** 9) else Outcome.incorrect()


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
        "correct" if ok else "incorrect", 1.0 if ok else 0.0,
        f"len={len(completion)} row={sorted(row.items())}")


def heavy_modules(completion, gold, row):
    """Reports which heavy frameworks are imported in the worker process."""
    loaded = sorted(m for m in ("torch", "ray", "transformers", "vllm", "deepspeed")
                    if m in sys.modules)
    return Outcome.incorrect(reason=",".join(loaded) or "none")


def whoami(completion, gold, row):
    return Outcome.incorrect(reason=str(os.getpid()))
