"""The vLLM side of `rlvr.cluster.ray_cluster.Cluster`: GPU placement, actor start-up order,
weight transfer, and sleep/wake around the learner step in colocated mode.

Disaggregated: each engine actor asks Ray for TP GPUs (its workers are local processes of that
actor, so the group lands on one node), each learner rank for one; weights go over NCCL.
Colocated: one placement-group bundle of TP GPUs per engine; the engine's TP learner ranks take
one GPU each in it, and the engine actor (no GPU of its own in Ray's books) runs on exactly
those GPUs. Start-up: learners are created (cheap), the engines are built and put to sleep,
then DeepSpeed allocates; the first sync wakes them. Each step then runs as the mature stacks
order it: generate, sleep vLLM, update, offload learner state, wake weights, send over CUDA
IPC, wake the KV cache, reset the prefix cache, generate.
"""

from __future__ import annotations

from rlvr.cluster.placement import plan_for_config
from rlvr.learner.spec import LearnerSpec
from rlvr.plan.memory import max_model_len
from rollout.vllm_engine import EngineSetup


def node_gpu_counts(ray) -> list[int]:
    return [int(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]


class VLLMCluster:
    def __init__(self, cfg, model_path: str, ray, get, log=print):
        self.cfg, self.model_path, self.ray, self.get, self.log = cfg, model_path, ray, get, log
        self.plan = plan_for_config(cfg, node_gpu_counts(ray))  # raises before any actor starts
        self.colocated = cfg.placement.mode == "colocated"
        self.tp = cfg.rollout.vllm.tensor_parallel_size
        self.groups: list = []
        self.asleep = False

    def setup(self) -> EngineSetup:
        """What every engine gets beyond `rollout.vllm` (engine i seeds with its seed + i)."""
        return EngineSetup(
            dtype=self.cfg.model.dtype,
            max_model_len=max_model_len(self.cfg),
            transfer_backend="ipc" if self.colocated else "nccl",
            enable_sleep_mode=self.colocated,
            trust_remote_code=self.cfg.model.trust_remote_code,
        )

    # ---- start-up ----------------------------------------------------------------------------
    def start(self, worker_cls, learner_cls):
        """Create learners and engines in the order placement needs; returns (workers, learners)."""
        cfg, rc, lc = self.cfg, self.cfg.rollout, self.cfg.learner
        spec = LearnerSpec.from_config(cfg, self.model_path)
        if self.colocated:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            bundle = {"GPU": self.tp, "CPU": self.tp * lc.cpus_per_worker + rc.cpus_per_worker}
            self.groups = [placement_group([bundle]) for _ in range(rc.num_workers)]
            self.get([g.ready() for g in self.groups], "reserving GPUs for colocated engines")
            in_group = [
                PlacementGroupSchedulingStrategy(
                    placement_group=self.groups[r // self.tp], placement_group_bundle_index=0
                )
                for r in range(lc.num_workers)
            ]
            learners = [
                learner_cls.options(
                    num_gpus=1, num_cpus=lc.cpus_per_worker, scheduling_strategy=s
                ).remote(r, lc.num_workers, spec)
                for r, s in enumerate(in_group)
            ]
            gpu_ids = self.get([lr.gpu_ids.remote() for lr in learners], "placing learner ranks")
            workers = [
                worker_cls.options(
                    num_gpus=0,
                    num_cpus=rc.cpus_per_worker,
                    scheduling_strategy=in_group[i * self.tp],
                ).remote(
                    i,
                    rc,
                    self.model_path,
                    dtype=cfg.model.dtype,
                    trust_remote_code=cfg.model.trust_remote_code,
                    vllm_setup=self.setup(),
                    cuda_visible_devices=",".join(
                        map(str, gpu_ids[i * self.tp : (i + 1) * self.tp])
                    ),
                )
                for i in range(rc.num_workers)
            ]
        else:
            workers = [
                worker_cls.options(num_gpus=self.tp, num_cpus=rc.cpus_per_worker).remote(
                    i,
                    rc,
                    self.model_path,
                    dtype=cfg.model.dtype,
                    trust_remote_code=cfg.model.trust_remote_code,
                    vllm_setup=self.setup(),
                )
                for i in range(rc.num_workers)
            ]
            learners = [
                learner_cls.options(num_gpus=1, num_cpus=lc.cpus_per_worker).remote(
                    r, lc.num_workers, spec
                )
                for r in range(lc.num_workers)
            ]
        # vLLM sizes its KV cache from the free memory it finds: build it before DeepSpeed
        # allocates.
        self.get([w.ready.remote() for w in workers], "building the vLLM engines")
        if self.colocated:
            self._engines(workers, "sleep", cfg.rollout.vllm.sleep_level)
            self.asleep = True
        return workers, learners

    def init_sync(self, workers, learners, host: str, port: int) -> None:
        """Trainer side on every learner rank; rank 0 opens the group with every engine worker."""
        if self.colocated and self.cfg.placement.offload_learner:
            self.get([lr.offload_states.remote() for lr in learners], "offloading learner state")
        backend = "ipc" if self.colocated else "nccl"
        bucket = int(self.cfg.sync.bucket_mb * 2**20)
        timeout = self.cfg.trainer.actor_timeout_s
        self.get(
            [
                lr.init_vllm_sync.remote(
                    backend, workers, [self.tp] * len(workers), bucket, host, port, timeout
                )
                for lr in learners
            ],
            f"forming the vLLM weight transfer ({backend})",
        )

    # ---- per step --------------------------------------------------------------------------
    def before_update(self, workers) -> None:
        """Colocated: free the GPUs for the learner (sleep drops the KV cache, and the weights at
        level 2; level 1 parks them in pinned CPU memory)."""
        if self.colocated and not self.asleep:
            self._engines(workers, "sleep", self.cfg.rollout.vllm.sleep_level)
            self.asleep = True

    def sync_weights(self, workers, learners) -> tuple[dict, list[list[str]]]:
        """Send, reset every prefix cache (checked); returns (what learner rank 0 sent, every
        engine's per-worker fingerprints of what it received)."""
        if self.colocated:
            if self.cfg.placement.offload_learner:
                self.get(
                    [lr.offload_states.remote() for lr in learners], "offloading learner state"
                )
            if self.asleep:
                self._engines(workers, "wake_up", ["weights"])
        sent = self.get([lr.send_weights.remote() for lr in learners], "sending weights into vLLM")[
            0
        ]
        received = self._engines(
            workers, "after_sync"
        )  # wakes the KV cache, resets the prefix cache
        self.asleep = False
        return sent, received

    def _engines(self, workers, method: str, *args):
        return self.get([w.engine_call.remote(method, *args) for w in workers], f"vLLM {method}")

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for group in self.groups:
            remove_placement_group(group)
