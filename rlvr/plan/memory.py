"""Pre-launch memory arithmetic: will a recipe fit its GPUs? Pure (no torch, no Ray).

Learner, per GPU (mixed precision with AdamW, as `rlvr.learner.deepspeed_learner` runs DeepSpeed):
  weights     P*w, divided over the D data-parallel ranks under ZeRO-3
  gradients   P*w, divided under ZeRO-2 and -3
  optimizer   P*(8 + m): Adam's two fp32 moments, plus for half-precision weights an fp32
              master copy and the fp32 gradients of the step (m = 8; m = 0 for fp32 weights);
              divided under ZeRO-1, -2 and -3
  zero3 gather  under ZeRO-3, the gathered working set: max(2 layers, the embedding) in full
  activations   per token of the micro-batch (see `activation_bytes_per_token`)
  logits      unfused: [tokens, vocab] in the model dtype, its fp32 log-softmax and exp kept for
              backward and two fp32 gradient buffers at the backward peak (w + 16 bytes a
              logit); fused (kernels/, chunked over tokens and vocabulary): three fp32 blocks
              of 2^24 logits, fp32 hidden states and their gradient, one vocabulary block's
              weight gradient; bounded by the chunk, not by the micro-batch
  reference   the frozen KL reference model (algorithm.kl_coef > 0), unpartitioned
  sync buffers  the weight transfer into vLLM (`sync_buffer_bytes`): IPC's one buffer holds the
              largest tensor at least; NCCL keeps two packed chunks in flight
The model-state lines reproduce the ZeRO paper's figures with its K = 12 (Rajbhandari et al.
2020, Fig. 1: 7.5B parameters, 64 ranks: 120 / 31.4 / 16.6 / 1.9 GB) and DeepSpeed's own ZeRO-2
estimator with the fp32 gradients; docs/cluster.md compares the totals with published figures.

vLLM, per GPU of an engine with tensor parallelism t:
  weights   P*w / t (embedding and output layer are vocabulary-parallel, so they split too)
  kv cache  K and V per token (`ModelShape.kv_bytes_per_token`) for the sequences one engine
            decodes at once: min(max_num_seqs, its share of a step) x max_model_len
  runtime   a fixed allowance for CUDA graphs, the sampler and activations of a forward
vLLM reserves gpu_memory_utilization x GPU for all of it. It refuses to start when not even one
max_model_len sequence fits; with room for fewer sequences than configured it only queues.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.plan.model_shape import ModelShape

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Mirrors kernels/chunked.py: blocks of 2^24 fp32 logits, vocabulary chunks of 4096.
FUSED_BLOCK_ELEMENTS = 1 << 24
FUSED_VOCAB_CHUNK = 4096
# Memory no estimate above covers: CUDA context, NCCL buffers, allocator fragmentation.
CUDA_RESERVE = 1 * GiB
# vLLM beside weights and KV cache: CUDA graphs, sampler, one forward's activations.
VLLM_RUNTIME = 2 * GiB
# What a sleeping vLLM worker still holds on its GPU (context, graph pool) in colocated mode.
VLLM_ASLEEP = 1 * GiB
# Which logits line counts when a setup does not say: full [tokens, vocab] logits.
LEARNER_LOGITS = "unfused"


@dataclass(frozen=True)
class LearnerSetup:
    dtype_bytes: int
    zero_stage: int
    ranks: int
    micro_batch: int  # sequences per forward/backward
    seq_len: int  # prompt + completion tokens (the longest a micro-batch pads to)
    checkpointing: bool
    reference: bool = False
    logits: str = LEARNER_LOGITS  # which logits line counts towards the total
    sync: str = "none"  # weight transfer into vLLM: "ipc" (colocated), "nccl", or "none"
    bucket_bytes: int = 0  # sync.bucket_mb
    max_tokens: int | None = None  # learner.max_tokens_per_micro_batch: caps a micro-batch's tokens
    lora_params: int = 0  # adapter parameters with learner.lora (0: full-parameter training)


@dataclass(frozen=True)
class VLLMSetup:
    dtype_bytes: int
    tp: int
    max_num_seqs: int
    max_model_len: int
    sequences_per_step: int  # completions this engine generates per step (its share)
    gpu_memory_utilization: float


@dataclass
class Estimate:
    """Named byte counts of one GPU and their total."""

    parts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    notes: list[str] = field(default_factory=list)


def activation_bytes_per_token(shape: ModelShape, act_bytes: int, checkpointing: bool) -> int:
    """Bytes autograd keeps per token of a micro-batch for the backward pass.

    One layer keeps (HF Llama/Qwen2 with SDPA attention): two RMSNorms' fp32 inputs (4h each) and
    bf16 outputs (w*h each, the inputs of the projections); q, k, v after RoPE (w*(q + 2kv)),
    the attention output twice (SDPA's own and the contiguous copy o_proj keeps, 2w*q) plus
    fp32 log-sum-exp per head; SwiGLU keeps gate, up, silu(gate) and their product (4w*i).
    With gradient checkpointing only each layer's input (w*h) is kept, and one layer's full
    set is rebuilt at a time in the backward pass. The final norm adds (4 + w)*h.
    """
    h, w = shape.hidden, act_bytes
    per_layer = (
        2 * (4 * h + w * h)
        + w * (shape.q_dim + 2 * shape.kv_dim)
        + 2 * w * shape.q_dim
        + 4 * shape.heads
        + 4 * w * shape.intermediate
    )
    final_norm = (4 + w) * h
    if checkpointing:
        return shape.layers * w * h + per_layer + final_norm
    return shape.layers * per_layer + final_norm


def logits_bytes(shape: ModelShape, tokens: int, act_bytes: int, fused: bool) -> int:
    if not fused:
        return tokens * shape.vocab * (act_bytes + 16)
    return (
        3 * FUSED_BLOCK_ELEMENTS * 4
        + 2 * tokens * shape.hidden * 4
        + FUSED_VOCAB_CHUNK * shape.hidden * 4
    )


def model_state_bytes(
    params: int, dtype_bytes: int, zero_stage: int, ranks: int, fp32_grads: bool = True
) -> dict[str, int]:
    """Weights, gradients and AdamW state of one rank under a ZeRO stage (ZeRO paper, section 3).

    With half-precision weights DeepSpeed's optimizer partition also holds the gradients in fp32
    while it steps (its own estimator counts 2 + 4 + 4 + 8 bytes a parameter);
    fp32_grads=False gives the ZeRO paper's K = 12 instead.
    """
    half = dtype_bytes < 4
    optimizer = 8 + (4 if half else 0) + (4 if half and fp32_grads else 0)
    return {
        "weights": params * dtype_bytes // (ranks if zero_stage == 3 else 1),
        "gradients": params * dtype_bytes // (ranks if zero_stage >= 2 else 1),
        "optimizer": params * optimizer // (ranks if zero_stage >= 1 else 1),
    }


def learner_memory(shape: ModelShape, s: LearnerSetup) -> Estimate:
    """Peak bytes on one learner GPU (see the module docstring for each line)."""
    p, w = shape.params(), s.dtype_bytes
    tokens = s.micro_batch * s.seq_len
    if s.max_tokens is not None:
        tokens = min(tokens, s.max_tokens)
    state = model_state_bytes(p, w, s.zero_stage, s.ranks)
    if s.lora_params:
        state = lora_state_bytes(shape, s)
    parts = {
        **state,
        "zero3 gather": w * max(2 * shape.layer_params(), shape.embedding_params())
        if s.zero_stage == 3
        else 0,
        "activations": tokens * activation_bytes_per_token(shape, w, s.checkpointing),
        "logits (unfused)": logits_bytes(shape, tokens, w, fused=False),
        "logits (fused)": logits_bytes(shape, tokens, w, fused=True),
        "reference model": p * w if s.reference and not s.lora_params else 0,
        "sync buffers": sync_buffer_bytes(shape, s),
        "CUDA reserve": CUDA_RESERVE,
    }
    if s.lora_params:
        parts["lora merge buffer"] = lora_merge_bytes(shape, w)
    skipped = "logits (fused)" if s.logits == "unfused" else "logits (unfused)"
    total = sum(v for k, v in parts.items() if k != skipped)
    notes = [f"total counts {'logits (unfused)' if s.logits == 'unfused' else 'logits (fused)'}"]
    return Estimate(parts, total, notes)


def lora_state_bytes(shape: ModelShape, s: LearnerSetup) -> dict[str, int]:
    """LoRA: the frozen base in the model dtype (no gradients, no optimizer state; split over
    the ranks under ZeRO-3 only), the adapter's weights, gradients and AdamW state as for full
    training of an `s.lora_params` model."""
    base = shape.params() * s.dtype_bytes // (s.ranks if s.zero_stage == 3 else 1)
    adapter = model_state_bytes(s.lora_params, s.dtype_bytes, s.zero_stage, s.ranks)
    return {
        "weights (frozen base)": base,
        "weights (adapter)": adapter["weights"],
        "gradients": adapter["gradients"],
        "optimizer": adapter["optimizer"],
    }


def lora_merge_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    """Merging one adapted weight for the sync (`rlvr.learner.lora.merge_weight`): B @ A and
    W + delta in fp32, then the result in the model dtype, for the largest adapted layer."""
    largest = max(i * o for i, o in shape.linear_shapes().values())
    return largest * (4 + 4 + dtype_bytes)


def sync_bytes(shape: ModelShape, dtype_bytes: int, lora_params: int = 0) -> dict[str, int]:
    """Bytes one weight sync sends: the whole (merged) model; with LoRA also what sending the
    adapter alone (A and B) would take."""
    out = {"merged": shape.params() * dtype_bytes}
    if lora_params:
        out["adapter only"] = lora_params * dtype_bytes
    return out


def sync_buffer_bytes(shape: ModelShape, s: LearnerSetup) -> int:
    """Transfer buffers of the weight sync into vLLM on a learner GPU. IPC (colocated): one
    buffer of the bucket size, or of the largest tensor if larger (vLLM's packed IPC producer
    refuses a tensor that does not fit). NCCL: two packed chunks in flight, each closing once
    it exceeds the bucket (so up to bucket + the largest tensor)."""
    largest = shape.largest_tensor_params() * s.dtype_bytes
    if s.sync == "ipc":
        return max(s.bucket_bytes, largest)
    if s.sync == "nccl":
        return 2 * (s.bucket_bytes + largest)
    return 0


def learner_resident(est: Estimate, offloaded: bool) -> int:
    """What the learner keeps on its GPU while vLLM generates: its model state, or with
    placement.offload_learner only the model-dtype weights (the next sync sends them)."""
    keys = (
        ("weights", "reference model")
        if offloaded
        else ("weights", "gradients", "optimizer", "reference model")
    )
    weights = ("weights (frozen base)", "weights (adapter)")
    if "weights" not in est.parts:  # LoRA
        keys = tuple(k for k in keys if k != "weights") + weights
    return sum(est.parts.get(k, 0) for k in keys)


def vllm_memory(shape: ModelShape, s: VLLMSetup, gpu_bytes: int) -> Estimate:
    """Bytes on one GPU of an engine, and how many sequences its KV cache can hold at once."""
    concurrent = min(s.max_num_seqs, max(1, s.sequences_per_step))
    kv_token = shape.kv_bytes_per_token(s.dtype_bytes, s.tp)
    parts = {
        "weights": shape.params() * s.dtype_bytes // s.tp,
        "kv cache": kv_token * concurrent * s.max_model_len,
        "runtime": VLLM_RUNTIME,
    }
    budget = int(s.gpu_memory_utilization * gpu_bytes)
    kv_room = budget - parts["weights"] - parts["runtime"]
    fits_seqs = max(0, kv_room) // (kv_token * s.max_model_len)
    notes = [
        f"reserves {s.gpu_memory_utilization:g} x GPU = {budget / GiB:.1f} GiB; KV room for "
        f"{fits_seqs} sequences of {s.max_model_len} tokens (wants {concurrent})"
    ]
    est = Estimate(parts, sum(parts.values()), notes)
    est.parts["budget"], est.parts["kv room (sequences)"] = budget, fits_seqs
    return est


@dataclass
class FitReport:
    learner: Estimate
    vllm: Estimate | None
    gpu_bytes: int
    problems: list[str]
    warnings: list[str]
    lora_params: int = 0
    sync_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return not self.problems


def check_fit(
    learner: Estimate,
    vllm: Estimate | None,
    gpu_bytes: int,
    mode: str,
    offload_learner: bool = True,
) -> FitReport:
    """Compare the estimates with one GPU's memory under the placement mode."""
    problems, warnings = [], []
    gib = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    learner_room = gpu_bytes - (VLLM_ASLEEP if mode == "colocated" and vllm else 0)
    if learner.total > learner_room:
        where = " beside a sleeping vLLM worker" if learner_room < gpu_bytes else ""
        problems.append(
            f"learner needs {gib(learner.total)} per GPU{where}, has {gib(learner_room)}: "
            "lower learner.micro_batch_size, raise learner.zero_stage or add learner ranks, "
            "or turn on model.gradient_checkpointing"
        )
    if vllm is not None:
        parts = vllm.parts
        if parts["kv room (sequences)"] < 1:
            problems.append(
                f"vLLM: weights {gib(parts['weights'])} + runtime leave no room within "
                f"{gib(parts['budget'])} for one sequence's KV cache: raise "
                "rollout.vllm.gpu_memory_utilization or tensor_parallel_size"
            )
        elif vllm.total > parts["budget"]:
            warnings.append(
                f"vLLM: KV cache holds {parts['kv room (sequences)']} sequences at once, "
                f"fewer than configured; the rest queue (slower, not fatal)"
            )
        if mode == "colocated":
            resident = learner_resident(learner, offload_learner)
            if parts["budget"] + resident + CUDA_RESERVE > gpu_bytes:
                problems.append(
                    f"colocated: vLLM's {gib(parts['budget'])} + the learner's resident "
                    f"{gib(resident)} exceed the GPU's {gib(gpu_bytes)}: lower "
                    "rollout.vllm.gpu_memory_utilization or set placement.offload_learner=true"
                )
    return FitReport(learner, vllm, gpu_bytes, problems, warnings)


def lora_params(cfg, shape: ModelShape) -> int:
    lora = cfg.learner.lora
    return shape.lora_params(lora.rank, lora.target_modules) if lora.enabled else 0


def setups_from_config(cfg, shape: ModelShape) -> tuple[LearnerSetup, VLLMSetup | None]:
    """The plan's inputs from a resolved Config."""
    rc, lc, w = cfg.rollout, cfg.learner, DTYPE_BYTES[cfg.model.dtype]
    seq_len = max_model_len(cfg)
    learner = LearnerSetup(
        dtype_bytes=w,
        zero_stage=lc.zero_stage,
        ranks=lc.num_workers,
        micro_batch=lc.micro_batch_size,
        seq_len=seq_len,
        max_tokens=lc.max_tokens_per_micro_batch,
        checkpointing=cfg.model.gradient_checkpointing,
        reference=cfg.algorithm.kl_coef > 0,
        logits="fused" if lc.uses_fused_logprobs else "unfused",
        sync=sync_backend(cfg),
        bucket_bytes=int(cfg.sync.bucket_mb * 2**20),
        lora_params=lora_params(cfg, shape),
    )
    if rc.engine != "vllm":
        return learner, None
    per_step = cfg.trainer.prompts_per_step * rc.n
    vllm = VLLMSetup(
        dtype_bytes=w,
        tp=rc.vllm.tensor_parallel_size,
        max_num_seqs=rc.vllm.max_num_seqs,
        max_model_len=seq_len,
        sequences_per_step=-(-per_step // rc.num_workers),
        gpu_memory_utilization=rc.vllm.gpu_memory_utilization,
    )
    return learner, vllm


def sync_backend(cfg) -> str:
    """How a GPU run's weights reach vLLM: "ipc" (colocated), "nccl", or "none" (no vLLM)."""
    if cfg.rollout.engine != "vllm" or cfg.learner.gpus_per_worker == 0:
        return "none"
    return "ipc" if cfg.placement.mode == "colocated" else "nccl"


def max_model_len(cfg) -> int:
    """vLLM's max_model_len: rollout.vllm.max_model_len, else prompt + completion caps (within
    the built-in model's positions)."""
    rc = cfg.rollout
    limit = rc.vllm.max_model_len or cfg.data.max_prompt_tokens + rc.max_new_tokens
    if cfg.model.path.startswith("builtin:"):
        limit = min(limit, cfg.model.tiny.max_positions)
    return limit


def plan_config(cfg, shape: ModelShape) -> FitReport:
    learner_setup, vllm_setup = setups_from_config(cfg, shape)
    gpu = int(cfg.placement.gpu_memory_gib * GiB)
    learner = learner_memory(shape, learner_setup)
    vllm = vllm_memory(shape, vllm_setup, gpu) if vllm_setup else None
    report = check_fit(learner, vllm, gpu, cfg.placement.mode, cfg.placement.offload_learner)
    report.lora_params = learner_setup.lora_params
    report.sync_bytes = sync_bytes(shape, learner_setup.dtype_bytes, learner_setup.lora_params)
    return report
