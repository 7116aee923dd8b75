"""A DeepSpeed model as vLLM's `WeightSource`: the learner's side of weight sync into vLLM.

vLLM's `ModuleSource` reads `module.named_parameters()` as they are; under ZeRO-3 those are
empty shards. This source declares every parameter with its full shape (`ds_shape`) and, on
every learner rank (the gathers are collectives), gathers one parameter at a time with
`deepspeed.zero.GatheredParameters` and yields a copy: DeepSpeed frees the gathered storage
on leaving the `with` block, while vLLM's packed transfer still holds the tensor until its
buffer is sent. Names are the Hugging Face module's own (`model.layers.0...`, no DeepSpeed or
PEFT prefixes), which is what vLLM's `load_weights` expects.

On the sending rank it can also digest each tensor as it goes out
(`rollout.weight_sync.tensor_digest`), so the learner's fingerprint of a sync costs no second
gather; the vLLM workers digest what they receive the same way (`rollout.vllm_worker_ext`).

vLLM is imported on first use (`deepspeed_weight_source`), so this module imports without it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from rlvr.learner.lora import is_peft, merged_params, merged_shapes
from rollout.weight_sync import combine_digests, tensor_digest


def full_shapes(module: torch.nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(name, dtype, full shape) of every parameter; ZeRO-3 shards report their `ds_shape`.
    A peft (LoRA) model: its base parameters under their Hugging Face names."""
    if is_peft(module):
        return merged_shapes(module)
    return [
        (name, p.dtype, tuple(p.ds_shape) if hasattr(p, "ds_shape") else tuple(p.shape))
        for name, p in module.named_parameters()
    ]


def gathered_params(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) of every parameter in order; a collective under ZeRO-3 (all ranks).
    A plain module (no ZeRO-3 shards) needs no deepspeed at all. A peft (LoRA) model: its
    base parameters with the adapters merged in (`rlvr.learner.lora.merged_params`)."""
    if is_peft(module):
        yield from merged_params(module)
        return
    for name, p in module.named_parameters():
        if hasattr(p, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                full = p.detach().clone()  # the gathered storage is released on exit
            yield name, full
        else:
            yield name, p.detach()


@functools.cache
def _source_class():
    from vllm.distributed.weight_transfer import ParamMeta, WeightSource

    from rollout.vllm_compat import new_source_api

    class DeepSpeedWeightSource(WeightSource):
        """Every rank owns every parameter (owners=None): each yields full tensors, rank 0 sends.
        Both of vLLM's source contracts (rollout.vllm_compat): `metadata` as 0.33's cached
        property or 0.32's method, iteration as `iter_full()` and `__iter__`."""

        def __init__(self, module: torch.nn.Module, digest: bool = False):
            self._module, self._digest = module, digest
            self._digests: list[tuple] = []
            self.bytes = 0

        def _metadata(self) -> list:
            return [
                ParamMeta(name, dtype, shape) for name, dtype, shape in full_shapes(self._module)
            ]

        if new_source_api(WeightSource):
            metadata = functools.cached_property(_metadata)
        else:

            def metadata(self) -> list:
                if not hasattr(self, "_meta"):
                    self._meta = self._metadata()
                return self._meta

        def iter_full(self) -> Iterator[tuple[str, torch.Tensor]]:
            self._digests, self.bytes = [], 0
            for name, tensor in gathered_params(self._module):
                if self._digest:
                    self._digests.append(tensor_digest(name, tensor))
                self.bytes += tensor.numel() * tensor.element_size()
                yield name, tensor

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            return self.iter_full()

        def fingerprint(self) -> str:
            """`rollout.weight_sync.fingerprint` of the last full pass (digest=True only)."""
            if not self._digest:
                raise RuntimeError("this source was built with digest=False")
            return combine_digests(self._digests)

    return DeepSpeedWeightSource


def deepspeed_weight_source(module: torch.nn.Module, digest: bool = False):
    """A `vllm.distributed.weight_transfer.WeightSource` over a DeepSpeed engine's module."""
    return _source_class()(module, digest)
