"""The built-in model's cache: built and warm-started by SFT on first use, reused afterwards.

The cache key hashes every setting that shapes the warm-started weights, so a recipe that changes
the model, the SFT or the task gets its own model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from rlvr.tasks.sft import run_sft
from rlvr.tasks.tiny_model import BUILD_VERSION, BUILTIN_PREFIX


def cache_root() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def builtin_key(cfg) -> str:
    """Hash of every setting that shapes the warm-started weights."""
    payload = {
        "v": BUILD_VERSION,
        "tiny": cfg.model.tiny.model_dump(),
        "sft": cfg.sft.model_dump(),
        "arith": cfg.data.arith.model_dump(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def builtin_model_dir(cfg, *, log=print) -> Path:
    """The cached warm-started model for `cfg`, built (once, under a file lock) if missing."""
    name = cfg.model.path.split(":", 1)[1]
    target = cache_root() / "models" / f"{name}-{builtin_key(cfg)}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it built
        if not (target / "config.json").exists():
            log(f"building {cfg.model.path} into {target} (one-time warm start)")
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            run_sft(cfg, tmp, log=log)
            os.replace(tmp, target)
    return target


def resolve_model_path(cfg, *, log=print) -> str:
    """model.path as a from_pretrained argument (building the built-in model when asked for)."""
    if cfg.model.path.startswith(BUILTIN_PREFIX):
        return str(builtin_model_dir(cfg, log=log))
    return os.path.expanduser(cfg.model.path)
