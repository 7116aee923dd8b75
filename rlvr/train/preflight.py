"""Preflight: every check of a training run that needs no actor, before Ray starts.

`preflight` raises ConfigError (the CLI prints one line and exits with status 2) for input
that cannot run: an output directory that cannot be written, GPUs asked for and absent, a
prompt template without {prompt}, a missing plug-in, a completion that does not fit the
model's positions, a data file that cannot be read (file:line), an empty data set, more
prompts a step than the training set holds, a verifier memory cap the workers cannot start
under. It loads the data and starts the verifier pool, which the run then uses; the run
directory is created only after it passed (docs/reliability.md#bad-input lists the cases).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlvr.errors import ConfigError

if TYPE_CHECKING:
    from rewards.pool import VerifierPool
    from rlvr.train.run import Data


@dataclass
class Checked:
    """What preflight prepared: the run directory to create, the model, its tokenizer, the
    data and the started verifier pool (closed by the caller)."""

    run_dir: Path
    model_path: str
    tokenizer: object
    data: Data
    pool: VerifierPool


def preflight(cfg, recipe: str | None, log=print) -> Checked:
    """Check everything that can be checked without an actor; cheap checks first."""
    from rlvr.train.run import run_directory

    run_dir = run_directory(cfg, recipe)
    check_output_dir(Path(cfg.trainer.output_dir), run_dir)
    check_gpus(cfg)
    check_template(cfg.data.template)
    check_plugins(cfg.verifier.plugins)
    check_wandb(cfg)
    model_path, tokenizer = load_model_files(cfg, log)
    data = load_data(cfg, tokenizer, model_path, log)
    check_counts(cfg, data)
    pool = start_pool_checked(cfg, data.train_rows + data.eval_rows)
    return Checked(run_dir, model_path, tokenizer, data, pool)


def check_output_dir(output_dir: Path, run_dir: Path) -> None:
    """The run directory's nearest existing ancestor is a directory this process can write
    (tried with a temporary file, which also catches read-only file systems)."""
    key = f"trainer.output_dir={str(output_dir)!r}"
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        if existing.parent.exists() and not existing.parent.is_dir():
            raise ConfigError(f"{key}: {existing.parent} is a file, not a directory")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rlvr-write-check-", dir=existing)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"{key}: cannot write in {existing} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def check_gpus(cfg) -> None:
    """GPUs asked for must exist here, unless the run joins a Ray cluster (whose nodes may
    have GPUs this machine lacks)."""
    asked = cfg.learner.gpus_per_worker > 0 or cfg.rollout.gpus_per_worker > 0
    if not asked or cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    import torch

    if not torch.cuda.is_available():
        which = "learner" if cfg.learner.gpus_per_worker > 0 else "rollout"
        value = getattr(cfg, which).gpus_per_worker
        raise ConfigError(
            f"{which}.gpus_per_worker={value:g}: no CUDA GPU on this machine (set it to 0 for "
            "a CPU run, or ray.address to join a cluster with GPUs)"
        )


def check_template(template: str) -> None:
    from rlvr.tasks.data import TEMPLATES

    if template not in TEMPLATES and "{prompt}" not in template:
        raise ConfigError(
            f"data.template={template!r}: a string template must contain {{prompt}} (or use "
            f"{', '.join(TEMPLATES)})"
        )


def check_plugins(specs: list[str]) -> None:
    from rewards.registry import load_plugin

    for spec in specs:
        try:
            load_plugin(spec)
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            raise ConfigError(f"verifier.plugins: {spec!r}: {_one_line(exc)}") from None


def check_wandb(cfg) -> None:
    import importlib.util

    if cfg.log.wandb is not None and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.wandb needs the wandb package: pip install 'rlvr[wandb]'")


def load_model_files(cfg, log):
    """(model path, tokenizer); the built-in model is warm-started on first use."""
    from transformers import AutoTokenizer

    from rlvr.tasks.warm_start import resolve_model_path

    model_path = resolve_model_path(cfg, log=log)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=cfg.model.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.path={cfg.model.path!r}: {_one_line(exc)}") from None
    return model_path, tokenizer


def load_data(cfg, tokenizer, model_path: str, log) -> Data:
    from rlvr.tasks.data import DataSourceError
    from rlvr.train.run import prepare_data

    try:
        return prepare_data(cfg, tokenizer, model_path, log)
    except DataSourceError as exc:
        raise ConfigError(f"data: {exc}") from None
    except ValueError as exc:  # a chat template on a tokenizer without one, ...
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"data: {_one_line(exc)}") from None


def check_counts(cfg, data: Data) -> None:
    if not data.eval_rows:
        raise ConfigError(f"data.eval={cfg.data.eval}: no held-out rows")
    have, want = len(data.train_rows), cfg.trainer.prompts_per_step
    if want > have:
        raise ConfigError(
            f"trainer.prompts_per_step={want}: the training set has only {have} prompts "
            "(after the length limit)"
        )


def start_pool_checked(cfg, rows: list[dict]) -> VerifierPool:
    """The run's verifier pool; a worker that cannot start (a memory cap below what its
    interpreter maps, a plug-in failing in the worker) is a configuration error."""
    from rlvr.train.run import start_pool

    try:
        return start_pool(cfg, rows)
    except RuntimeError as exc:
        text = _one_line(exc)
        if "memory_mb=" in text:
            raise ConfigError(f"verifier.memory_mb={cfg.verifier.memory_mb}: {text}") from None
        raise ConfigError(f"verifier pool: {text}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
