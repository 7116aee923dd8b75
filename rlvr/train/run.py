"""All a training run holds besides the loop: directory, data, tokenizer, plug-ins, actors."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel, ConfigDict, Field

from rlvr.errors import ConfigError
from rlvr.plan.memory import max_model_len
from rlvr.seeds import Stream, derive_seed
from rlvr.tasks.loading import load_task, prompt_texts
from rlvr.tasks.warm_start import resolve_model_path
from rlvr.train.checkpoint import list_checkpoints
from rlvr.train.evaluation import evaluate
from rlvr.train.metrics import RunLogger, read_history
from rlvr.train.probe import probe_prompts
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

    @classmethod
    def start(cls, cfg, recipe: str | None, log) -> Run:
        from transformers import AutoTokenizer

        from rewards.pool import VerifierPool
        from rlvr.cluster.ray_cluster import Cluster, init_ray

        run_dir = run_directory(cfg, recipe)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.write_yaml(run_dir / "config.yaml")
        log(f"run directory: {run_dir}")
        model_path = resolve_model_path(cfg, log=log)
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=cfg.model.trust_remote_code
        )
        train_rows, eval_rows = load_task(cfg)
        pool = VerifierPool(cfg.verifier)
        try:  # a row naming a verifier nobody provides is a config error, found before Ray starts
            pool.require({row["verifier"] for row in train_rows + eval_rows})
        except KeyError as exc:
            pool.close()
            raise ConfigError(f"data: {exc.args[0]} (add it with verifier.plugins)") from None
        init_ray(cfg, log)
        try:
            cluster = Cluster(cfg, model_path, log)
        except BaseException:  # leave no Ray session or verifier processes behind a failed start
            import ray

            pool.close()
            ray.shutdown()
            raise
        eval_prompts = encode(cfg, tokenizer, eval_rows)
        cluster.probe_tokens = probe_prompts(
            eval_prompts, cfg.sync.probe_prompts, max_model_len(cfg) - 1
        )
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        sampler = make_sampler(
            cfg.sampler,
            len(train_rows),
            derive_seed(cfg.trainer.seed, Stream.PROMPTS),
            prompts=[r["prompt"] for r in train_rows],
        )
        gate = DynamicSampling(cfg.gate, cfg.trainer.prompts_per_step)
        return cls(
            cfg,
            run_dir,
            tokenizer,
            train_rows,
            encode(cfg, tokenizer, train_rows),
            eval_rows,
            eval_prompts,
            sampler,
            make_schedule(cfg.schedule),
            gate,
            pool,
            cluster,
            pad,
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

    def evaluate(self, step: int, logger: RunLogger) -> dict:
        ec = self.cfg.eval
        began = time.perf_counter()
        metrics = evaluate(
            self.cluster.generate,
            self.pool,
            self.tokenizer,
            self.eval_rows,
            self.eval_prompts,
            n=ec.n,
            ks=ec.k,
            temperature=ec.temperature,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            seed=derive_seed(self.cfg.trainer.seed, Stream.EVAL),
        )
        metrics["time/eval"] = time.perf_counter() - began
        logger.log(step, metrics, kind="eval")
        return metrics

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

    def close(self) -> None:
        import ray

        self.pool.close()
        self.cluster.shutdown()
        ray.shutdown()


def encode(cfg, tokenizer, rows: list[dict]) -> list[list[int]]:
    """Prompt token ids. Chat templates already hold their special tokens, so none are added."""
    chat = cfg.data.task == "dataset" and cfg.data.template.startswith("chat")
    return tokenizer(prompt_texts(cfg, rows, tokenizer), add_special_tokens=not chat).input_ids


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
