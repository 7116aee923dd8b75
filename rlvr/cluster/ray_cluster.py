"""The Ray side of a run: start or join Ray, create the actors, and talk to them.

Actor classes are plain classes (`rlvr.learner.deepspeed_learner.Learner`,
`rollout.worker.RolloutWorker`) wrapped with `ray.remote` here. Every wait has a timeout and names
what it waited for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from rlvr.cluster.reaper import tag_and_watch
from rlvr.errors import ActorFailure, ConfigError, PipelineError, one_line
from rlvr.learner.batch import MicroBatching, TrainBatch, plan_update, shard_rows
from rlvr.learner.lora import peft_kwargs
from rlvr.learner.spec import LearnerSpec
from rlvr.seeds import Stream, derive_seed
from rlvr.train.probe import check_probe
from rollout.types import Completions, SamplingSettings


class RayConfig(BaseModel):
    """The `ray` section: which Ray to run on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    address: Optional[str] = Field(
        None, description="Ray cluster address; default: $RAY_ADDRESS, else a local Ray"
    )
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of a local Ray (default: all)")


def init_ray(cfg, log=print) -> None:
    """Join $RAY_ADDRESS / ray.address, or start a local Ray sized to fit the actors."""
    import ray

    env = {
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore::FutureWarning",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }  # see rlvr.cli.quiet_threads
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        with one_line_start(f"cannot join Ray at {address}"):
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        return
    need = (
        cfg.learner.num_workers * cfg.learner.cpus_per_worker
        + cfg.rollout.num_workers * cfg.rollout.cpus_per_worker
    )
    cores = os.cpu_count() or 1
    num_cpus = cfg.ray.num_cpus or max(cores, math.ceil(need))
    if num_cpus > cores:
        log(
            f"local Ray: the actors reserve {need:g} CPUs on {cores} cores; oversubscribing "
            "(phases alternate, so they rarely compute at once)"
        )
    tag_and_watch()  # the local Ray dies with this process, even when it is killed
    with one_line_start("local Ray did not start"):
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env={"env_vars": env},
            log_to_driver=True,
            configure_logging=False,
        )


@contextlib.contextmanager
def one_line_start(what: str):
    """Ray's start-up failures (its node start-up timeout on a loaded machine, an unreachable
    address) become one PipelineError line instead of a traceback through Ray's internals."""
    try:
        yield
    except Exception as exc:
        raise PipelineError(f"{what}: {one_line(exc)}") from None


class Cluster:
    """Rollout workers and learner ranks of one run, and the weight-sync group between them."""

    def __init__(self, cfg, model_path: str, log=print):
        import ray

        self.cfg, self.timeout = cfg, cfg.trainer.actor_timeout_s
        self.vllm, self.workers, self.learners = None, [], []
        self.probe_tokens: list[list[int]] = []  # set by the run (rlvr.train.probe)
        try:
            if cfg.rollout.engine == "vllm":
                self._start_vllm(ray, model_path, log)
            else:
                self._start_hf(ray, model_path, log)
        except BaseException:
            self.shutdown()  # no actor outlives a failed start (they would hold CPUs, GPUs, ports)
            raise

    def _start_hf(self, ray, model_path: str, log) -> None:
        from rlvr.learner.deepspeed_learner import Learner
        from rollout.worker import RolloutWorker

        cfg = self.cfg
        self._check_resources(ray)
        rc, lc = cfg.rollout, cfg.learner
        local = not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
        cores = os.cpu_count() or 1
        worker_cls = ray.remote(num_cpus=rc.cpus_per_worker, num_gpus=rc.gpus_per_worker)(
            RolloutWorker
        )
        self.workers = [
            worker_cls.remote(
                i,
                rc,
                model_path,
                dtype=cfg.model.dtype,
                trust_remote_code=cfg.model.trust_remote_code,
                threads=threads(local, cores, rc.num_workers, rc.cpus_per_worker),
                lora=peft_kwargs(lc.lora)
                if lc.lora.enabled and lc.lora.sync == "adapter"
                else None,
            )
            for i in range(rc.num_workers)
        ]
        learner_cls = ray.remote(num_cpus=lc.cpus_per_worker, num_gpus=lc.gpus_per_worker)(Learner)
        self.learners = [
            learner_cls.remote(
                r,
                lc.num_workers,
                LearnerSpec.from_config(cfg, model_path),
                threads=threads(local, cores, lc.num_workers, lc.cpus_per_worker),
            )
            for r in range(lc.num_workers)
        ]
        self.host, port = self.get(self.learners[0].address.remote(), "starting learner rank 0")
        self.get(
            [lr.setup.remote(self.host, port) for lr in self.learners]
            + [w.ready.remote() for w in self.workers],
            "starting DeepSpeed and the rollout engines",
        )
        self._check_packing(log)
        self._init_sync()
        log(
            f"cluster: {rc.num_workers} rollout worker(s), {lc.num_workers} learner rank(s), "
            f"ZeRO-{lc.zero_stage}, sync over {self.backend}"
        )

    def _start_vllm(self, ray, model_path: str, log) -> None:
        """Runs with vLLM engines: on GPUs, placement is checked before any actor starts
        (rlvr.cluster.placement); on CPU (learner.gpus_per_worker=0) they are plain actors."""
        from rlvr.cluster.vllm_cluster import VLLMCluster
        from rlvr.learner.gpu_learner import GPULearner
        from rollout.worker import RolloutWorker

        cfg, rc, lc = self.cfg, self.cfg.rollout, self.cfg.learner
        local = not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
        cores = os.cpu_count() or 1
        counts = (
            threads(local, cores, rc.num_workers, rc.cpus_per_worker),
            threads(local, cores, lc.num_workers, lc.cpus_per_worker),
        )
        self.vllm = VLLMCluster(cfg, model_path, ray, self.get, log, threads=counts)
        self.workers, self.learners = self.vllm.start(
            ray.remote(RolloutWorker), ray.remote(GPULearner)
        )
        self.host, port = self.get(self.learners[0].address.remote(), "starting learner rank 0")
        self.get([lr.setup.remote(self.host, port) for lr in self.learners], "starting DeepSpeed")
        self._check_packing(log)
        self.vllm.init_sync(
            self.workers,
            self.learners,
            *self.get(self.learners[0].address.remote(), "choosing the transfer port"),
        )
        self.backend = self.vllm.backend
        log(
            f"cluster: {self.vllm.describe()}, ZeRO-{lc.zero_stage}, sync over {self.backend} "
            "(vLLM's weight-transfer API)"
        )

    def _check_packing(self, log) -> None:
        """With a token budget, whether micro-batches are packed padding-free (the learners
        checked that this model's attention keeps packed sequences apart) or padded rows."""
        lc = self.cfg.learner
        packs = self.get([lr.padding_free.remote() for lr in self.learners], "packing check")
        self.micro = MicroBatching(lc.micro_batch_size, lc.max_tokens_per_micro_batch, all(packs))
        if lc.max_tokens_per_micro_batch is not None:
            if all(packs):
                how = "padding-free packed rows"
            elif lc.padding_free:
                how = "padded rows (the model's attention does not separate packed sequences)"
            else:
                how = "padded rows of similar lengths (learner.padding_free=false)"
            log(f"micro-batches: up to {lc.max_tokens_per_micro_batch} tokens, {how}")

    def _check_resources(self, ray) -> None:
        cfg, have = self.cfg, ray.cluster_resources()
        gpus = (
            cfg.learner.num_workers * cfg.learner.gpus_per_worker
            + cfg.rollout.num_workers * cfg.rollout.gpus_per_worker
        )
        if gpus > have.get("GPU", 0):
            raise ConfigError(
                f"the run needs {gpus:g} GPUs (learner + rollout gpus_per_worker x num_workers); "
                f"the Ray cluster has {have.get('GPU', 0):g}"
            )

    def get(self, refs, what: str):
        """ray.get with the run's timeout. An actor that died or hung raises ActorFailure naming
        it (rollout worker i, learner rank r) and its cause; an error raised by the code in an
        actor raises PipelineError, unless a peer's death caused it (the weight-sync group)."""
        import ray

        try:
            return ray.get(refs, timeout=self.timeout)
        except ray.exceptions.GetTimeoutError:
            late = self.unanswered(refs)
            raise ActorFailure(
                f"{what}: no answer within trainer.actor_timeout_s={self.timeout:g} s"
                + (f" from {', '.join(late)}" if late else "")
            ) from None
        except ray.exceptions.RayActorError as exc:
            dead = self.dead_actors() or [("an actor", exc)]
            raise ActorFailure(f"{what}: {describe_deaths(dead)}") from exc
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            said = f"{type(cause).__name__}: {first_line(cause)}"
            dead = self.dead_actors()
            if dead:  # the survivor's error (a raw gloo string) only echoes the death
                raise ActorFailure(f"{what}: {describe_deaths(dead)}") from exc
            if is_communication_error(cause):
                raise ActorFailure(f"{what}: the weight-sync group failed ({said})") from exc
            raise PipelineError(f"{what}: {said}") from exc

    def unanswered(self, refs) -> list[str]:
        """Names of the actors whose calls among `refs` have not returned (a hang's culprits)."""
        import ray

        refs = refs if isinstance(refs, list) else [refs]
        if not refs:
            return []
        _, late = ray.wait(refs, num_returns=len(refs), timeout=0)
        owner = {actor._actor_id: name for name, actor in self.named_actors()}
        names = [owner.get(ref.task_id().actor_id(), "an actor") for ref in late]
        return list(dict.fromkeys(names))

    def named_actors(self) -> list[tuple[str, object]]:
        return [(f"rollout worker {i}", w) for i, w in enumerate(self.workers)] + [
            (f"learner rank {r}", lr) for r, lr in enumerate(self.learners)
        ]

    def dead_actors(self, wait_s: float = 5.0) -> list[tuple[str, BaseException]]:
        """(name, error) of every actor that no longer answers because it died."""
        import ray

        named = self.named_actors()
        pings = [actor.__ray_ready__.remote() for _, actor in named]
        ray.wait(pings, num_returns=len(pings), timeout=wait_s)
        dead = []
        for (name, _), ping in zip(named, pings):
            try:
                ray.get(ping, timeout=0)
            except ray.exceptions.RayActorError as exc:
                dead.append((name, exc))
            except Exception:  # busy (a hang shows as the timeout) or any other answer: alive
                pass
        return dead

    def _init_sync(self) -> None:
        cfg = self.cfg
        self.backend = (
            "nccl"
            if cfg.rollout.gpus_per_worker > 0 and cfg.learner.gpus_per_worker > 0
            else "gloo"
        )
        world, lead = 1 + len(self.workers), self.learners[0]
        port = self.get(
            lead.create_sync_store.remote(self.host, world, self.timeout), "creating the sync store"
        )
        manifest = self.get(lead.manifest.remote(), "reading the parameter manifest")
        bucket_bytes = int(cfg.sync.bucket_mb * 2**20)
        joins = [lead.join_sync.remote(self.host, world, self.backend, bucket_bytes, self.timeout)]
        joins += [
            w.join_sync.remote(
                self.host, port, i + 1, world, self.backend, manifest, bucket_bytes, self.timeout
            )
            for i, w in enumerate(self.workers)
        ]
        self.get(joins, "forming the weight-sync group")

    # ---- phases ----------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Completions:
        """Split prompts over the workers (contiguous, near-equal parts); prompt-major output."""
        count = min(len(self.workers), len(prompts))
        bounds = [len(prompts) * i // count for i in range(count + 1)]
        refs = [
            w.generate.remote(
                prompts[bounds[i] : bounds[i + 1]],
                dataclasses.replace(sampling, seed=derive_seed(sampling.seed, Stream.WORKER, i)),
            )
            for i, w in enumerate(self.workers[:count])
        ]
        return Completions.concat(self.get(refs, "generation"), bounds[:count])

    def update(self, batch: TrainBatch, seed: int) -> list[dict[str, float]]:
        """One update of every learner rank on its shard of `batch`; the ranks' metric sums."""
        return self.start_update(batch, seed)()

    def start_update(self, batch: TrainBatch, seed: int) -> Callable[[], list[dict[str, float]]]:
        """Start the update without waiting; call the returned function for its result (the
        rollout of the next step runs meanwhile under trainer.async_mode=one_step_off)."""
        lc = self.cfg.learner
        shards = shard_rows(batch, len(self.learners))
        if min(len(s) for s in shards) == 0:
            raise RuntimeError(
                f"update: {len(batch)} sequences cannot feed {len(self.learners)} learner ranks"
            )
        full = lc.update == "full-batch"
        if self.vllm is not None:
            self.vllm.before_update(self.workers)
        plans = plan_update(
            batch,
            shards,
            epochs=lc.epochs,
            mini_batches=1 if full else lc.mini_batches,
            micro=self.micro,
            seed=seed,
        )
        refs = [
            lr.update.remote(batch.select(shard), plan, full)
            for lr, shard, plan in zip(self.learners, shards, plans)
        ]
        return lambda: self.get(refs, "learner update")

    def sync_weights(self) -> dict:
        """Send the learner's weights to every worker and check each worker's fingerprint."""
        if self.vllm is not None:
            sent, received = self.vllm.sync_weights(self.workers, self.learners)
        else:
            sends = [lr.send_weights.remote() for lr in self.learners]
            recvs = [w.receive_weights.remote() for w in self.workers]
            sent = self.get(sends, "sending weights")[0]
            received = [[got["fingerprint"]] for got in self.get(recvs, "receiving weights")]
        checked = 0
        if self.cfg.sync.check_fingerprint:
            checked = check_fingerprints(sent["fingerprint"], received)
        return {
            "bytes": sent["bytes"],
            "fingerprint": sent["fingerprint"],
            "checked_workers": checked,
            **self.probe(),
        }

    def probe(self) -> dict[str, float]:
        """The behavioural check (rlvr.train.probe): every engine and the learner score the probe
        tokens; raises PipelineError naming the first engine that disagrees."""
        if not self.probe_tokens:
            return {}
        began = time.perf_counter()
        scored = [w.score.remote(self.probe_tokens) for w in self.workers]
        learner = [lr.score.remote(self.probe_tokens) for lr in self.learners]
        reference = self.get(learner, "learner scoring the sync probe")[0]
        engines = self.get(scored, "rollout workers scoring the sync probe")
        gaps = check_probe(reference, engines, self.cfg.sync.probe_tolerance)
        return {**gaps, "sync/probe_s": time.perf_counter() - began}

    # ---- learner state (every rank takes part: ZeRO-3 gathers are collectives) ---------------
    def save_policy(self, path: str) -> None:
        """The policy in Hugging Face format (written by learner rank 0)."""
        self._learners("save_policy", path)

    def save_learner_state(self, path: str) -> None:
        """DeepSpeed engine state of every rank: weights, optimizer, lr scheduler (colocated
        vLLM engines sleep meanwhile: the learner reloads its optimizer state to save it)."""
        if self.vllm is None:
            self._learners("save_checkpoint", path)
            return
        with self.vllm.asleep_for_checkpoint(self.workers):
            self._learners("save_checkpoint", path)

    def load_learner_state(self, path: str) -> None:
        self._learners("load_checkpoint", path)

    def full_weights(self) -> dict:
        """Every parameter in full, as learner rank 0 holds it (CPU tensors)."""
        return self._learners("full_state_dict")[0]

    def lora_weights(self) -> dict:
        """LoRA runs: the frozen base and the adapter as learner rank 0 holds them (CPU)."""
        return self._learners("lora_weights")[0]

    def _learners(self, method: str, *args):
        return self.get(
            [getattr(lr, method).remote(*args) for lr in self.learners], f"learner {method}"
        )

    def shutdown(self) -> None:
        import ray

        for actor in self.workers + self.learners:
            ray.kill(actor)
        if self.vllm is not None:
            self.vllm.shutdown()


def check_fingerprints(sent: str, received: list[list[str]]) -> int:
    """Compare the learner's fingerprint with every rollout worker's (received[i]: one per
    engine process of worker i, several for tensor-parallel vLLM). Returns how many were
    compared; raises PipelineError naming the first worker that differs."""
    for i, per_process in enumerate(received):
        bad = [k for k, fp in enumerate(per_process) if fp != sent]
        if bad:
            where = f" (vLLM worker(s) {bad} of {len(per_process)})" if len(per_process) > 1 else ""
            raise PipelineError(
                f"weight sync: rollout worker {i} fingerprint {per_process[bad[0]]} != learner "
                f"{sent}{where}; its weights are not the learner's"
            )
    return sum(map(len, received))


def describe_deaths(dead: list[tuple[str, BaseException]]) -> str:
    """'rollout worker 1 died (cause)' for the first dead actor, and how many more died."""
    name, exc = dead[0]
    more = f" (and {len(dead) - 1} more actor(s))" if len(dead) > 1 else ""
    return f"{name} died ({death_cause(exc)}){more}"


def death_cause(exc: BaseException) -> str:
    """Ray's account of an actor's death, in one line."""
    text = " ".join(str(exc).split())
    for marker in ("The actor died because ", "The actor is dead because ", "Worker exit type: "):
        if marker in text:
            cause = text.split(marker, 1)[1].split(" Some common causes", 1)[0]
            return cause[:200].rstrip(". ")
    return first_line(exc)[:200]


COMMUNICATION_ERRORS = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe")


def is_communication_error(exc: BaseException) -> bool:
    """A torch.distributed failure between actors (a peer vanished or the group timed out)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return type(exc).__name__ == "DistBackendError" or any(m in text for m in COMMUNICATION_ERRORS)


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def threads(local: bool, cores: int, count: int, cpus: float) -> int:
    """torch threads per actor: locally phases alternate, so a kind of actor shares all cores."""
    if local:
        return max(1, cores // count)
    return max(1, int(cpus))
