"""The learner: one DeepSpeed data-parallel rank in one Ray actor (a plain class).

Algorithm-blind (DESIGN.md): `update` gets a shard of token-level data and a plan of optimizer
steps, and returns metric sums. Gradient accumulation is unmanaged (DeepSpeed's
`managed_gradient_accumulation: false`): each micro-batch's loss is already normalised by the
global counts of its optimizer step, so the backward passes add up to the full-batch gradient,
and `engine.step()` is the one boundary. DeepSpeed averages gradients over ranks; the loss is
multiplied by the world size so that the ranks' gradients add instead.
"""

from __future__ import annotations

import os
import pickle
import resource
import socket
from collections import defaultdict
from contextlib import closing

import torch

from rlvr.algorithms import microbatch_loss
from rlvr.errors import PipelineError
from rlvr.learner.batch import MicroBatching, StepPlan, TrainBatch, pack_rows
from rlvr.learner.ds_weight_source import full_shapes, gathered_params
from rlvr.learner.lora import (
    adapter_params,
    adapter_shapes,
    adapter_state,
    apply_lora,
    count_params,
    gathered_raw,
    hf_name,
    is_adapter_param,
)
from rlvr.learner.spec import LearnerSpec
from rollout.types import score_tokens
from rollout.weight_sync import (
    ParamSpec,
    SyncGroup,
    fingerprint,
    make_manifest,
    plan_buckets,
    send_buckets,
)


def free_port() -> int:
    """A TCP port that is free now (the OS picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Learner:
    def __init__(self, rank: int, world_size: int, spec: LearnerSpec, *, threads: int = 1):
        """Cheap: the DeepSpeed world forms in `setup`, once rank 0's address is known."""
        torch.set_num_threads(max(1, threads))
        self.rank, self.world_size, self.spec = rank, world_size, spec
        self.sync_group: SyncGroup | None = None

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: the DeepSpeed master, when asked of rank 0."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int) -> int:
        """Form the DeepSpeed world (all ranks at once) and build model, optimizer, schedule."""
        os.environ.update(
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK="0",
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
        )
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed  # after the environment: it picks the accelerator at import

        if on_cpu:
            # On CPU, DeepSpeed's comm start-up JIT-builds a shared-memory all-reduce kernel (about
            # 2 min on a cold 2-core machine) that serves inference all-reduce only; training
            # collectives go through gloo. A build killed midway leaves torch's lock file behind
            # and every later start waits on it forever, so it is not built at all.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.logging.disable_progress_bar()

        from rlvr.learner.lr_schedule import lr_lambda

        spec, lc = self.spec, self.spec.learner
        dtype = getattr(torch, spec.dtype)
        model = AutoModelForCausalLM.from_pretrained(
            spec.model_path, dtype=dtype, trust_remote_code=spec.trust_remote_code
        )
        if spec.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.lora = lc.lora.enabled
        if self.lora:
            if spec.gradient_checkpointing:
                model.enable_input_require_grads()  # frozen embeddings: keep the graph alive
            model = apply_lora(model, lc.lora, spec.init_seed)
        self.ref = None
        if spec.loss.kl_coef > 0 and not self.lora:  # LoRA: the base is the adapter switched off
            self.ref = (
                AutoModelForCausalLM.from_pretrained(
                    spec.model_path, dtype=dtype, trust_remote_code=spec.trust_remote_code
                )
                .eval()
                .requires_grad_(False)
            )
        opt = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=lc.lr,
            betas=tuple(lc.betas),
            weight_decay=lc.weight_decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(lc.lr_schedule, lc.warmup_steps, spec.total_optimizer_steps)
        )
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,
            "gradient_clipping": lc.grad_clip,
            "zero_optimization": {"stage": lc.zero_stage},
            "bf16": {"enabled": spec.dtype == "bfloat16"},
            "steps_per_print": 2**31,
        }
        self.engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=opt,
            lr_scheduler=sched,
            config=ds_config,
            dist_init_required=True,
        )
        self.engine.checkpoint_engine.load = weights_only_load  # no pickle from a checkpoint
        self.device = self.engine.device
        self.trainable_params = count_params(self.engine.module)[0]
        self.settings = spec.loss
        self.temperature = spec.temperature
        self.fused = lc.uses_fused_logprobs
        self.packs = False
        if lc.max_tokens_per_micro_batch is not None and lc.padding_free:
            self.packs = self._packing_matches()
        self.micro = MicroBatching(lc.micro_batch_size, lc.max_tokens_per_micro_batch, self.packs)
        return os.getpid()

    def padding_free(self) -> bool:
        """Whether this rank packs micro-batches into one padding-free row (see setup)."""
        return self.packs

    @torch.no_grad()
    def _packing_matches(self) -> bool:
        """Whether this model's attention keeps packed sequences apart: two sequences' log-probs
        packed in one row (position ids restarting) must equal their padded, one-row-each
        log-probs. Models whose attention ignores position ids for masking fail it (padded rows
        then). Every rank runs it (a forward is collective under ZeRO-3)."""
        module = getattr(self.engine, "module", self.engine)
        vocab = module.get_input_embeddings().weight.shape[0]
        ids = (torch.arange(12).reshape(2, 6) * 7 + 3) % vocab
        attn = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
        mask = attn.float()
        mask[:, 0] = 0
        probe = TrainBatch(ids * attn, attn, mask, mask, mask)
        self.engine.eval()
        padded = self._logp_entropy(self.engine, probe, packed=False)[0]
        packed = self._logp_entropy(self.engine, probe, packed=True)[0]
        return bool(torch.allclose(padded * mask, packed * mask, atol=1e-4, rtol=1e-3))

    # ---- log-probs -------------------------------------------------------------------------
    def _logp_entropy(
        self, model, mb: TrainBatch, packed: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-prob of each token and entropy of its predictive distribution, [B, T]
        aligned with input_ids (column 0 is 0), at the sampling temperature. Packed (default:
        when this rank packs and the micro-batch has several rows): one padding-free row."""
        if packed is None:
            packed = self.packs and len(mb) > 1
        if not packed:
            inputs = {"attention_mask": mb.attention_mask_BT.to(self.device), "use_cache": False}
            logp, entropy = self._next_token(model, mb.input_ids_BT, mb.loss_mask_BT, inputs)
            return logp, entropy
        row = pack_rows(mb)
        # no attention mask and no KV cache: transformers then reads sequence boundaries from
        # the restarting position ids (block-diagonal causal mask, or varlen flash-attention)
        inputs = {"position_ids": row.position_ids_1S.to(self.device), "use_cache": False}
        logp, entropy = self._next_token(model, row.input_ids_1S, row.loss_mask_1S, inputs)
        return row.unpack(logp), row.unpack(entropy)

    def _next_token(self, model, ids_BT, mask_BT, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids_BT.to(self.device)
        if self.fused:
            logp, entropy = fused_next_token(
                model, ids, mask_BT.to(self.device), self.temperature, **inputs
            )
        else:
            logits = model(input_ids=ids, **inputs).logits
            logp_all = torch.log_softmax(logits[:, :-1].float() / self.temperature, dim=-1)
            logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        pad = torch.zeros_like(logp[:, :1])
        return torch.cat([pad, logp], 1), torch.cat([pad, entropy], 1)

    @torch.no_grad()
    def _old_logp(self, shard: TrainBatch) -> torch.Tensor:
        """Mini-batch mode: log-probs of the not-yet-updated policy for the whole shard."""
        out = torch.zeros_like(shard.loss_mask_BT)
        for rows in self.micro.split(list(range(len(shard))), shard.lengths()):
            mb = shard.select(rows)
            out[rows, : mb.input_ids_BT.shape[1]] = (
                self._logp_entropy(self.engine, mb)[0].float().cpu()
            )
        return out

    # ---- the update ------------------------------------------------------------------------
    def update(
        self, shard: TrainBatch, plan: list[list[StepPlan]], full_batch: bool
    ) -> dict[str, float]:
        """Run plan[epoch][step] over this rank's shard. Returns metric sums (see controller)."""
        self.engine.train()
        sums: dict[str, float] = defaultdict(float)
        old_logp = torch.zeros_like(shard.loss_mask_BT) if full_batch else self._old_logp(shard)
        for epoch, steps in enumerate(plan):
            for step in steps:
                for rows in step.micro_batches:
                    first_pass = full_batch and epoch == 0
                    self._micro_step(shard, rows, step, old_logp, first_pass, sums)
                self.engine.step()
                norm = self.engine.get_global_grad_norm()
                sums["grad_norm_sum"] += float(norm) if norm is not None else 0.0
                sums["optimizer_steps"] += 1
        sums["lr"] = self.engine.get_lr()[0]
        sums["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sums["trainable_params"] = self.trainable_params
        return dict(sums)

    def _micro_step(
        self,
        shard: TrainBatch,
        rows: list[int],
        step: StepPlan,
        old_logp: torch.Tensor,
        first_pass: bool,
        sums: dict[str, float],
    ) -> None:
        dummy = not rows
        mb = shard.select(rows or [0])
        width = mb.input_ids_BT.shape[1]
        logp, entropy = self._logp_entropy(self.engine, mb)
        mask = mb.loss_mask_BT.to(self.device) * (0.0 if dummy else 1.0)
        if first_pass:  # full-batch epoch 1: the policy has not moved, its own forward is "old"
            old = logp.detach()
            if not dummy:
                old_logp[rows, :width] = old.float().cpu()
        else:
            old = old_logp[rows or [0], :width].to(self.device)
        ref = None
        if self.ref is not None:
            with torch.no_grad():
                ref = self._logp_entropy(self.ref, mb)[0]
        elif self.lora and self.settings.kl_coef > 0:
            with torch.no_grad(), self.engine.module.disable_adapter():
                ref = self._logp_entropy(self.engine, mb)[0]
        loss, stats = microbatch_loss(
            self.settings,
            logp.float(),
            old.float(),
            mb.advantages_BT.to(self.device),
            mask,
            num_tokens=max(step.num_tokens, 1),
            num_seqs=max(step.num_seqs, 1),
            entropy_BT=entropy.float(),
            ref_logp_BT=ref,
            rollout_logp_BT=mb.rollout_logp_BT.to(self.device),
        )
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
        if dummy:
            return
        for key, value in stats.items():
            sums[key] += float(value)
        lengths = mb.lengths()
        sums["micro_batch_tokens"] += sum(lengths)
        sums["micro_batch_slots"] += self.micro.slots([list(range(len(mb)))], lengths)
        if first_pass or self.spec.learner.update == "mini-batch":
            diff = (mb.rollout_logp_BT.to(self.device) - logp.detach()).abs() * mask
            sums["rollout_logp_diff_sum"] += float(diff.sum())
            sums["rollout_logp_tokens"] += float(mask.sum())

    @torch.no_grad()
    def score(self, prompts: list[list[int]]) -> list[list[float]]:
        """log p(token | prefix) at T = 1 of every token after the first of each sequence (the
        behavioural sync probe). Every rank calls this: under ZeRO-3 the forward gathers."""
        self.engine.eval()
        return score_tokens(self.engine, prompts, self.device)

    # ---- weights ---------------------------------------------------------------------------
    def _named_full_params(self):
        """(HF name, full tensor) of every parameter, LoRA merged into its base weight; a
        collective under ZeRO-3 (all ranks call)."""
        return gathered_params(self.engine.module)

    def _adapter_sync(self) -> bool:
        return self.lora and self.spec.learner.lora.sync == "adapter"

    def _sync_params(self):
        """What the weight sync sends: every parameter (LoRA merged in), or with adapter-only
        sync the adapter alone (collective under ZeRO-3)."""
        if self._adapter_sync():
            return adapter_params(self.engine.module)
        return self._named_full_params()

    def manifest(self) -> list[ParamSpec]:
        if self._adapter_sync():
            shapes = adapter_shapes(self.engine.module)
        else:
            shapes = full_shapes(self.engine.module)
        return make_manifest((name, shape, dtype) for name, dtype, shape in shapes)

    def create_sync_store(self, host: str, world_size: int, timeout_s: float) -> int:
        self._store = SyncGroup.create_store(host, world_size, timeout_s)
        return self._store.port

    def join_sync(
        self, host: str, world_size: int, backend: str, bucket_bytes: int, timeout_s: float
    ) -> None:
        self.sync_group = SyncGroup(
            host, self._store.port, 0, world_size, backend, timeout_s, store=self._store
        )
        self.bucket_plan = plan_buckets(self.manifest(), bucket_bytes)

    def send_weights(self) -> dict:
        """Every learner rank calls this (ZeRO-3 gathers are collective); rank 0 broadcasts."""
        manifest = self.manifest()
        tensors = (t for _, t in self._sync_params())
        if self.rank != 0:
            for _ in tensors:  # take part in the gathers
                pass
            return {}
        sent, digest = send_buckets(
            self.sync_group, manifest, self.bucket_plan, tensors, self.device
        )
        return {"bytes": sent, "fingerprint": digest}

    def fingerprint(self) -> str:
        """Of what the sync sends. Every learner rank calls this (collective under ZeRO-3); all
        get the same value."""
        return fingerprint(self._sync_params())

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Every parameter in full on rank 0, None elsewhere (every rank calls: collective)."""
        full = {name: t.cpu().clone() for name, t in self._named_full_params()}
        return full if self.rank == 0 else None

    def lora_weights(self) -> dict | None:
        """LoRA runs: {"base": HF name -> base tensor, "adapter": peft name -> A or B} in full
        on rank 0, None elsewhere (every rank calls: collective under ZeRO-3)."""
        module = self.engine.module
        base = {
            hf_name(name): t.cpu().clone()
            for name, t in gathered_raw(module)
            if not is_adapter_param(name)
        }
        adapter = adapter_state(module)
        return {"base": base, "adapter": adapter} if self.rank == 0 else None

    def save_policy(self, path: str) -> None:
        """Hugging Face format on rank 0; with LoRA the adapter alone, in peft's format
        (`rlvr export` merges it). Every rank calls (collective under ZeRO-3)."""
        if self.lora:
            adapter = adapter_state(self.engine.module)
            if self.rank == 0:
                self.engine.module.save_pretrained(path, state_dict=adapter)
            return
        full = self.full_state_dict()
        if self.rank == 0:
            self.engine.module.save_pretrained(path, state_dict=full)

    def save_checkpoint(self, path: str) -> None:
        """DeepSpeed state; with LoRA the frozen base is left out (it is the model path's)."""
        self.engine.save_checkpoint(path, tag="deepspeed", exclude_frozen_parameters=self.lora)

    def load_checkpoint(self, path: str) -> None:
        load_path, _ = self.engine.load_checkpoint(
            path, tag="deepspeed", load_module_strict=not self.lora
        )
        if load_path is None:
            raise RuntimeError(f"learner rank {self.rank}: no DeepSpeed state under {path}")


def deepspeed_safe_globals() -> list:
    """The classes DeepSpeed's checkpoint files hold besides tensors and plain containers (found
    by loading its ZeRO-0..3, fp32 / bf16 and LoRA checkpoints weights-only; docs/reliability.md).
    """
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def weights_only_load(path: str, map_location=None):
    """DeepSpeed's checkpoint-engine `load`, weights-only: its own calls
    `torch.load(weights_only=False)`, an unpickler that runs whatever code a file names. This one
    rebuilds tensors, plain containers and the few DeepSpeed classes listed above, and refuses
    anything else with a one-line error (the manifest's sha256 check runs before it)."""
    with torch.serialization.safe_globals(deepspeed_safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            named = [line for line in str(exc).splitlines() if "GLOBAL" in line]
            why = named[0].split("error: ")[-1] if named else "not a weights-only file"
            raise PipelineError(f"{path}: refused to load ({why})") from None


def fused_next_token(model, ids_BT, mask_BT, temperature: float, **inputs):
    """[B, T-1] log-probs and entropies from the decoder's hidden states and the LM-head weight
    (kernels.next_token_logprobs_entropy): the [tokens, vocab] logits are never built, and
    tokens outside the loss mask cost nothing. The model's own LM head is bypassed through the
    public `get_decoder()` / `get_output_embeddings()` accessors, not by patching transformers.
    """
    import kernels

    module = getattr(model, "module", model)  # the DeepSpeed engine wraps the HF model
    hidden_BTH = module.get_decoder()(input_ids=ids_BT, **inputs).last_hidden_state
    weight_VH = module.get_output_embeddings().weight
    return kernels.next_token_logprobs_entropy(
        hidden_BTH, weight_VH, ids_BT, temperature, mask_BT=mask_BT > 0
    )
