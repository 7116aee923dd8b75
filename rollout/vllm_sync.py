"""The control plane of weight sync into vLLM engines: a client for several independent engines.

vLLM's trainer-side transfer engines (`vllm.distributed.weight_transfer`) drive the inference
side through a client with four methods (`VLLMWeightSyncClient`). The stock Ray client sends
one init payload to every engine, and vLLM's NCCL payload places an engine's workers at
rank_offset 1. Several independent engines (each its own TP group, not one data-parallel
deployment) would then all claim ranks 1..TP of the NCCL group and hang. `MultiEngineClient`
rewrites the offset per engine: engine i's workers get ranks `engine_rank_offsets(...)[i]`
onwards, right after the previous engine's, with the trainer at rank 0.

The engines are `rollout.worker.RolloutWorker` actors; calls go through their `engine_call`.
Every wait has a timeout. This module imports neither vllm nor rlvr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def engine_rank_offsets(world_sizes: Sequence[int]) -> list[int]:
    """First NCCL rank of each engine's workers; the trainer is rank 0. Engine i of world size
    w_i (TP x PP) owns ranks offset_i .. offset_i + w_i - 1."""
    offsets, next_rank = [], 1
    for size in world_sizes:
        if size < 1:
            raise ValueError(f"engine world sizes must be >= 1, got {list(world_sizes)}")
        offsets.append(next_rank)
        next_rank += size
    return offsets


def transfer_world_size(world_sizes: Sequence[int]) -> int:
    """Size of the trainer-to-engines NCCL group: the trainer plus every engine worker."""
    return 1 + sum(world_sizes)


class MultiEngineClient:
    """`VLLMWeightSyncClient` over several rollout actors, each with its own NCCL rank offset.

    `get` waits on a list of Ray object refs with a timeout (the caller supplies it, so this
    module needs no Ray import at module level and tests can pass a fake).
    """

    def __init__(
        self,
        handles: list,
        world_sizes: Sequence[int],
        get: Callable | None = None,
        timeout_s: float = 900.0,
    ):
        if len(handles) != len(world_sizes):
            raise ValueError(f"{len(handles)} engines but {len(world_sizes)} world sizes")
        self.handles, self.world_sizes = list(handles), list(world_sizes)
        self.offsets = engine_rank_offsets(world_sizes)
        self.timeout_s = timeout_s
        self._get = get or _ray_get

    def init_payloads(self, init_info: dict) -> list[dict]:
        """The per-engine init payloads. NCCL payloads (they carry rank_offset) get each engine's
        own offset and the whole group's world size; IPC payloads go out unchanged."""
        if "rank_offset" not in init_info:
            return [dict(init_info) for _ in self.handles]
        world = transfer_world_size(self.world_sizes)
        if init_info.get("world_size") != world:
            raise ValueError(
                f"NCCL init payload has world_size={init_info.get('world_size')}; the "
                f"trainer and {len(self.handles)} engine(s) of sizes {self.world_sizes} "
                f"make {world}"
            )
        return [{**init_info, "rank_offset": offset} for offset in self.offsets]

    def _call(self, method: str, args_per_engine: list[tuple]) -> None:
        refs = [
            h.engine_call.remote(method, *args) for h, args in zip(self.handles, args_per_engine)
        ]
        self._get(refs, self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._call("init_weight_transfer_engine", [(p,) for p in self.init_payloads(init_info)])

    def start_weight_update(self) -> None:
        self._call("start_weight_update", [() for _ in self.handles])

    def update_weights(self, update_info) -> None:
        self._call("update_weights", [(update_info,) for _ in self.handles])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._call("finish_weight_update", [() for _ in self.handles])


def _ray_get(refs, timeout_s: float):
    import ray

    return ray.get(refs, timeout=timeout_s)
