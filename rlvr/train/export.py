"""`rlvr export RUN_OR_CHECKPOINT OUT_DIR`: a checkpoint's policy as a plain Hugging Face model.

A full-parameter checkpoint's `policy/` already is one; it is copied. A LoRA checkpoint's
`policy/` holds the adapter alone (peft's `save_pretrained` format, naming its base model); the
export loads the base, merges each adapted weight as W + scaling * B @ A exactly as the weight
sync does (`rlvr.learner.lora.merged_params`, so the exported weights are bit-identical to what
the rollout engines ran), and saves the merged model with the tokenizer. transformers and vLLM
load the result as is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.train.checkpoint import list_checkpoints

POLICY = "policy"
ADAPTER_CONFIG = "adapter_config.json"


def find_checkpoint(source: Path) -> Path:
    """A checkpoint directory, or the newest checkpoint of a run directory."""
    if (source / POLICY).is_dir():
        return source
    found = list_checkpoints(source)
    if not found:
        raise ConfigError(f"{source}: neither a checkpoint (no {POLICY}/) nor a run with one")
    return found[-1]


def is_adapter(policy: Path) -> bool:
    return (policy / ADAPTER_CONFIG).exists()


def export(source: Path, out: Path) -> Path:
    """Write the merged Hugging Face model of `source` (run or checkpoint) into `out`; returns
    the checkpoint it came from."""
    ckpt = find_checkpoint(source)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new directory")
    policy = ckpt / POLICY
    if is_adapter(policy):
        merge_adapter(policy, out, checkpoint_dtype(ckpt))
    elif (policy / "config.json").exists():
        shutil.copytree(policy, out, dirs_exist_ok=True)
    else:
        raise ConfigError(f"{policy}: holds neither a model (config.json) nor an adapter")
    return ckpt


def merge_adapter(policy: Path, out: Path, dtype: str) -> None:
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.learner.lora import merged_params

    adapter = json.loads((policy / ADAPTER_CONFIG).read_text())
    base_path = adapter.get("base_model_name_or_path")
    if not base_path:
        raise ConfigError(f"{policy / ADAPTER_CONFIG}: names no base model")
    try:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
    except OSError as exc:
        raise ConfigError(f"{policy}: cannot load its base model {base_path!r} ({exc})") from None
    wrapped = peft.PeftModel.from_pretrained(base, policy)
    merged = dict(merged_params(wrapped))
    model = wrapped.unload()  # the base model again, adapters removed (not merged)
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in merged.items():
            own[name].copy_(tensor)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(policy).save_pretrained(out)


def checkpoint_dtype(ckpt: Path) -> str:
    """model.dtype of the run that wrote the checkpoint (its config.yaml)."""
    import yaml

    path = ckpt / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{ckpt}: no config.yaml; not a checkpoint of this project")
    return yaml.safe_load(path.read_text())["model"]["dtype"]
