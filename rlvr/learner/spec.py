"""The `learner` section and the `LearnerSpec` a learner actor is built from.

A learner never sees the whole config: `LearnerSpec.from_config` picks what it reads (the model
fields, the learner section, the loss settings, the sampling temperature and the run's total
optimizer steps for the lr schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlvr.algorithms.loss import LossConfig
from rlvr.learner.lora import LoraConfig
from rlvr.seeds import Stream, derive_seed


class LearnerConfig(BaseModel):
    """The `learner` section: data-parallel DeepSpeed ranks and the optimizer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    num_workers: int = Field(1, ge=1, description="data-parallel DeepSpeed ranks")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    update: Literal["full-batch", "mini-batch"] = Field(
        "full-batch",
        description="full-batch: one optimizer step per epoch over the whole batch; mini-batch: "
        "mini_batches steps per epoch",
    )
    epochs: int = Field(1, ge=1, description="passes over each step's batch")
    mini_batches: int = Field(1, ge=1, description="optimizer steps per epoch in mini-batch mode")
    micro_batch_size: int = Field(
        256, ge=1, description="sequences per forward/backward (bounds memory)"
    )
    max_tokens_per_micro_batch: Optional[int] = Field(
        None,
        ge=1,
        description="token budget of a micro-batch: sequences packed first-fit decreasing by "
        "length (padding-free where the attention allows it, else padded rows counted as rows "
        "x longest); micro_batch_size still caps the rows. Default: micro_batch_size rows",
    )
    padding_free: bool = Field(
        True,
        description="with a token budget: each micro-batch in one padding-free row where the "
        "model's attention allows it (false: padded rows of similar lengths; on CPU the "
        "packed row's dense block-diagonal mask costs more than short rows' padding)",
    )
    lr: float = Field(1e-6, gt=0.0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.0, ge=0.0)
    betas: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.9, 0.999], description="AdamW betas"
    )
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="after warm-up"
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warm-up")
    grad_clip: float = Field(1.0, ge=0.0, description="max global grad norm (0 = off)")
    fused_logprobs: bool = Field(
        True,
        description="log-probs and entropy from hidden states with the chunked/Triton kernel, "
        "never building [tokens, vocab] logits (ZeRO-3 uses full logits)",
    )
    cpus_per_worker: float = Field(1.0, ge=0.0, description="Ray CPUs reserved per learner actor")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="Ray GPUs per learner actor")
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @field_validator("betas")
    @classmethod
    def _two_betas(cls, betas: list[float]) -> list[float]:
        if len(betas) != 2:
            raise ValueError("expected two numbers")
        return betas

    @property
    def uses_fused_logprobs(self) -> bool:
        """Whether the learner takes the fused kernel path: it reads the LM-head weight directly,
        which ZeRO-3 partitions, so ZeRO-3 always uses full logits."""
        return self.fused_logprobs and self.zero_stage < 3

    def optimizer_steps_per_update(self) -> int:
        return self.epochs * (self.mini_batches if self.update == "mini-batch" else 1)


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a learner rank reads, and nothing else."""

    model_path: str  # resolved: a from_pretrained argument
    dtype: str
    trust_remote_code: bool
    gradient_checkpointing: bool
    learner: LearnerConfig
    loss: LossConfig
    temperature: float  # log-probs at the sampling temperature, like the engines'
    total_optimizer_steps: int  # for the lr schedule
    init_seed: int = 0  # seeds what the learner initialises itself (LoRA's A matrices)

    @classmethod
    def from_config(cls, cfg, model_path: str) -> LearnerSpec:
        """From the root config (`rlvr.config.Config`) and the resolved model path."""
        loss = LossConfig(**cfg.algorithm.model_dump(include=set(LossConfig.model_fields)))
        return cls(
            model_path=model_path,
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
            gradient_checkpointing=cfg.model.gradient_checkpointing,
            learner=cfg.learner,
            loss=loss,
            temperature=cfg.rollout.temperature,
            total_optimizer_steps=cfg.trainer.steps * cfg.learner.optimizer_steps_per_update(),
            init_seed=derive_seed(cfg.trainer.seed, Stream.LORA),
        )
