"""Every random stream of a run comes from `trainer.seed` through one function, `derive_seed`.

A stream is named (`Stream`) and indexed by integers (a step, a refill round, a stage, a rollout
worker): numpy's `SeedSequence` hashes (seed, stream, *path) into independent, well-mixed seeds,
so no two streams share one by accident (as `seed * 1000 + i` style arithmetic can) and adding a
stream changes no other.
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    PROMPTS = 1  # the prompt sampler's own RNG (uniform order, MoPPS Thompson draws)
    ROLLOUT = 2  # training generation: (step, refill round, stage)
    WORKER = 3  # one rollout worker's share of a generate call: (call seed, worker)
    UPDATE = 4  # the mini-batch shuffles of an update: (step,)
    EVAL = 5  # evaluation sampling and its bootstrap intervals (the same at every evaluation)
    SAMPLES = 6  # which completions of a step are written as sample rows: (step,)
    LORA = 7  # the LoRA adapters' initial A matrices (the same on every learner rank)


SEED_BITS = 31  # engines keep seeds in C ints


def derive_seed(seed: int, stream: Stream, *path: int) -> int:
    """A seed in [0, 2^31) unique to (seed, stream, path); the same inputs give the same seed."""
    if seed < 0 or any(p < 0 for p in path):
        raise ValueError(f"seeds and stream indices are >= 0, got {seed}, {path}")
    state = np.random.SeedSequence([seed, int(stream), *path]).generate_state(1, np.uint64)[0]
    return int(state) >> (64 - SEED_BITS)
