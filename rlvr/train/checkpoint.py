"""Checkpoints: everything needed to continue a run, written durably and loaded without pickles.

    <run>/checkpoints/step_000050/
        policy/                    Hugging Face model + tokenizer (from_pretrained-, vLLM-loadable)
        deepspeed/                 DeepSpeed engine state per rank: weights, optimizer, lr scheduler
        trainer_state.json         step, sampler state (data position, posteriors), RNG states,
                                   tracker ids: plain JSON, tensors referenced by name
        trainer_state.safetensors  those tensors (torch RNG state, MoPPS posteriors, ...)
        config.yaml                the resolved config
        manifest.json              every other file's size and sha256, written last

A checkpoint is written into `step_N.tmp`; every file and directory is fsynced, the manifest is
written, and the directory is renamed to `step_N` (then its parent is fsynced): a directory named
`step_N` with a manifest is complete. Older ones are deleted only after that, keeping
`trainer.keep_checkpoints`. A write that fails (disk full, permission) removes the partial
directory, keeps the previous checkpoint and ends with one line (CheckpointWriteError). Loading
checks every file against the manifest first and refuses a checkpoint that does not match (one
line, exit 2); the trainer state is JSON + safetensors, so no pickle is ever loaded from it.
All learner ranks write into the same directory, so multi-node runs need a shared filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.errors import CheckpointWriteError, ConfigError
from rlvr.train import faults

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_state.safetensors"
MANIFEST = "manifest.json"
LEGACY_STATE = "trainer_state.pt"  # a pickle, written before the manifest existed: refused
STATE_KEYS = {"step", "sampler", "rng", "extra"}
PATTERN = re.compile(r"^step_(\d+)$")
FULL_BELOW_BYTES = 1 << 20  # a failed write with less free space than this: the disk is full


# ---- trainer state: JSON + safetensors --------------------------------------------------------
def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def split_tensors(obj: Any, tensors: dict[str, torch.Tensor], key: str = "state") -> Any:
    """`obj` as JSON-able data; tensors and arrays move to `tensors` under their path and are
    referenced by it. Tuples are marked so that they come back as tuples (random.setstate)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        # as int64/float64/bool tensors: safetensors has no uint32 for MT19937's key
        tensors[key] = torch.from_numpy(obj.astype(_wide(obj.dtype)))
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"trainer state {key}: dict keys must be strings, got {list(obj)[:3]}")
        return {k: split_tensors(v, tensors, f"{key}.{k}") for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"trainer state {key}: {type(obj).__name__} cannot be stored as JSON")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of split_tensors."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def _wide(dtype: np.dtype) -> np.dtype:
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return np.dtype(np.float64) if dtype.kind == "f" else dtype


def write_state(path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    data = split_tensors(state, tensors)
    save_file(tensors, str(path / TENSORS_FILE))
    (path / STATE_FILE).write_text(json.dumps(data), encoding="utf-8")


def read_state(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors = load_file(str(path / TENSORS_FILE))
    return join_tensors(json.loads((path / STATE_FILE).read_text(encoding="utf-8")), tensors)


# ---- manifest ---------------------------------------------------------------------------------
def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def _digest(file: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file; fsyncs it on the way (the bytes are read anyway)."""
    sha = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 23):
            sha.update(chunk)
        os.fsync(f.fileno())
        return f.tell(), sha.hexdigest()


def _digests(path: Path, names: list[str]) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:  # hashlib frees the GIL
        return list(ex.map(lambda n: _digest(path / n), names))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(path: Path) -> None:
    """Hash and fsync every file under `path` (whoever wrote it: learner ranks, adapters, ...),
    fsync every directory, then write and fsync manifest.json."""
    names = [n for n in _files(path) if n != MANIFEST]
    files = {n: {"bytes": b, "sha256": h} for n, (b, h) in zip(names, _digests(path, names))}
    for d in sorted({p for p in path.rglob("*") if p.is_dir()}, key=lambda p: -len(p.parts)):
        fsync_dir(d)
    with open(path / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"format": 1, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path)


def verify(path: Path) -> None:
    """Raise ConfigError (one line) unless every file of the checkpoint matches the manifest."""
    if not (path / MANIFEST).exists():
        old = " (its trainer_state.pt is a pickle and is not loaded)"
        raise ConfigError(
            f"checkpoint {path} has no {MANIFEST}: incomplete, or written by an older version"
            + (old if (path / LEGACY_STATE).exists() else "")
        )
    try:
        files = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {path}: {MANIFEST} is not readable ({exc})") from None
    present = [n for n in _files(path) if n != MANIFEST]
    extra = sorted(set(present) - set(files))
    missing = sorted(set(files) - set(present))
    if missing or extra:
        what = f"{missing[0]} is missing" if missing else f"{extra[0]} is not in the manifest"
        raise ConfigError(f"checkpoint {path}: {what}; refusing it")
    names = sorted(files)
    sizes = [(path / n).stat().st_size for n in names]
    for name, size in zip(names, sizes):
        if size != files[name]["bytes"]:
            raise ConfigError(
                f"checkpoint {path}: {name} has {size} bytes, the manifest records "
                f"{files[name]['bytes']}; refusing it"
            )
    for name, (_, sha) in zip(names, _digests(path, names)):
        if sha != files[name]["sha256"]:
            raise ConfigError(
                f"checkpoint {path}: {name} does not match its sha256 in the manifest; refusing it"
            )


# ---- save, list, load -------------------------------------------------------------------------
def save_checkpoint(
    run_dir: Path, step: int, cluster, tokenizer, cfg, sampler, extra: dict, keep: int
) -> Path:
    """Write step `step`'s checkpoint; on failure remove the partial one and raise
    CheckpointWriteError (disk full, permission) or the original error (an actor died)."""
    root = run_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.tmp"):  # left by a killed run: only one writer per run
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        cluster.save_policy(str(tmp / "policy"))
        tokenizer.save_pretrained(tmp / "policy")
        cluster.save_learner_state(str(tmp))
        state = {"step": step, "sampler": sampler.state_dict(), "rng": rng_state(), "extra": extra}
        write_state(tmp, state)
        cfg.write_yaml(tmp / "config.yaml")
        faults.point("checkpoint", step)
        write_manifest(tmp)
        publish(tmp, final)
    except BaseException as exc:
        cause = write_failure(exc, root)  # before the partial files are removed (free space)
        shutil.rmtree(tmp, ignore_errors=True)
        if cause is None:
            raise
        found = list_checkpoints(run_dir)
        kept = f"the previous checkpoint {found[-1]} is kept" if found else "no checkpoint is kept"
        raise CheckpointWriteError(f"checkpoint {final} not written: {cause}; {kept}") from exc
    for old in list_checkpoints(run_dir)[:-keep]:  # only now that the new one is complete
        shutil.rmtree(old, ignore_errors=True)
    return final


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished directory into place and make the rename durable."""
    if final.exists():  # the same step written again: the old copy goes only after the swap
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def write_failure(exc: BaseException, root: Path) -> str | None:
    """The cause of a failed write in words ("no space left on device: <file>"), or None when the
    failure is not the filesystem's (an actor died, an interrupt)."""
    if not isinstance(exc, Exception):
        return None
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno is not None:
            where = f": {err.filename}" if err.filename else ""
            return f"{os.strerror(err.errno).lower()}{where}"
    try:  # torch's zip writer reports a full disk as "unexpected pos ..."
        usage = shutil.disk_usage(root)
    except OSError:
        return None
    if usage.free < FULL_BELOW_BYTES:
        return f"{os.strerror(errno.ENOSPC).lower()} ({usage.free} bytes free under {root})"
    return None


def _chain(exc: BaseException):
    """The exception, its causes and contexts, and the remote cause of Ray task errors."""
    seen, todo = set(), [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo += [err.__cause__, err.__context__, getattr(err, "cause", None)]


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run (renamed into place, with a manifest), oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if PATTERN.match(p.name) and (p / MANIFEST).exists()]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """trainer.resume: '' -> None; 'auto' -> newest checkpoint of the run (None if none); a path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if not (path / MANIFEST).exists() and not (path / LEGACY_STATE).exists():
        raise ConfigError(f"trainer.resume={resume!r}: not a checkpoint directory (no {MANIFEST})")
    return path


def load_checkpoint(path: Path, cluster, sampler) -> dict[str, Any]:
    """Check the files against the manifest, then restore learner state, sampler and RNG;
    returns the trainer state (step, extra)."""
    verify(path)
    state = read_state(path)
    missing = STATE_KEYS - set(state)
    if missing:
        raise ConfigError(
            f"checkpoint {path} lacks {sorted(missing)}; it was not written by this version"
        )
    cluster.load_learner_state(str(path))
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    return state
