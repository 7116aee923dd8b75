"""Checkpoints: everything needed to continue a run, written atomically.

    <run>/checkpoints/step_000050/
        policy/              Hugging Face model + tokenizer (from_pretrained- and vLLM-loadable)
        deepspeed/           DeepSpeed engine state per rank: weights, optimizer, lr scheduler
        trainer_state.pt     step, sampler state (data position, posteriors), RNG states
        config.yaml          the resolved config

A checkpoint is written into `step_N.tmp` and renamed when complete; older ones are deleted
only after that, keeping `trainer.keep_checkpoints`. All learner ranks write into the same
directory, so multi-node runs need a shared filesystem for the run directory.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.errors import ConfigError

STATE_FILE = "trainer_state.pt"
STATE_KEYS = {"step", "sampler", "rng", "extra"}
PATTERN = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    run_dir: Path, step: int, cluster, tokenizer, cfg, sampler, extra: dict, keep: int
) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cluster.save_policy(str(tmp / "policy"))
    tokenizer.save_pretrained(tmp / "policy")
    cluster.save_learner_state(str(tmp))
    state = {"step": step, "sampler": sampler.state_dict(), "rng": rng_state(), "extra": extra}
    torch.save(state, tmp / STATE_FILE)
    cfg.write_yaml(tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if PATTERN.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """trainer.resume: '' -> None; 'auto' -> newest checkpoint of the run (None if none); a path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if not (path / STATE_FILE).exists():
        raise ConfigError(
            f"trainer.resume={resume!r}: not a checkpoint directory (no {STATE_FILE})"
        )
    return path


def load_checkpoint(path: Path, cluster, sampler) -> dict[str, Any]:
    """Restore learner state, sampler and RNG; returns the trainer state (step, extra)."""
    state = torch.load(path / STATE_FILE, weights_only=False)
    missing = STATE_KEYS - set(state)
    if missing:
        raise ConfigError(
            f"checkpoint {path} lacks {sorted(missing)}; it was not written by this version"
        )
    cluster.load_learner_state(str(path))
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    return state
