"""The weight-sync wire format: manifest, bucket plan, fingerprint, and both ends of the transfer.

Learner rank 0 broadcasts flat buckets of parameters to every rollout worker over a standalone
torch process group (gloo on CPU, NCCL on GPU), independent of the learners' DeepSpeed world.
Both ends derive the same bucket plan from one manifest, so they post the same broadcasts in the
same order. After a sync each side computes `fingerprint()`; the controller compares them.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

GROUP_PREFIX = "rlvr_weight_sync"
IN_FLIGHT = 2  # broadcasts posted before waiting on the oldest: overlaps packing with transfer


class SyncConfig(BaseModel):
    """The `sync` section: how weights travel from learner rank 0 to the rollout workers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    bucket_mb: float = Field(32.0, gt=0.0, description="weight-sync bucket size in MiB")
    check_fingerprint: bool = Field(
        True, description="compare rollout and learner weight fingerprints after every sync"
    )
    probe_prompts: int = Field(
        8,
        ge=0,
        description="behavioural check after every sync: every rollout engine and the learner "
        "score this many held-out prompts (log-probs at T=1) and must agree; 0 = off",
    )
    probe_tolerance: Optional[float] = Field(
        None,
        gt=0.0,
        description="largest allowed mean |engine - learner| probe log-prob in nats per token "
        "(default by model.dtype: 1e-3 for float32, measured gaps at most 1.5e-5; 0.1 for "
        "bfloat16/float16, an estimate; docs/cluster.md)",
    )
    max_rollout_logp_diff: Optional[float] = Field(
        1.0,
        gt=0.0,
        description="stop the run when a step's actor/rollout_logp_abs_diff (mean |rollout "
        "engine - learner| log-prob of the sampled tokens) exceeds this; null = no check. Not "
        "applied to a batch one policy version old (trainer.async_mode=one_step_off)",
    )


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # e.g. "float32"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.torch_dtype).element_size()


def make_manifest(
    named_shapes: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
) -> list[ParamSpec]:
    return [
        ParamSpec(name, tuple(shape), str(dtype).removeprefix("torch."))
        for name, shape, dtype in named_shapes
    ]


def plan_buckets(manifest: list[ParamSpec], bucket_bytes: int) -> list[list[int]]:
    """Consecutive parameters of one dtype packed up to `bucket_bytes`; a larger one goes alone."""
    buckets: list[list[int]] = []
    size, dtype = 0, None
    for i, spec in enumerate(manifest):
        if buckets and spec.dtype == dtype and size + spec.nbytes <= bucket_bytes:
            buckets[-1].append(i)
            size += spec.nbytes
        else:
            buckets.append([i])
            size, dtype = spec.nbytes, spec.dtype
    return buckets


DIGEST_CHUNK = 1 << 24  # words per pass: bounds the int64 temporaries to 128 MiB


def tensor_digest(name: str, tensor: torch.Tensor) -> tuple:
    """(name, shape, dtype, sums) of one tensor's bit pattern: exact, so equal on any device.

    The raw bytes are read as unsigned 16-bit words and summed as integers, plain and weighted
    by position (the weighted sum catches swapped or shifted values that a plain sum misses).
    Integer sums do not depend on the reduction order, unlike float sums, whose last bits
    change with the thread count. Each pass's sums stay far below 2^63.
    """
    flat = tensor.detach().contiguous().reshape(-1)
    words = flat.view(torch.uint8) if flat.element_size() == 1 else flat.view(torch.int16)
    plain = weighted = 0
    for start in range(0, words.numel(), DIGEST_CHUNK):
        part = words[start : start + DIGEST_CHUNK].to(torch.int64) & 0xFFFF
        weights = torch.arange(start, start + part.numel(), device=part.device) % 251 + 1
        plain += int(part.sum())
        weighted += int((part * weights).sum())
    return name, tuple(tensor.shape), str(tensor.dtype), plain, weighted


def combine_digests(digests: Iterable[tuple]) -> str:
    h = hashlib.sha256()
    for digest in sorted(digests, key=lambda d: d[0]):
        h.update(repr(digest).encode())
    return h.hexdigest()[:16]


def fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Order-independent hash of a model's weights (see `tensor_digest`)."""
    return combine_digests(tensor_digest(name, t) for name, t in named_tensors)


class SyncGroup:
    """A process group of learner rank 0 (rank 0) and every rollout worker (ranks 1..W).

    Rank 0 creates the TCP store first (`create_store`) and shares its port; then every member
    constructs its SyncGroup concurrently (construction blocks until all have joined).
    """

    def __init__(
        self,
        host: str,
        port: int,
        rank: int,
        world_size: int,
        backend: str = "gloo",
        timeout_s: float = 600.0,
        store: dist.TCPStore | None = None,
    ):
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
        self.store, self.rank, self.world_size = store, rank, world_size
        prefix = dist.PrefixStore(GROUP_PREFIX, store)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(prefix, rank, world_size, timeout)
        elif backend == "nccl":
            self.pg = dist.ProcessGroupNCCL(prefix, rank, world_size)
        else:
            raise ValueError(f"unknown sync backend {backend!r}; valid: gloo, nccl")

    @staticmethod
    def create_store(host: str, world_size: int, timeout_s: float = 600.0) -> dist.TCPStore:
        """The master store on rank 0's host; the OS picks the port (read `.port`)."""
        return dist.TCPStore(
            host,
            0,
            world_size,
            is_master=True,
            wait_for_workers=False,
            timeout=datetime.timedelta(seconds=timeout_s),
        )

    def broadcast(self, tensor: torch.Tensor):
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        return self.pg.broadcast([tensor], opts)


def send_buckets(
    group: SyncGroup,
    manifest: list[ParamSpec],
    plan: list[list[int]],
    tensors: Iterator[torch.Tensor],
    device: torch.device,
) -> tuple[int, str]:
    """Rank 0: pack the tensors (in manifest order) into buckets and broadcast.

    Returns (bytes sent, fingerprint of what was sent). `tensors` must yield exactly the
    manifest's tensors in order; with ZeRO-3 it gathers lazily, so every learner rank iterates
    its own copy of it even though only rank 0 calls this.
    """
    pending, sent, digests = [], 0, []
    for bucket in plan:
        parts = []
        for i in bucket:
            part = next(tensors).detach()
            if part.numel() != manifest[i].numel:
                raise RuntimeError(
                    f"weight sync: {manifest[i].name} has {part.numel()} elements, "
                    f"manifest says {manifest[i].numel}"
                )
            digests.append(tensor_digest(manifest[i].name, part.reshape(manifest[i].shape)))
            parts.append(part.reshape(-1))
        flat = torch.cat(parts).to(device=device, dtype=manifest[bucket[0]].torch_dtype)
        pending.append((group.broadcast(flat), flat))
        sent += flat.numel() * flat.element_size()
        if len(pending) >= IN_FLIGHT:
            pending.pop(0)[0].wait()
    for work, _ in pending:
        work.wait()
    return sent, combine_digests(digests)


def receive_buckets(
    group: SyncGroup,
    manifest: list[ParamSpec],
    plan: list[list[int]],
    device: torch.device,
    load: Callable[[list[tuple[str, torch.Tensor]]], None],
    corrupt: Callable[[int, torch.Tensor], None] | None = None,
) -> int:
    """Ranks 1..W: receive each bucket and hand its (name, tensor) views to `load`.

    `corrupt` is a test hook called with (bucket index, flat buffer) before loading.
    """
    received = 0
    for b, bucket in enumerate(plan):
        numel = sum(manifest[i].numel for i in bucket)
        flat = torch.empty(numel, dtype=manifest[bucket[0]].torch_dtype, device=device)
        group.broadcast(flat).wait()
        if corrupt is not None:
            corrupt(b, flat)
        received += flat.numel() * flat.element_size()
        views, offset = [], 0
        for i in bucket:
            spec = manifest[i]
            views.append((spec.name, flat[offset : offset + spec.numel].view(spec.shape)))
            offset += spec.numel
        load(views)
    return received
