"""The rollout worker: one engine in one Ray actor (a plain class; the controller wraps it).

Single-threaded on purpose (Ray's default max_concurrency=1): a broadcast it joins must not
interleave with another call, or the collectives lose their order (NOTES.md, deadlocks).
"""

from __future__ import annotations

import os

import torch

from rollout.types import Completions, SamplingSettings
from rollout.weight_sync import ParamSpec, SyncGroup, fingerprint, plan_buckets, receive_buckets


class RolloutWorker:
    def __init__(
        self,
        index: int,
        engine: str,
        model_path: str,
        *,
        dtype: str = "float32",
        batch_size: int = 512,
        threads: int = 1,
        trust_remote_code: bool = False,
        engine_options: dict | None = None,
    ):
        torch.set_num_threads(max(1, threads))
        self.index = index
        if engine == "vllm":
            self._init_vllm(model_path, dict(engine_options or {}))
            return
        if engine != "hf":
            raise ValueError(f"unknown rollout engine {engine!r}; valid: hf, vllm")
        import transformers

        from rollout.hf_engine import HFEngine

        transformers.logging.disable_progress_bar()

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.engine = HFEngine(
            model_path,
            dtype=dtype,
            device=device,
            batch_size=batch_size,
            trust_remote_code=trust_remote_code,
        )
        self.device = torch.device(device)
        self.group: SyncGroup | None = None
        self._corrupt_bucket: int | None = None

    def _init_vllm(self, model_path: str, options: dict) -> None:
        """engine_options: `rollout.vllm_engine.VLLMOptions` fields, plus cuda_visible_devices
        when the engine shares GPUs that Ray assigned to colocated learners."""
        visible = options.pop("cuda_visible_devices", None)
        if visible is not None:  # before anything initialises CUDA in this process
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        from rollout.vllm_engine import VLLMEngine, VLLMOptions

        self.engine = VLLMEngine(model_path, VLLMOptions(**options), self.index)
        self.device, self.group, self._corrupt_bucket = torch.device("cuda"), None, None

    def engine_call(self, method: str, *args):
        """vLLM engine controls by name (weight transfer, prefix cache, sleep/wake), for the
        controller (rlvr.cluster.vllm_cluster) and the learners' transfer client
        (rollout.vllm_sync)."""
        return getattr(self.engine, method)(*args)

    def ready(self) -> int:
        return os.getpid()

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Completions:
        return self.engine.generate(prompts, sampling)

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
