"""Methods added to every vLLM worker process (vLLM's `worker_extension_cls`).

vLLM mixes this class into its GPU worker, so `self` is the worker (`self.get_model()` is the
model that vLLM's weight-transfer engine loads into). Names start with `rlvr_`: vLLM refuses an
extension whose method names clash with the worker's own.

The fingerprint check: a vLLM model keeps fused, tensor-parallel-sharded parameters under its
own names (qkv_proj, gate_up_proj), so it cannot be compared with the learner's HF tensors
directly. Instead every (HF name, full tensor) pair that reaches the model's `load_weights`
during a sync is digested as it passes (`rollout.weight_sync.tensor_digest`), on the worker's
GPU, before vLLM shards it. The combined digest follows `rollout.weight_sync.fingerprint`, so
it equals the learner's fingerprint of what it sent exactly when every tensor arrived intact.
"""

from __future__ import annotations

from rollout.weight_sync import combine_digests, tensor_digest


class RLVRWorkerExtension:
    def rlvr_install_digest_hook(self) -> None:
        """Wrap the model's `load_weights` so each received tensor is digested on its way in."""
        model = self.get_model()
        if getattr(model, "_rlvr_digests", None) is not None:
            return
        original = model.load_weights
        digests: dict[str, tuple] = {}

        def digesting(weights):
            for name, tensor in weights:
                digests[name] = tensor_digest(name, tensor)
                yield name, tensor

        def load_weights(weights, *args, **kwargs):
            return original(digesting(weights), *args, **kwargs)

        model._rlvr_digests = digests
        model.load_weights = load_weights

    def rlvr_received_fingerprint(self) -> tuple[str, int]:
        """(fingerprint, tensor count) of everything loaded since the last call; then forget it."""
        digests = self.get_model()._rlvr_digests
        result = combine_digests(digests.values()), len(digests)
        digests.clear()
        return result

    def rlvr_load_weights(self, named_tensors: list) -> None:
        """Load CPU (name, tensor) pairs sent through collective_rpc (small models, tests)."""
        device = next(self.get_model().parameters()).device
        self.get_model().load_weights((name, t.to(device)) for name, t in named_tensors)
