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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlvr.errors import ConfigError, one_line
from rlvr.tasks.loading import encode_prompts, fit_prompts, load_task, prompt_limit
from rlvr.train.checkpoint import list_checkpoints

if TYPE_CHECKING:
    from rewards.pool import VerifierPool


@dataclass
class Data:
    """Rows and prompt token ids that fit the length limit, and what was done to the others."""

    train_rows: list[dict]
    train_prompts: list[list[int]]
    eval_rows: list[dict]
    eval_prompts: list[list[int]]
    record: dict


def prepare_data(cfg, tokenizer, model_path: str, log) -> Data:
    """Load the rows, encode their prompts and apply data.max_prompt_tokens (capped so that a
    completion still fits the model's positions): over-long prompts are dropped or truncated,
    counted and logged. Raises ConfigError when no training prompt is left, or when a prompt
    holds characters the tokenizer does not know (the built-in model knows digits and + - * =)."""
    train_rows, eval_rows = load_task(cfg)
    if not train_rows:
        raise ConfigError(f"data.train={cfg.data.train!r}: no rows")
    limit = prompt_limit(cfg, model_path, log)
    unk = tokenizer.unk_token_id
    kept, over = [], []
    for rows, where in ((train_rows, "data.train"), (eval_rows, "data.eval")):
        prompts = encode_prompts(cfg, tokenizer, rows)
        bad = [i for i, p in enumerate(prompts) if unk is not None and unk in p]
        if bad:
            raise ConfigError(
                f"{where} row {bad[0]}: the prompt {rows[bad[0]]['prompt'][:40]!r} has characters "
                f"the tokenizer does not know ({len(bad)} such rows)"
            )
        rows, prompts, count = fit_prompts(rows, prompts, limit, cfg.data.overlong_prompts)
        kept.append((rows, prompts))
        over.append(count)
    action = "dropped" if cfg.data.overlong_prompts == "drop" else "truncated"
    if any(over):
        log(
            f"data: {over[0]} training and {over[1]} held-out prompts longer than {limit} "
            f"tokens {action}"
        )
    if not kept[0][0]:
        raise ConfigError(f"data: every training prompt is longer than {limit} tokens")
    record = {
        "train_prompts": len(kept[0][0]), "eval_prompts": len(kept[1][0]), "prompt_limit": limit,
        "train_over": over[0], "eval_over": over[1], "over_action": action,
    }  # fmt: skip
    return Data(*kept[0], *kept[1], record)


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
            raise ConfigError(f"verifier.plugins: {spec!r}: {one_line(exc)}") from None


def check_wandb(cfg) -> None:
    import importlib.util

    if cfg.log.wandb is not None and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.wandb needs the wandb package: pip install 'rlvr[wandb]'")


def load_model_files(cfg, log):
    """(model path, tokenizer); the built-in model is warm-started on first use."""
    from transformers import AutoTokenizer

    from rlvr.learner.lora import check_targets
    from rlvr.tasks.warm_start import resolve_model_path

    model_path = resolve_model_path(cfg, log=log)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=cfg.model.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.path={cfg.model.path!r}: {one_line(exc)}") from None
    lc = cfg.learner
    check_targets(lc.lora, model_path, cfg.model.trust_remote_code, lc.uses_fused_logprobs)
    return model_path, tokenizer


def load_data(cfg, tokenizer, model_path: str, log) -> Data:
    from rlvr.tasks.data import DataSourceError

    try:
        return prepare_data(cfg, tokenizer, model_path, log)
    except DataSourceError as exc:
        raise ConfigError(f"data: {exc}") from None
    except ValueError as exc:  # a chat template on a tokenizer without one, ...
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"data: {one_line(exc)}") from None


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
    try:
        return start_pool(cfg, rows)
    except RuntimeError as exc:
        text = one_line(exc)
        if "memory_mb=" in text:
            raise ConfigError(f"verifier.memory_mb={cfg.verifier.memory_mb}: {text}") from None
        raise ConfigError(f"verifier pool: {text}") from None


def start_pool(cfg, rows: list[dict]) -> VerifierPool:
    """The verifier pool, after checking that every reward component names a verifier someone
    provides and gives it arguments it accepts (config errors, found before Ray starts)."""
    from rewards.components import check_args
    from rewards.pool import VerifierPool

    pool = VerifierPool(cfg.verifier)
    try:
        pool.require({c["name"] for row in rows for c in row["rewards"]})
        check_args(rows)
    except KeyError as exc:
        pool.close()
        raise ConfigError(f"data: {exc.args[0]} (add it with verifier.plugins)") from None
    except (ValueError, ImportError) as exc:
        pool.close()
        raise ConfigError(f"rewards: {exc}") from None
    return pool


def run_directory(cfg, recipe: str | None) -> Path:
    """runs/<trainer.name>, or runs/<recipe>-<time> for a new run; with trainer.resume=auto and no
    name, the newest run of this recipe that has a checkpoint. Never reuses a run's directory
    for a fresh run (nothing is overwritten)."""
    tc = cfg.trainer
    base = Path(tc.output_dir)
    stem = Path(recipe).stem if recipe else "run"
    if tc.resume not in ("", "auto"):
        return Path(tc.resume).expanduser().resolve().parent.parent
    if tc.name:
        path = base / tc.name
        if not tc.resume and (path / "metrics.jsonl").exists():
            raise ConfigError(
                f"trainer.name={tc.name!r}: {path} already holds a run; add trainer.resume=auto "
                "to continue it or choose another name"
            )
        return path
    if tc.resume == "auto":
        runs = [p for p in base.glob(f"{stem}-*") if list_checkpoints(p)]
        if not runs:
            raise ConfigError(
                f"trainer.resume=auto: no run of {stem} with a checkpoint under {base}/"
            )
        return max(runs, key=lambda p: list_checkpoints(p)[-1].stat().st_mtime)
    path = base / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
    return path
