"""A gloo weight-transfer engine for vLLM, so weight sync runs through vLLM's own transfer API on
CPU (vLLM's NCCL and IPC engines need CUDA). Registered under the backend name "gloo" with
both of vLLM's factories (`rollout.vllm_compat.register_gloo`); vLLM imports this module
lazily when an engine with `weight_transfer_config={"backend": "gloo"}` is built.

It speaks the NCCL engine's packed protocol: the trainer packs consecutive tensors into uint8
chunks with vLLM's own `pack_tensors` (a chunk closes once it exceeds the buffer size, so a
tensor larger than the buffer travels alone), broadcasts each over a standalone gloo group
(learner rank 0 = rank 0, engine workers at their `rank_offset`, as in NCCL), keeping up to
`packed_num_buffers` broadcasts in flight; every worker derives the same chunk boundaries from
the update info (names, dtype names, shapes) and hands each unpacked chunk to the model's
`load_weights` inside vLLM's layerwise-reload lifecycle. Differences from the NCCL engine:
- gloo instead of NCCL, and the trainer's TCP store picks its own port (the workers get it in
  their init info);
- `finish_weight_update` re-ties a tied LM head to the embedding (`retie_lm_head`): vLLM's
  layerwise reload restores the head's old tensor when no weight is loaded into it directly
  ("ParallelLMHead: Failed to load weights"), which breaks the tie and leaves a stale head that
  no tensor digest sees.
"""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
from vllm.distributed.weight_transfer.base import (
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    WeightTransferEngine,
    WeightTransferInitInfo,
)
from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferUpdateInfo
from vllm.distributed.weight_transfer.packed_tensor import pack_tensors, unpack_tensor

from rollout.vllm_compat import GLOO, source_metadata, source_pairs

GROUP_PREFIX = "rlvr_vllm_gloo"
DEFAULT_BUFFER_BYTES = 32 << 20
DEFAULT_NUM_BUFFERS = 2


@dataclass(kw_only=True)
class GlooWeightTransferInitInfo(WeightTransferInitInfo):
    """Worker side: where the trainer's store is, this engine's first rank, the wire params."""

    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    packed_buffer_size_bytes: int = DEFAULT_BUFFER_BYTES
    packed_num_buffers: int = DEFAULT_NUM_BUFFERS
    timeout_s: float = 900.0


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    """Trainer side (every learner rank; rank 0 sends). world_size: trainer + every worker."""

    backend: ClassVar[str] = GLOO

    master_address: str
    world_size: int
    packed_buffer_size_bytes: int = DEFAULT_BUFFER_BYTES
    packed_num_buffers: int = DEFAULT_NUM_BUFFERS
    timeout_s: float = 900.0


def gloo_group(store, rank: int, world_size: int, timeout_s: float):
    timeout = datetime.timedelta(seconds=timeout_s)
    return dist.ProcessGroupGloo(dist.PrefixStore(GROUP_PREFIX, store), rank, world_size, timeout)


def broadcast(group, tensor: torch.Tensor):
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


def chunk_plan(names, dtype_names, shapes, buffer_bytes: int) -> list[list[tuple]]:
    """The receiver's chunk boundaries, as `pack_tensors` closes chunks on the sender: append
    until the running size exceeds the buffer. Each entry: (name, shape, dtype, bytes)."""
    chunks: list[list[tuple]] = [[]]
    size = 0
    for name, dtype_name, shape in zip(names, dtype_names, shapes):
        dtype = getattr(torch, dtype_name)
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        chunks[-1].append((name, list(shape), dtype, nbytes))
        size += nbytes
        if size > buffer_bytes:
            chunks.append([])
            size = 0
    return [c for c in chunks if c]


def retie_lm_head(model: torch.nn.Module, hf_config) -> bool:
    """Tie the LM head to the embedding again and rebuild what the head computes with. Returns
    True if the head had come apart (a stale tensor of its own).

    vLLM ties a head by making `lm_head.weight` the embedding's Parameter. A layerwise reload
    that loads nothing into the head puts its old tensor back, and on CPU the head multiplies
    with a packed copy made when its weights were last processed
    (`dispatch_cpu_unquantized_gemm`), so both are redone here; on GPUs the reprocessing is a
    no-op for unquantized heads."""
    if not getattr(hf_config, "tie_word_embeddings", False):
        return False
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)  # Llama, Qwen2, ...
    if head is None or embed is None or not hasattr(head, "weight"):
        return False
    apart = head.weight is not embed.weight
    head.weight = embed.weight
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)
    return apart


class GlooWeightTransferEngine(
    WeightTransferEngine[GlooWeightTransferInitInfo, NCCLWeightTransferUpdateInfo]
):
    """Worker side: joins the gloo group, receives packed chunks, loads them layerwise."""

    init_info_cls = GlooWeightTransferInitInfo
    update_info_cls = NCCLWeightTransferUpdateInfo

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group = None
        self.buffer_bytes, self.num_buffers = DEFAULT_BUFFER_BYTES, DEFAULT_NUM_BUFFERS
        self.retied = 0  # syncs after which the head had come apart (rlvr_transfer_stats)
        self.retie = True  # tests switch it off to reproduce the stale-head fault

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        self.buffer_bytes = init_info.packed_buffer_size_bytes
        self.num_buffers = init_info.packed_num_buffers
        pc = self.parallel_config
        rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
        store = dist.TCPStore(
            init_info.master_address,
            init_info.master_port,
            init_info.world_size,
            is_master=False,
            timeout=datetime.timedelta(seconds=init_info.timeout_s),
        )
        self.group = gloo_group(store, rank, init_info.world_size, init_info.timeout_s)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def receive_weights(self, update_info: NCCLWeightTransferUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer not initialised: call init_transfer_engine")
        plan = chunk_plan(
            update_info.names, update_info.dtype_names, update_info.shapes, self.buffer_bytes
        )
        for chunk in plan:
            names, shapes, dtypes, sizes = map(list, zip(*chunk))
            packed = torch.empty(sum(sizes), dtype=torch.uint8, device=self.device)
            broadcast(self.group, packed).wait()
            self.model.load_weights(unpack_tensor(packed, names, shapes, dtypes, sizes))

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        if self.retie:
            self.retied += retie_lm_head(self.model, self.model_config.hf_text_config)

    def shutdown(self) -> None:
        self.group = None


class GlooTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    """Trainer side. Every learner rank iterates the source (ZeRO-3 gathers are collectives);
    rank 0 also drives the engines through the client and broadcasts."""

    init_info_cls = GlooTrainerInitInfo

    def __init__(self, *, client, source, is_sender: bool, info: GlooTrainerInitInfo):
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.info = info
        self.group = None

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client, source=None):
        if source is None:
            raise ValueError("gloo trainer weight transfer requires a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, info=init_info)
        if not engine.is_sender:
            return engine
        timeout = datetime.timedelta(seconds=init_info.timeout_s)
        store = dist.TCPStore(
            init_info.master_address,
            0,
            init_info.world_size,
            is_master=True,
            wait_for_workers=False,
            timeout=timeout,
        )
        worker_info = GlooWeightTransferInitInfo(
            master_address=init_info.master_address,
            master_port=store.port,
            rank_offset=1,
            world_size=init_info.world_size,
            packed_buffer_size_bytes=init_info.packed_buffer_size_bytes,
            packed_num_buffers=init_info.packed_num_buffers,
            timeout_s=init_info.timeout_s,
        )
        # The workers block in init_weight_transfer_engine until every rank has joined the
        # group, so the trainer joins on this thread while the RPC runs on another (as NCCL).
        with ThreadPoolExecutor(max_workers=1) as exe:
            future = exe.submit(client.init_weight_transfer_engine, asdict(worker_info))
            engine.group = gloo_group(store, 0, init_info.world_size, init_info.timeout_s)
            future.result()
        engine.store = store  # keep the store (and its port) alive with the group
        return engine

    def send_weights(self) -> None:
        meta = source_metadata(self.source)
        if not self.is_sender:
            for _ in source_pairs(self.source):  # take part in the gathers
                pass
            return
        update = NCCLWeightTransferUpdateInfo(
            names=[m.name for m in meta],
            dtype_names=[str(m.dtype).split(".")[-1] for m in meta],
            shapes=[list(m.shape) for m in meta],
        )
        self.client.start_weight_update()
        exe = ThreadPoolExecutor(max_workers=1)
        try:
            future = exe.submit(self.client.update_weights, asdict(update))
            self._broadcast(meta)
            future.result()  # surface the engines' errors
        finally:
            exe.shutdown(wait=False)  # after a failed broadcast the RPC never returns
        self.client.finish_weight_update()

    def _broadcast(self, meta) -> None:
        pairs = checked_pairs(self.source, meta)
        in_flight = []
        while True:
            chunk = pack_tensors(pairs, lambda item: item[1], self.info.packed_buffer_size_bytes)
            if chunk is None:
                break
            in_flight.append((broadcast(self.group, chunk.packed_tensor), chunk))
            if len(in_flight) >= self.info.packed_num_buffers:
                in_flight.pop(0)[0].wait()
        for work, _ in in_flight:
            work.wait()

    def shutdown(self) -> None:
        self.group = None


def checked_pairs(source, meta):
    """The source's pairs, each checked against the metadata the workers were sent (a mismatch
    would split the stream differently on the two sides)."""
    count = 0
    for name, tensor in source_pairs(source):
        want = meta[count] if count < len(meta) else None
        if want is None or (name, tensor.dtype, tuple(tensor.shape)) != (
            want.name,
            want.dtype,
            tuple(want.shape),
        ):
            raise ValueError(
                f"WeightSource yielded {name!r} {tensor.dtype} {tuple(tensor.shape)} at index "
                f"{count}; metadata declares {want}"
            )
        count += 1
        yield name, tensor
    if count != len(meta):
        raise ValueError(f"WeightSource yielded {count} parameters; metadata declares {len(meta)}")
