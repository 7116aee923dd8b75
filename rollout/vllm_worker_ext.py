"""Methods added to every vLLM worker process (vLLM's `worker_extension_cls`).

vLLM mixes this class into its worker, so `self` is the worker (`self.get_model()` is the
model that vLLM's weight-transfer engine loads into). Names start with `rlvr_`: vLLM refuses an
extension whose method names clash with the worker's own. Importing this module (vLLM does,
in every worker process, before the model and its transfer engine are built) registers the
gloo transfer engine (`rollout.vllm_compat.register_gloo`).

The fingerprint check: a vLLM model keeps fused, tensor-parallel-sharded parameters under its
own names (qkv_proj, gate_up_proj), so it cannot be compared with the learner's HF tensors
directly. Instead every (HF name, full tensor) pair that reaches the model's `load_weights`
during a sync is digested as it passes (`rollout.weight_sync.tensor_digest`), on the worker's
device, before vLLM shards it. The combined digest follows `rollout.weight_sync.fingerprint`,
so it equals the learner's fingerprint of what it sent exactly when every tensor arrived
intact. What happens after `load_weights` (a tied head that comes apart, a tensor damaged
later) is invisible to it: the behavioural probe (`rlvr.train.probe`) covers that.
"""

from __future__ import annotations

import torch

from rollout.weight_sync import combine_digests, tensor_digest

try:  # inside vLLM's worker processes; unit tests import this module without vLLM
    from rollout.vllm_compat import register_gloo

    register_gloo()
except ImportError:
    pass


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

    def rlvr_reseed(self, seed: int) -> None:
        """Seed this worker's default generators (rollout.vllm.seed_mode=batch): unseeded
        requests are sampled from them, the whole batch at once."""
        torch.manual_seed(seed)

    def rlvr_transfer_stats(self) -> dict:
        """What the gloo transfer engine counted: syncs after which a tied head was re-tied."""
        engine = getattr(self, "weight_transfer_engine", None)
        return {"retied": getattr(engine, "retied", 0)}

    # ---- fault injection for tests: damage that a tensor digest cannot see -------------------
    def rlvr_set_retie(self, enabled: bool) -> None:
        """Off: reproduce vLLM's stale tied head after a layerwise reload (tests only)."""
        self.weight_transfer_engine.retie = enabled

    @torch.no_grad()
    def rlvr_damage_parameter(self, name_part: str, delta: float) -> str:
        """Add `delta` to the first vLLM parameter whose name contains `name_part`, after it was
        loaded (tests only). Returns the parameter's name."""
        for name, p in self.get_model().named_parameters():
            if name_part in name and p.numel() > 0:
                p.add_(delta)
                return name
        raise KeyError(f"no parameter matches {name_part!r}")
