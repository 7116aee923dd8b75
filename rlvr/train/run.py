"""All a training run holds besides the loop: directory, data, tokenizer, plug-ins, actors."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlvr.plan.memory import max_model_len
from rlvr.seeds import Stream, derive_seed
from rlvr.tasks.loading import encode_prompts
from rlvr.train import faults
from rlvr.train.evaluation import eval_metrics, eval_rollouts
from rlvr.train.metrics import RunLogger, read_history
from rlvr.train.preflight import Checked, preflight
from rlvr.train.probe import probe_prompts
from rlvr.train.rollouts import Rollouts
from rlvr.train.scoring import RewardSpec
from rlvr.train.tracking import SAMPLES_FILE, extremes, random_picks, sample_rows
from rollout.gates import DynamicSampling
from rollout.samplers import make_sampler
from rollout.schedules import make_schedule
from rollout.types import Gate, PromptSampler, RolloutSchedule, SamplingSettings

EVENT_KINDS = ("restart", "preempt")  # metrics.jsonl records that a resume keeps

if TYPE_CHECKING:  # annotations only: these import the run's own modules or heavy packages
    from transformers import PreTrainedTokenizerBase

    from rewards.pool import VerifierPool
    from rlvr.cluster.ray_cluster import Cluster
    from rlvr.config.schema import Config


class TrainerConfig(BaseModel):
    """The `trainer` section: length of the run, its directory, checkpoints and limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int = Field(100, ge=1, description="RL steps")
    prompts_per_step: int = Field(64, ge=1, description="B: prompts selected per step")
    seed: int = Field(0, ge=0, description="every random stream derives from it (rlvr.seeds)")
    output_dir: str = Field("runs", description="parent of run directories")
    name: str = Field("", description="run directory name (default: recipe name + time)")
    checkpoint_every: int = Field(
        50, ge=0, description="steps between checkpoints (0 = only at the end)"
    )
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    resume: str = Field(
        "", description="'' = fresh run, 'auto' = newest checkpoint of the run dir, or a path"
    )
    actor_timeout_s: float = Field(900.0, gt=0.0, description="limit on every wait for a Ray actor")
    max_time_s: Optional[float] = Field(
        None, gt=0.0, description="stop (with a checkpoint) after this much wall time"
    )
    max_restarts: int = Field(
        3,
        ge=0,
        description="times an actor failure (a rollout worker or learner rank died or hung, the "
        "weight-sync group failed) restarts the cluster from the newest checkpoint (0 = never)",
    )
    preempt_grace_s: float = Field(
        60.0,
        gt=0.0,
        description="on SIGTERM/SIGINT: time to finish the step and write a checkpoint before "
        "the step is abandoned (rlvr.train.preempt)",
    )
    async_mode: Literal["off", "one_step_off"] = Field(
        "off",
        description="one_step_off: the rollout of step t+1 runs, with the weights of step t, "
        "while the learners update on step t's batch (samples one policy version old; the "
        "loss weighs them with truncated importance sampling; docs/cluster.md)",
    )
    max_completions: Optional[int] = Field(
        None,
        ge=1,
        description="stop (with an evaluation and a checkpoint) after the step whose generated "
        "completions bring the run's total to this (DARS stage 2 and DAPO refill rounds count)",
    )

    @field_validator("async_mode", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        """YAML 1.1 reads a bare `off` (in a recipe or `trainer.async_mode=off`) as false."""
        return "off" if value is False else value


@dataclass
class Run:
    """A run's directory, data, tokenizer, plug-ins, verifier pool and actors."""

    cfg: Config
    dir: Path
    tokenizer: PreTrainedTokenizerBase
    train_rows: list[dict]
    train_prompts: list[list[int]]
    eval_rows: list[dict]
    eval_prompts: list[list[int]]
    sampler: PromptSampler
    schedule: RolloutSchedule
    gate: Gate
    pool: VerifierPool
    cluster: Cluster
    pad_id: int
    rewards: RewardSpec
    data_record: dict  # prompts kept and over the length limit (kind "data" in metrics.jsonl)
    loggers: list[RunLogger] = field(default_factory=list)  # closed with the run

    @classmethod
    def start(cls, cfg, recipe: str | None, log, checked: Checked | None = None) -> Run:
        """Preflight (unless `checked` holds its result), then the run directory, Ray and the
        actors."""
        from rlvr.cluster.ray_cluster import Cluster, init_ray

        checked = checked or preflight(cfg, recipe, log)
        model_path, tokenizer, data, pool = (
            checked.model_path, checked.tokenizer, checked.data, checked.pool
        )  # fmt: skip
        run_dir = checked.run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.write_yaml(run_dir / "config.yaml")
        except BaseException:
            pool.close()
            raise
        log(f"run directory: {run_dir}")
        if pool.code_sandbox:
            log(f"code sandbox: {pool.code_sandbox}")
        if cfg.verifier.num_workers == 0:
            log(
                "verifier.num_workers=0: verifiers run in the controller without timeout, "
                "memory cap or crash recovery"
            )
        init_ray(cfg, log)
        try:
            cluster = Cluster(cfg, model_path, log)
        except BaseException:  # leave no Ray session or verifier processes behind a failed start
            import ray

            pool.close()
            ray.shutdown()
            raise
        cluster.probe_tokens = probe_prompts(
            data.eval_prompts, cfg.sync.probe_prompts, max_model_len(cfg) - 1
        )
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        sampler = make_sampler(
            cfg.sampler,
            len(data.train_rows),
            derive_seed(cfg.trainer.seed, Stream.PROMPTS),
            prompts=[r["prompt"] for r in data.train_rows],
        )
        gate = DynamicSampling(cfg.gate, cfg.trainer.prompts_per_step)
        return cls(
            cfg,
            run_dir,
            tokenizer,
            data.train_rows,
            data.train_prompts,
            data.eval_rows,
            data.eval_prompts,
            sampler,
            make_schedule(cfg.schedule),
            gate,
            pool,
            cluster,
            pad,
            RewardSpec.of(cfg, data.train_rows + data.eval_rows),
            data.record,
        )

    def sampling(self, n: int, step: int, round_: int, stage: int) -> SamplingSettings:
        """Sampling settings with a seed unique to (run seed, step, refill round, stage)."""
        rc = self.cfg.rollout
        seed = derive_seed(self.cfg.trainer.seed, Stream.ROLLOUT, step, round_, stage)
        return SamplingSettings(
            n=n,
            temperature=rc.temperature,
            top_p=rc.top_p,
            max_new_tokens=rc.max_new_tokens,
            seed=seed,
        )

    def logger(self, start: int, resume: dict) -> RunLogger:
        """The run's logger from step `start`; `resume`: the tracker state of the checkpoint."""
        logger = RunLogger(
            self.dir, self.cfg.trainer.steps, start, self.cfg.log, self.cfg.model_dump(), resume
        )
        logger.log(start, self.data_record, kind="data")
        self.loggers.append(logger)
        return logger

    def evaluate(self, step: int, logger: RunLogger) -> dict:
        ec, lc = self.cfg.eval, self.cfg.log
        began = time.perf_counter()
        faults.point("eval", step)
        seed = derive_seed(self.cfg.trainer.seed, Stream.EVAL)
        comps, scores = eval_rollouts(
            self.cluster.generate,
            self.pool,
            self.tokenizer,
            self.eval_rows,
            self.eval_prompts,
            n=ec.n,
            temperature=ec.temperature,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            seed=seed,
            spec=self.rewards,
        )
        metrics = eval_metrics(self.eval_rows, comps, scores, ks=ec.k, seed=seed)
        metrics["time/eval"] = time.perf_counter() - began
        # the pool's cumulative counts: calls, errors, timeouts, crashes, worker restarts
        logger.log(step, {**metrics, **self.pool.metrics()}, kind="eval")
        best, worst = extremes(scores.reward_N, lc.eval_samples)
        for kind, picked in (("eval_best", best), ("eval_worst", worst)):
            rows = sample_rows(
                step, kind, self.eval_rows, self.eval_prompts, comps, scores, picked,
                self.tokenizer, lc.sample_chars,
            )  # fmt: skip
            logger.log_samples(step, kind, rows)
        return metrics

    def log_samples(self, step: int, batch: Rollouts, logger: RunLogger) -> None:
        """Every log.samples_every steps: seeded random completions of the step's batch."""
        lc = self.cfg.log
        if not lc.samples_every or step % lc.samples_every:
            return
        seed = derive_seed(self.cfg.trainer.seed, Stream.SAMPLES, step)
        picked = random_picks(lc.samples_per_step, len(batch.comps), seed)
        rows = [self.train_rows[i] for i in batch.idx]
        samples = sample_rows(
            step, "train", rows, batch.prompts, batch.comps, batch.scores, picked,
            self.tokenizer, lc.sample_chars,
        )  # fmt: skip
        logger.log_samples(step, "train", samples)

    def eval_due(self, step: int) -> bool:
        every = self.cfg.eval.every
        return step == self.cfg.trainer.steps or (every > 0 and step % every == 0)

    def checkpoint_due(self, step: int, began: float) -> bool:
        tc = self.cfg.trainer
        out_of_time = tc.max_time_s is not None and time.time() - began > tc.max_time_s
        return (
            step == tc.steps
            or out_of_time
            or (tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0)
        )

    def history(self) -> list[dict]:
        return read_history(self.dir)

    def truncate_history(self, step: int) -> None:
        """On resume, drop records the interrupted run wrote after its last checkpoint (restart
        and preemption records stay: they count what happened to the run)."""
        kept = [r for r in self.history() if r["step"] <= step or r["kind"] in EVENT_KINDS]
        (self.dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        samples = self.dir / SAMPLES_FILE
        if samples.exists():  # a line cut short by the kill is dropped with the rest
            lines = samples.read_text(encoding="utf-8").splitlines(keepends=True)
            kept_lines = [line for line in lines if _step_of(line) <= step]
            samples.write_text("".join(kept_lines), encoding="utf-8")

    def close(self) -> None:
        import ray

        for logger in self.loggers:  # a run that failed did not close its logger
            logger.close()
        self.pool.close()
        self.cluster.shutdown()
        ray.shutdown()


def _step_of(line: str) -> float:
    """The step of a samples.jsonl line; infinity for a line that is not whole JSON."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def encode(cfg, tokenizer, rows: list[dict]) -> list[list[int]]:
    """Prompt token ids. Chat templates already hold their special tokens, so none are added."""
    return encode_prompts(cfg, tokenizer, rows)
