"""LoRA on the learner through peft: the `learner.lora` section, the adapted model, and the
learner's views of it (merged weights for the engines, the adapter for checkpoints).

With `learner.lora.enabled`, the learner wraps its model with `peft.get_peft_model` before
DeepSpeed sees it: the base weights are frozen, only the adapter matrices A [r, in] and
B [out, r] of each targeted linear layer train and carry AdamW state. The rollout engines keep
plain Hugging Face models and get merged weights, W + (alpha / r) * B @ A, under the base
model's own parameter names, through the usual bucketed, fingerprinted sync.

Parameter names. peft renames a wrapped model's parameters: `model.layers.0.mlp.up_proj.weight`
becomes `base_model.model.model.layers.0.mlp.up_proj.base_layer.weight`, with the adapter beside
it as `...up_proj.lora_A.default.weight` and `...lora_B.default.weight`. `merged_params` yields
the Hugging Face names (the prefix and the `.base_layer` segment removed) and skips the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.errors import ConfigError

ADAPTER = "default"  # peft's adapter name; one adapter per run
PEFT_PREFIX = "base_model.model."
ALL_LINEAR = "all-linear"


class LoraConfig(BaseModel):
    """The `learner.lora` section: low-rank adapters instead of full-parameter training."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = Field(False, description="train LoRA adapters (peft) instead of all weights")
    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0.0, description="scaling numerator: updates are alpha/r * B@A")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the adapter's input (0 keeps learner and engine log-probs equal)",
    )
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        ALL_LINEAR,
        description="all-linear (every linear layer but the output layer) or module names, "
        "e.g. [q_proj, v_proj]",
    )

    sync: Literal["merged", "adapter"] = Field(
        "merged",
        description="what the weight sync sends: merged weights (W + alpha/r * B@A, any engine) "
        "or the adapter alone (A and B; HF engine, which then runs the model through peft)",
    )

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def check_lora(lora: LoraConfig, engine: str) -> None:
    """The rules that need no model. Raises ConfigError (one line)."""
    if not lora.enabled:
        return
    if lora.sync == "adapter" and engine != "hf":
        raise ConfigError(
            f"learner.lora.sync=adapter: needs rollout.engine=hf (the {engine} engine gets "
            "merged weights; set learner.lora.sync=merged)"
        )
    if isinstance(lora.target_modules, list) and not lora.target_modules:
        raise ConfigError("learner.lora.target_modules=[]: name at least one module or all-linear")


def linear_names(model: torch.nn.Module) -> set[str]:
    """Last name components of the model's linear layers (q_proj, up_proj, lm_head, ...)."""
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def check_targets(lora: LoraConfig, model_path: str, trust_remote_code: bool, fused: bool) -> None:
    """Before Ray starts: every named target is a linear layer of the model (built on the meta
    device from its config, no weights read), and a LoRA'd output layer is not combined with
    the fused log-prob kernel (which reads the output layer's base weight only)."""
    if not lora.enabled or lora.target_modules == ALL_LINEAR:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    have = linear_names(model)
    unknown = [t for t in lora.target_modules if t not in have]
    if unknown:
        raise ConfigError(
            f"learner.lora.target_modules: {unknown[0]!r} is not a linear layer of "
            f"{model_path}; its linear layers: {', '.join(sorted(have))}"
        )
    head = model.get_output_embeddings()
    head_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head}
    if fused and head_names & set(lora.target_modules):
        raise ConfigError(
            f"learner.lora.target_modules: the output layer {sorted(head_names)[0]!r} with "
            "learner.fused_logprobs=true (the kernel reads the base weight only); set "
            "learner.fused_logprobs=false or leave the output layer out"
        )


def apply_lora(model: torch.nn.Module, lora: LoraConfig, seed: int) -> torch.nn.Module:
    """The peft-wrapped model: base frozen, adapters trainable (B starts at 0, so the wrapped
    model computes exactly what the base did; A's random init comes from `seed`, so reruns
    and resumed runs start from the same adapter). Adapters in the model's dtype, like the base
    (peft would upcast half-precision ones to fp32)."""
    import peft

    config = peft.LoraConfig(**peft_kwargs(lora), lora_dropout=lora.dropout)
    with torch.random.fork_rng(devices=[]):  # A's random init: seeded, same on every run
        torch.manual_seed(seed)
        return peft.get_peft_model(
            model, config, adapter_name=ADAPTER, autocast_adapter_dtype=False
        )


def peft_kwargs(lora: LoraConfig) -> dict:
    """`peft.LoraConfig` arguments that fix the adapter's shapes and scaling (what an engine
    with adapter-only sync builds the same adapter from; it runs without dropout)."""
    return {
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "target_modules": lora.target_modules,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def is_peft(module: torch.nn.Module) -> bool:
    try:
        import peft
    except ImportError:
        return False
    return isinstance(module, peft.PeftModel)


def _gathered(params: list[torch.nn.Parameter]):
    """Full tensors of these parameters inside the block: a collective under ZeRO-3."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return nullcontext()


def hf_name(peft_name: str) -> str:
    """`base_model.model.X.base_layer.weight` -> `X.weight`: the base model's own name."""
    return peft_name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def is_adapter_param(name: str) -> bool:
    return ".lora_" in name


def _full_shape(p: torch.nn.Parameter) -> tuple[int, ...]:
    return tuple(p.ds_shape) if hasattr(p, "ds_shape") else tuple(p.shape)


def merged_shapes(module: torch.nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(HF name, dtype, full shape) of every base parameter, in `merged_params` order."""
    return [
        (hf_name(name), p.dtype, _full_shape(p))
        for name, p in module.named_parameters()
        if not is_adapter_param(name)
    ]


def merged_params(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, merged full tensor) of every base parameter of a peft model, in order.

    A LoRA layer's weight is W + scaling * B @ A, computed in float32 and rounded once to W's
    dtype; other parameters pass through. Under ZeRO-3 every rank must iterate this (each
    layer's W, A and B are gathered together, a collective)."""
    from peft.tuners.lora import LoraLayer

    owners = {
        f"{name}.base_layer.weight": layer
        for name, layer in module.named_modules()
        if isinstance(layer, LoraLayer) and ADAPTER in layer.lora_A
    }
    for name, p in module.named_parameters():
        if is_adapter_param(name):
            continue
        layer = owners.get(name)
        if layer is None:
            with _gathered([p]):
                full = p.detach().clone()
            yield hf_name(name), full
            continue
        a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        with _gathered([p, a, b]):
            yield hf_name(name), merge_weight(p, a, b, layer.scaling[ADAPTER])


def merge_weight(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + scaling * B @ A in float32, rounded once to W's dtype (a new tensor)."""
    delta = (b.detach().float() @ a.detach().float()) * scaling
    return (w.detach().float() + delta).to(w.dtype)


def gathered_raw(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(peft name, full tensor) of every parameter as it is, nothing merged (collective under
    ZeRO-3)."""
    for name, p in module.named_parameters():
        with _gathered([p]):
            full = p.detach().clone()
        yield name, full


def adapter_params(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(peft name, full tensor) of every adapter parameter, in order: what adapter-only sync
    sends (collective under ZeRO-3)."""
    for name, p in module.named_parameters():
        if is_adapter_param(name):
            with _gathered([p]):
                full = p.detach().clone()
            yield name, full


def adapter_shapes(module: torch.nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [
        (name, p.dtype, _full_shape(p))
        for name, p in module.named_parameters()
        if is_adapter_param(name)
    ]


def adapter_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter parameter in full on CPU, under the peft model's names (every rank calls:
    a collective under ZeRO-3)."""
    out = {}
    for name, p in module.named_parameters():
        if is_adapter_param(name):
            with _gathered([p]):
                out[name] = p.detach().cpu().clone()
    return out


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, full sizes under ZeRO-3."""
    trainable = total = 0
    for p in module.parameters():
        n = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
