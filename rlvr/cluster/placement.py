"""Which GPU each vLLM engine and learner rank gets: pure planning, checked before any actor starts.

Two modes (config `placement.mode`):
- disaggregated: engines and learners on separate GPUs; needs engines x TP + learners GPUs.
  Weights go from learner rank 0 to the engines over NCCL.
- colocated: one learner rank and one vLLM worker share each GPU (vLLM sleeps while the learner
  steps); needs learners == engines x TP GPUs. Weights move by CUDA IPC, which only works
  between processes on the same GPU, so every vLLM GPU must host a learner rank.
An engine's tensor-parallel group stays on one node (its workers talk over NVLink/PCIe, and the
rollout actor launches them as local processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlvr.errors import ConfigError

MODES = ("disaggregated", "colocated")


class PlacementConfig(BaseModel):
    """The `placement` section: where vLLM engines and learners run on a GPU cluster."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["disaggregated", "colocated"] = Field(
        "disaggregated",
        description="disaggregated: engines and learners on separate GPUs, weights sent over "
        "NCCL; colocated: one learner rank and one vLLM worker share each GPU, vLLM sleeps during "
        "the update, weights move by CUDA IPC",
    )
    gpu_memory_gib: float = Field(
        80.0,
        gt=0.0,
        description="memory of one GPU in GiB, for the fit check (rlvr plan; an H100 80GB "
        "reports 79.2)",
    )
    offload_learner: bool = Field(
        True,
        description="colocated: move the learner's optimizer state off the GPU while vLLM "
        "generates",
    )
    check_fit: bool = Field(
        True,
        description="rlvr train refuses a recipe whose memory plan does not fit (false, or rlvr "
        "train --force, starts it anyway)",
    )


class PlacementError(ConfigError):
    """Requested engines and learners do not fit the cluster; the message says what is missing."""


@dataclass(frozen=True)
class Slot:
    node: int  # index into the node list given to `plan_placement`
    gpu: int  # index of the GPU on that node


@dataclass(frozen=True)
class PlacementPlan:
    mode: str
    engines: list[list[Slot]]  # engines[i]: the TP GPUs of engine i, all on one node
    learners: list[Slot]  # learners[r]: the GPU of learner rank r

    @property
    def gpus_used(self) -> int:
        slots = {s for e in self.engines for s in e} | set(self.learners)
        return len(slots)

    def describe(self) -> str:
        tp = len(self.engines[0]) if self.engines else 0
        nodes = sorted({s.node for s in self.learners} | {s.node for e in self.engines for s in e})
        return (
            f"{self.mode}: {len(self.engines)} vLLM engine(s) x TP {tp} + {len(self.learners)} "
            f"learner rank(s) on {self.gpus_used} GPU(s) of {len(nodes)} node(s)"
        )


def required_gpus(mode: str, engines: int, tp: int, learners: int) -> int:
    return engines * tp + learners if mode == "disaggregated" else learners


def plan_placement(
    mode: str, engines: int, tp: int, learners: int, node_gpus: list[int]
) -> PlacementPlan:
    """Assign GPUs, or raise PlacementError naming what is missing.

    node_gpus: GPUs of each node of the cluster (a CPU-only head node counts 0).
    """
    if mode not in MODES:
        raise PlacementError(
            f"placement.mode={mode!r} is not allowed; choose one of: {', '.join(MODES)}"
        )
    if min(engines, tp, learners) < 1:
        raise PlacementError(
            f"need at least one engine, TP >= 1 and one learner rank "
            f"(got {engines}, {tp}, {learners})"
        )
    if mode == "colocated" and learners != engines * tp:
        raise PlacementError(
            f"placement.mode=colocated puts one learner rank on each vLLM GPU: learner.num_workers="
            f"{learners} must equal rollout.num_workers x rollout.vllm.tensor_parallel_size = "
            f"{engines} x {tp} = {engines * tp}"
        )
    need, have = required_gpus(mode, engines, tp, learners), sum(node_gpus)
    if need > have:
        what = (
            f"{engines} engine(s) x TP {tp} + {learners} learner rank(s)"
            if mode == "disaggregated"
            else f"{learners} GPUs shared by learner ranks and {engines} engine(s) x TP {tp}"
        )
        raise PlacementError(
            f"{mode} placement needs {need} GPUs ({what}); the Ray cluster has {have} "
            f"on {len(node_gpus)} node(s) {node_gpus}: {need - have} missing"
        )
    if tp > max(node_gpus):
        raise PlacementError(
            f"rollout.vllm.tensor_parallel_size={tp} needs {tp} GPUs on one node; the "
            f"largest node has {max(node_gpus)}"
        )
    free = [list(range(n)) for n in node_gpus]
    engine_slots = _place_engines(engines, tp, free, node_gpus)
    if mode == "colocated":  # learner rank r shares the GPU of engine r // tp's worker r % tp
        learner_slots = [s for e in engine_slots for s in e]
    else:  # the engines took engines x tp GPUs, so at least `learners` are left
        learner_slots = [Slot(node, gpu) for node, gpus in enumerate(free) for gpu in gpus][
            :learners
        ]
    return PlacementPlan(mode, engine_slots, learner_slots)


def _place_engines(
    engines: int, tp: int, free: list[list[int]], node_gpus: list[int]
) -> list[list[Slot]]:
    """Each engine on the node with the fewest free GPUs that still hold its TP group (best fit:
    keeps whole nodes free for later engines). Mutates `free`."""
    placed = []
    for i in range(engines):
        fitting = [n for n in range(len(free)) if len(free[n]) >= tp]
        if not fitting:
            raise PlacementError(
                f"engine {i} of {engines} needs {tp} free GPUs on one node; free per node after "
                f"{i} engine(s): {[len(f) for f in free]} (nodes have {node_gpus}): "
                "use fewer engines, "
                "a TP size that divides the GPUs per node, or more nodes"
            )
        node = min(fitting, key=lambda n: (len(free[n]), n))
        placed.append([Slot(node, free[node].pop(0)) for _ in range(tp)])
    return placed


def plan_for_config(cfg, node_gpus: list[int]) -> PlacementPlan:
    rc = cfg.rollout
    return plan_placement(
        cfg.placement.mode,
        rc.num_workers,
        rc.vllm.tensor_parallel_size,
        cfg.learner.num_workers,
        node_gpus,
    )
