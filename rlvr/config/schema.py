"""Every configurable value of rlvr, with its default, its help and its allowed range.

Sections map one to one onto recipe YAML sections. `spec()` attaches checks that
`rlvr.config.check_values` enforces; `Config.validate()` holds the rules that span fields.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rlvr.errors import ConfigError


def spec(default: Any, help: str = "", **checks: Any) -> Any:
    """A dataclass field with help text and checks: min, max, gt, choices, file."""
    meta = {"help": help, **checks}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


BUILTIN_PREFIX = "builtin:"


@dataclass
class TinyModelConfig:
    """Architecture of the built-in character-level Llama (only for model.path=builtin:...)."""

    hidden_size: int = spec(128, "width", min=8)
    num_layers: int = spec(2, "transformer blocks", min=1)
    num_heads: int = spec(4, "attention heads", min=1)
    intermediate_size: int = spec(512, "MLP width", min=8)
    max_positions: int = spec(64, "longest prompt + completion in tokens", min=8)


@dataclass
class ModelConfig:
    path: str = spec(
        "builtin:arith-tiny",
        "HF hub name, local HF directory, or builtin:arith-tiny "
        "(built and warm-started by SFT into the cache on first use)",
    )
    dtype: str = spec("float32", "parameter dtype", choices=["float32", "bfloat16", "float16"])
    trust_remote_code: bool = spec(False, "passed to from_pretrained")
    gradient_checkpointing: bool = spec(False, "recompute activations in the learner")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class ArithConfig:
    """The built-in arithmetic task. A level is 'DIGITS:OPERATORS:OPERANDS', e.g. '2:+:2' is
    a + b with a, b in 0..99 and '3:+-:3' three operands of up to 3 digits joined by + or -."""

    mix: dict[str, float] = spec({"2:+:2": 1.0}, "level -> share of the training prompts", gt=0.0)
    train_size: int = spec(8000, "distinct training prompts", min=1)
    heldout_size: int = spec(500, "distinct held-out prompts (evaluation)", min=1)
    heldout_fraction: float = spec(
        0.1, "share of each level's problem space reserved for held-out", gt=0.0, max=0.5
    )
    seed: int = spec(0, "seed of the problem draw (the split itself is fixed by a hash)")


@dataclass
class DataConfig:
    """Where prompts come from: the built-in arith task, or datasets (rlvr.tasks.data.load_rows)."""

    task: str = spec(
        "arith",
        "arith: the built-in task; dataset: data.train and data.eval",
        choices=["arith", "dataset"],
    )
    arith: ArithConfig = field(default_factory=ArithConfig)
    train: str = spec(
        "",
        "task=dataset: a .jsonl/.json/.parquet file, a hub name owner/name[:config]:split, "
        "or a shipped set (math500, minerva, gsm8k, olympiadbench, aime24, amc23)",
    )
    eval: list[str] = spec(["math500"], "task=dataset: held-out sets, same forms as data.train")
    prompt_key: Optional[str] = spec(
        None, "prompt column (default: the set's convention, else 'problem')"
    )
    answer_key: Optional[str] = spec(None, "gold-answer column (default 'answer')")
    solution_key: Optional[str] = spec(
        None,
        "solution column whose last \\boxed{} is the gold when "
        "there is no answer column (default 'solution')",
    )
    verifier: Optional[str] = spec(
        None, "verifier for rows without a 'verifier' column (default math)"
    )
    template: str = spec(
        "plain",
        "prompt template: plain, chat (instruction in the user turn), "
        "chat_system, or a string containing {prompt}",
    )
    instruction: Optional[str] = spec(
        None,
        "appended by the template, e.g. 'Please reason step by step, "
        "and put your final answer within \\boxed{}.'",
    )
    limit: Optional[int] = spec(None, "task=dataset: read at most this many training rows", min=1)


@dataclass
class SFTConfig:
    """Warm start of the built-in model on noisy demonstrations (rlvr sft)."""

    steps: int = spec(600, "optimizer steps", min=1)
    batch_size: int = spec(256, "sequences per step", min=1)
    lr: float = spec(3e-3, "peak AdamW learning rate", gt=0.0)
    warmup_steps: int = spec(50, "linear warm-up before the cosine decay", min=0)
    weight_decay: float = spec(0.0, min=0.0)
    noise: float = spec(
        0.4,
        "probability that a demonstration's answer has one digit shifted by +-1 "
        "(leaves the model unreliable, so RL has something to sharpen)",
        min=0.0,
        max=1.0,
    )
    mix: dict[str, float] = spec({}, "levels of the demonstrations; empty = data.arith.mix", gt=0.0)
    seed: int = spec(0)


@dataclass
class VLLMConfig:
    """Options of the vLLM engine (rollout.engine=vllm); each maps onto one vLLM engine argument."""

    tensor_parallel_size: int = spec(1, "GPUs per engine (one vLLM LLM per rollout actor)", min=1)
    gpu_memory_utilization: float = spec(
        0.85,
        "share of each engine GPU vLLM may take (weights + KV "
        "cache); colocated runs leave the rest to the learner",
        gt=0.0,
        max=1.0,
    )
    max_model_len: Optional[int] = spec(
        None,
        "longest prompt + completion (default: rollout.max_prompt_tokens + rollout.max_new_tokens)",
        min=1,
    )
    max_num_seqs: int = spec(256, "sequences one engine decodes at once", min=1)
    enable_prefix_caching: bool = spec(
        True,
        "share KV of common prompt prefixes (the n samples of a prompt); "
        "reset after every weight sync",
    )
    enforce_eager: bool = spec(False, "no CUDA graphs: faster start-up, slower decoding")
    load_format: str = spec(
        "dummy",
        "dummy: random weights, the first sync fills them before any rollout; "
        "auto: read model.path",
        choices=["dummy", "auto"],
    )
    seed: int = spec(0, "engine seed; engine i uses seed + i")
    sleep_level: int = spec(
        1,
        "colocated: vLLM sleep level between rollouts (1 keeps a CPU copy of the "
        "weights, 2 drops them; the next sync refills them)",
        choices=[1, 2],
    )


@dataclass
class RolloutConfig:
    engine: str = spec(
        "hf",
        "generation engine (vllm: GPUs, see rollout.vllm and placement)",
        choices=["hf", "vllm"],
    )
    max_prompt_tokens: int = spec(
        1024,
        "longest prompt in tokens: sizes vLLM's max_model_len and the memory plan (rlvr plan)",
        min=1,
    )
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    num_workers: int = spec(
        1, "rollout actors; the prompts of a step are split between them", min=1
    )
    n: int = spec(8, "completions per prompt (first stage)", min=1)
    temperature: float = spec(1.0, gt=0.0)
    top_p: float = spec(
        1.0, "nucleus sampling; keep 1.0 for unbiased importance ratios", gt=0.0, max=1.0
    )
    max_new_tokens: int = spec(8, "completion length cap (L_max)", min=1)
    batch_size: int = spec(512, "sequences per generate() call inside a worker", min=1)
    cpus_per_worker: float = spec(0.5, "Ray CPUs reserved per rollout actor", min=0.0)
    gpus_per_worker: float = spec(0.0, "Ray GPUs per rollout actor", min=0.0)


@dataclass
class AlgorithmConfig:
    advantage: str = spec("grpo", "group advantage estimator", choices=["grpo", "rloo"])
    std_normalize: bool = spec(True, "divide by the group std (off = Dr.GRPO)")
    eps: float = spec(1e-6, "added to the group std", min=0.0)
    policy_loss: str = spec("ppo", choices=["ppo", "gspo"])
    clip_low: float = spec(0.2, "PPO eps_low", min=0.0, max=1.0)
    clip_high: float = spec(0.2, "PPO eps_high (0.28 = DAPO clip-higher)", min=0.0)
    dual_clip: Optional[float] = spec(None, "dual-clip constant c for negative advantages", gt=1.0)
    aggregation: str = spec(
        "token-mean", choices=["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
    )
    max_len: Optional[int] = spec(
        None, "L_max for seq-mean-token-sum-norm (default rollout.max_new_tokens)", min=1
    )
    kl_coef: float = spec(0.0, "weight of the KL penalty to the initial policy", min=0.0)
    kl_estimator: str = spec("k3", choices=["k1", "k2", "k3"])
    entropy_coef: float = spec(0.0, "entropy bonus", min=0.0)
    tis_cap: Optional[float] = spec(
        None, "truncated importance-sampling cap C (rollout vs learner)", gt=0.0
    )
    drop_zero_variance: bool = spec(True, "leave out groups whose rewards are all equal")


@dataclass
class SamplerConfig:
    """Which prompts a step trains on. The other keys configure `mopps` (docs/sampling.md)."""

    name: str = spec(
        "uniform",
        "prompt sampler: uniform epochs, or MoPPS Bayesian selection",
        choices=["uniform", "mopps"],
    )
    decay: float = spec(
        1.0,
        "MoPPS posterior decay lambda (1.0 = no forgetting; 0.5 in the paper "
        "for Countdown and geometry)",
        gt=0.0,
        max=1.0,
    )
    ts_ratio: float = spec(
        8.0,
        "MoPPS candidate pool = ts_ratio x prompts_per_step, drawn uniformly "
        "(16 in the paper for MATH, 8 otherwise)",
        min=1.0,
    )
    target: float = spec(
        0.5,
        "MoPPS topk: keep the candidates whose sampled success rate is nearest to this",
        min=0.0,
        max=1.0,
    )
    mode: str = spec(
        "topk",
        "MoPPS selection: topk (nearest to target) or threshold (random among "
        "[low, high], topped up by distance to the interval)",
        choices=["topk", "threshold"],
    )
    low: float = spec(
        0.3, "MoPPS threshold mode: lower end of the success-rate interval", min=0.0, max=1.0
    )
    high: float = spec(
        0.7, "MoPPS threshold mode: upper end of the success-rate interval", min=0.0, max=1.0
    )
    prior_file: Optional[str] = spec(
        None,
        "MoPPS prior from an offline evaluation (JSONL, one "
        "{index | prompt, n, correct | success_rate} per line)",
        file=True,
    )
    prior_strength: float = spec(
        1.0,
        "weight of one offline completion in pseudo-counts (alpha = 1 + strength x correct)",
        gt=0.0,
    )

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ConfigError(
                f"sampler.low={self.low}, sampler.high={self.high}: low must be < high"
            )


@dataclass
class ScheduleConfig:
    """How many completions each prompt gets (extra stages after the first). `dars` adds
    completions to prompts whose first-stage accuracy is below 0.5 (docs/sampling.md)."""

    name: str = spec("single", "rollout schedule", choices=["single", "dars"])
    mode: str = spec(
        "hw", "DARS schedule: et (equal treatment) or hw (hardness weighted)", choices=["et", "hw"]
    )
    n_max: Optional[int] = spec(
        None, "DARS cap on a prompt's total completions (default 32 for et, 64 for hw)", min=1
    )
    std_normalized: bool = spec(
        False,
        "DARS: size the extra completions for std-normalised "
        "advantages (pair with algorithm.std_normalize=true)",
    )


@dataclass
class GateConfig:
    """Which groups enter the update beyond the zero-variance filter
    (algorithm.drop_zero_variance)."""

    refill: bool = spec(
        False,
        "DAPO dynamic sampling: draw further prompt batches until "
        "trainer.prompts_per_step informative groups are collected",
    )
    max_gen_batches: int = spec(
        10,
        "refill: at most this many generation rounds per step; "
        "train on what was collected if still short",
        min=1,
    )


@dataclass
class LearnerConfig:
    num_workers: int = spec(1, "data-parallel DeepSpeed ranks", min=1)
    zero_stage: int = spec(2, "DeepSpeed ZeRO stage", choices=[0, 1, 2, 3])
    update: str = spec(
        "full-batch",
        "full-batch: one optimizer step per epoch over the whole batch; "
        "mini-batch: mini_batches steps per epoch",
        choices=["full-batch", "mini-batch"],
    )
    epochs: int = spec(1, "passes over each step's batch", min=1)
    mini_batches: int = spec(1, "optimizer steps per epoch in mini-batch mode", min=1)
    micro_batch_size: int = spec(256, "sequences per forward/backward (bounds memory)", min=1)
    lr: float = spec(1e-6, "AdamW peak learning rate", gt=0.0)
    weight_decay: float = spec(0.0, min=0.0)
    betas: list[float] = spec([0.9, 0.999], min=0.0, max=1.0)
    lr_schedule: str = spec("constant", "after warm-up", choices=["constant", "cosine", "linear"])
    warmup_steps: int = spec(0, "optimizer steps of linear warm-up", min=0)
    grad_clip: float = spec(1.0, "max global grad norm (0 = off)", min=0.0)
    fused_logprobs: bool = spec(
        True,
        "log-probs and entropy from hidden states with the chunked/Triton "
        "kernel, never building [tokens, vocab] logits (ZeRO-3 uses full logits)",
    )
    cpus_per_worker: float = spec(1.0, "Ray CPUs reserved per learner actor", min=0.0)
    gpus_per_worker: float = spec(0.0, "Ray GPUs per learner actor", min=0.0)

    @property
    def uses_fused_logprobs(self) -> bool:
        """Whether the learner takes the fused kernel path: it reads the LM-head weight directly,
        which ZeRO-3 partitions, so ZeRO-3 always uses full logits."""
        return self.fused_logprobs and self.zero_stage < 3


@dataclass
class PlacementConfig:
    """Where rollout engines and learners run on a GPU cluster (rollout.engine=vllm)."""

    mode: str = spec(
        "disaggregated",
        "disaggregated: engines and learners on separate GPUs, weights "
        "sent over NCCL; colocated: one learner rank and one vLLM worker share each GPU, vLLM "
        "sleeps during the update, weights move by CUDA IPC",
        choices=["disaggregated", "colocated"],
    )
    gpu_memory_gib: float = spec(
        80.0,
        "memory of one GPU in GiB, for the fit check (rlvr plan; an H100 80GB reports 79.2)",
        gt=0.0,
    )
    offload_learner: bool = spec(
        True, "colocated: move the learner's optimizer state off the GPU while vLLM generates"
    )
    check_fit: bool = spec(
        True,
        "rlvr train refuses a recipe whose memory plan does not fit "
        "(false, or rlvr train --force, starts it anyway)",
    )


@dataclass
class SyncConfig:
    bucket_mb: float = spec(32.0, "weight-sync bucket size in MiB", gt=0.0)
    check_fingerprint: bool = spec(
        True, "compare rollout and learner weight fingerprints after sync"
    )


@dataclass
class VerifierConfig:
    num_workers: int = spec(
        0, "verifier processes (0 = in the controller process, for cheap verifiers)", min=0
    )
    timeout_s: float = spec(
        10.0, "wall-clock limit per verification; past it the outcome is an error", gt=0.0
    )
    memory_mb: Optional[int] = spec(2048, "address-space cap per verifier process", min=64)
    plugins: list[str] = spec([], "extra verifiers as module:function or name=module:function")


@dataclass
class EvalConfig:
    every: int = spec(10, "evaluate every N steps (0 = only at start and end)", min=0)
    num_problems: int = spec(
        500, "held-out problems per evaluation set (arith: at most data.arith.heldout_size)", min=1
    )
    n: int = spec(8, "samples per problem", min=1)
    k: list[int] = spec([1, 8], "pass@k values to report", min=1)
    temperature: float = spec(1.0, gt=0.0)


@dataclass
class TrainerConfig:
    steps: int = spec(100, "RL steps", min=1)
    prompts_per_step: int = spec(64, "B: prompts selected per step", min=1)
    seed: int = spec(0)
    output_dir: str = spec("runs", "parent of run directories")
    name: str = spec("", "run directory name (default: recipe name + time)")
    log_every: int = spec(1, min=1)
    checkpoint_every: int = spec(50, "steps between checkpoints (0 = only at the end)", min=0)
    keep_checkpoints: int = spec(2, "newest checkpoints kept", min=1)
    resume: str = spec("", "'' = fresh run, 'auto' = newest checkpoint of the run dir, or a path")
    actor_timeout_s: float = spec(900.0, "limit on every wait for a Ray actor", gt=0.0)
    max_time_s: Optional[float] = spec(
        None, "stop (with a checkpoint) after this much wall time", gt=0.0
    )
    max_completions: Optional[int] = spec(
        None,
        "stop (with an evaluation and a checkpoint) after the step "
        "whose generated completions bring the run's total to this "
        "(DARS stage 2 and DAPO refill rounds count)",
        min=1,
    )


@dataclass
class RayConfig:
    address: Optional[str] = spec(
        None, "Ray cluster address; default: $RAY_ADDRESS, else a local Ray"
    )
    num_cpus: Optional[int] = spec(None, "CPUs of a local Ray (default: all)", min=1)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        """Rules that involve more than one field. Raises ConfigError."""
        self._validate_model()
        self._validate_data()
        self._validate_engine()
        if self.algorithm.advantage == "rloo" and self.rollout.n < 2:
            raise ConfigError(f"rollout.n={self.rollout.n}: algorithm.advantage=rloo needs n >= 2")
        if self.algorithm.clip_low >= 1.0:
            raise ConfigError(f"algorithm.clip_low={self.algorithm.clip_low}: must be < 1")
        if max(self.eval.k) > self.eval.n:
            raise ConfigError(f"eval.k={self.eval.k}: every k must be <= eval.n={self.eval.n}")
        if self.eval.num_problems > self.data.arith.heldout_size and self.data.task == "arith":
            raise ConfigError(
                f"eval.num_problems={self.eval.num_problems}: exceeds "
                f"data.arith.heldout_size={self.data.arith.heldout_size}"
            )
        if self.learner.update == "full-batch" and self.learner.mini_batches != 1:
            raise ConfigError(
                f"learner.mini_batches={self.learner.mini_batches}: only meaningful "
                "with learner.update=mini-batch (full-batch takes one step per epoch)"
            )
        if len(self.learner.betas) != 2:
            raise ConfigError(f"learner.betas={self.learner.betas}: expected two numbers")
        if self.gate.refill and not self.algorithm.drop_zero_variance:
            raise ConfigError(
                "gate.refill=true needs algorithm.drop_zero_variance=true "
                "(refill collects groups that the zero-variance filter admits)"
            )
        if self.schedule.name == "dars":
            from rollout.dars import DEFAULT_N_MAX

            n_max = self.schedule.n_max or DEFAULT_N_MAX[self.schedule.mode]
            if n_max <= self.rollout.n:
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
            if self.data.task != "arith":
                raise ConfigError(
                    "model.path=builtin:arith-tiny only knows the arith task's symbols"
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
        if rc.engine != "vllm":
            if self.placement.mode == "colocated":
                raise ConfigError(
                    "placement.mode=colocated: needs rollout.engine=vllm (vLLM sleeps "
                    "while the learner steps)"
                )
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
                "needs one GPU per learner rank (set learner.gpus_per_worker=1)"
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
        limit = rc.vllm.max_model_len
        if limit is not None and limit < rc.max_new_tokens + 1:
            raise ConfigError(
                f"rollout.vllm.max_model_len={limit}: must exceed rollout.max_new_tokens="
                f"{rc.max_new_tokens}"
            )

    def _validate_data(self) -> None:
        from rlvr.tasks.arith import (
            parse_level,  # local: keeps this module free of task code at import
        )

        data = self.data
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
