"""All a training run holds besides the loop: directory, data, tokenizer, plug-ins, actors."""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel, ConfigDict, Field

from rlvr.errors import ConfigError
from rlvr.learner.lora import check_targets
from rlvr.plan.memory import max_model_len
from rlvr.seeds import Stream, derive_seed
from rlvr.tasks.loading import encode_prompts, fit_prompts, load_task, prompt_limit
from rlvr.tasks.warm_start import resolve_model_path
from rlvr.train.checkpoint import list_checkpoints
from rlvr.train.evaluation import eval_metrics, eval_rollouts
from rlvr.train.metrics import RunLogger, read_history
from rlvr.train.probe import probe_prompts
from rlvr.train.rollouts import Rollouts
from rlvr.train.scoring import RewardSpec
from rlvr.train.tracking import SAMPLES_FILE, extremes, random_picks, sample_rows
from rollout.gates import DynamicSampling
from rollout.samplers import make_sampler
from rollout.schedules import make_schedule
from rollout.types import Gate, PromptSampler, RolloutSchedule, SamplingSettings

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
    max_completions: Optional[int] = Field(
        None,
        ge=1,
        description="stop (with an evaluation and a checkpoint) after the step whose generated "
        "completions bring the run's total to this (DARS stage 2 and DAPO refill rounds count)",
    )


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

    @classmethod
    def start(cls, cfg, recipe: str | None, log) -> Run:
        from transformers import AutoTokenizer

        from rlvr.cluster.ray_cluster import Cluster, init_ray

        if cfg.log.wandb is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError("log.wandb needs the wandb package: pip install 'rlvr[wandb]'")
        run_dir = run_directory(cfg, recipe)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.write_yaml(run_dir / "config.yaml")
        log(f"run directory: {run_dir}")
        model_path = resolve_model_path(cfg, log=log)
        lc = cfg.learner
        check_targets(lc.lora, model_path, cfg.model.trust_remote_code, lc.uses_fused_logprobs)
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=cfg.model.trust_remote_code
        )
        data = prepare_data(cfg, tokenizer, model_path, log)
        pool = start_pool(cfg, data.train_rows + data.eval_rows)
        if pool.code_sandbox:
            log(f"code sandbox: {pool.code_sandbox}")
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
        return logger

    def evaluate(self, step: int, logger: RunLogger) -> dict:
        ec, lc = self.cfg.eval, self.cfg.log
        began = time.perf_counter()
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
        logger.log(step, metrics, kind="eval")
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
        """On resume, drop records the interrupted run wrote after its last checkpoint."""
        kept = [r for r in self.history() if r["step"] <= step]
        (self.dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        samples = self.dir / SAMPLES_FILE
        if samples.exists():  # a line cut short by the kill is dropped with the rest
            lines = samples.read_text(encoding="utf-8").splitlines(keepends=True)
            kept_lines = [line for line in lines if _step_of(line) <= step]
            samples.write_text("".join(kept_lines), encoding="utf-8")

    def close(self) -> None:
        import ray

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


@dataclass
class Data:
    """Rows and prompt token ids that fit the length limit, and what was done to the others."""

    train_rows: list[dict]
    train_prompts: list[list[int]]
    eval_rows: list[dict]
    eval_prompts: list[list[int]]
    record: dict


def prepare_data(cfg, tokenizer, model_path: str, log) -> Data:
    """Load the rows, encode their prompts and apply data.max_prompt_tokens (capped so that a
    completion still fits the model's positions): over-long prompts are dropped or truncated,
    counted and logged. Raises ConfigError when no training prompt is left, or when a prompt
    holds characters the tokenizer does not know (the built-in model knows digits and + - * =)."""
    train_rows, eval_rows = load_task(cfg)
    limit = prompt_limit(cfg, model_path, log)
    unk = tokenizer.unk_token_id
    kept, over = [], []
    for rows, where in ((train_rows, "data.train"), (eval_rows, "data.eval")):
        prompts = encode(cfg, tokenizer, rows)
        bad = [i for i, p in enumerate(prompts) if unk is not None and unk in p]
        if bad:
            raise ConfigError(
                f"{where} row {bad[0]}: the prompt {rows[bad[0]]['prompt'][:40]!r} has characters "
                f"the tokenizer does not know ({len(bad)} such rows)"
            )
        rows, prompts, count = fit_prompts(rows, prompts, limit, cfg.data.overlong_prompts)
        kept.append((rows, prompts))
        over.append(count)
    action = "dropped" if cfg.data.overlong_prompts == "drop" else "truncated"
    if any(over):
        log(
            f"data: {over[0]} training and {over[1]} held-out prompts longer than {limit} "
            f"tokens {action}"
        )
    if not kept[0][0]:
        raise ConfigError(f"data: every training prompt is longer than {limit} tokens")
    record = {
        "train_prompts": len(kept[0][0]), "eval_prompts": len(kept[1][0]), "prompt_limit": limit,
        "train_over": over[0], "eval_over": over[1], "over_action": action,
    }  # fmt: skip
    return Data(*kept[0], *kept[1], record)


def start_pool(cfg, rows: list[dict]) -> VerifierPool:
    """The verifier pool, after checking that every reward component names a verifier someone
    provides and gives it arguments it accepts (config errors, found before Ray starts)."""
    from rewards.components import check_args
    from rewards.pool import VerifierPool

    pool = VerifierPool(cfg.verifier)
    try:
        pool.require({c["name"] for row in rows for c in row["rewards"]})
        check_args(rows)
    except KeyError as exc:
        pool.close()
        raise ConfigError(f"data: {exc.args[0]} (add it with verifier.plugins)") from None
    except (ValueError, ImportError) as exc:
        pool.close()
        raise ConfigError(f"rewards: {exc}") from None
    return pool


def run_directory(cfg, recipe: str | None) -> Path:
    """runs/<trainer.name>, or runs/<recipe>-<time> for a new run; with trainer.resume=auto and no
    name, the newest run of this recipe that has a checkpoint. Never reuses a run's directory
    for a fresh run (nothing is overwritten)."""
    tc = cfg.trainer
    base = Path(tc.output_dir)
    stem = Path(recipe).stem if recipe else "run"
    if tc.resume not in ("", "auto"):
        return Path(tc.resume).expanduser().resolve().parent.parent
    if tc.name:
        path = base / tc.name
        if not tc.resume and (path / "metrics.jsonl").exists():
            raise ConfigError(
                f"trainer.name={tc.name!r}: {path} already holds a run; add trainer.resume=auto "
                "to continue it or choose another name"
            )
        return path
    if tc.resume == "auto":
        runs = [p for p in base.glob(f"{stem}-*") if list_checkpoints(p)]
        if not runs:
            raise ConfigError(
                f"trainer.resume=auto: no run of {stem} with a checkpoint under {base}/"
            )
        return max(runs, key=lambda p: list_checkpoints(p)[-1].stat().st_mtime)
    path = base / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
    return path
