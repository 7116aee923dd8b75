"""Where a run's prompts come from: (train rows, held-out rows), each row a dict with at least
prompt, answer and verifier."""

from __future__ import annotations

from rlvr.arith import make_split


def load_task(cfg) -> tuple[list[dict], list[dict]]:
    if cfg.data.task == "arith":
        a = cfg.data.arith
        train = make_split(a.mix, a.train_size, heldout=False, fraction=a.heldout_fraction, seed=a.seed)
        heldout = make_split(a.mix, a.heldout_size, heldout=True, fraction=a.heldout_fraction, seed=a.seed)
        return train, heldout
    raise ValueError(f"unknown data.task {cfg.data.task!r}; valid: arith")
