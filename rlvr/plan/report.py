"""The text `rlvr plan` prints: the memory plan of `rlvr.plan.memory` and the placement of
`rlvr.cluster.placement`."""

from __future__ import annotations

from rlvr.cluster.placement import plan_for_config, required_gpus
from rlvr.errors import ConfigError
from rlvr.plan.memory import FitReport, GiB, max_model_len, plan_config
from rlvr.plan.model_shape import ModelShape, load_model_shape


def plan_text(
    cfg, model_config: str | None = None, node_gpus: list[int] | None = None
) -> tuple[str, bool]:
    """(report, fits). `node_gpus` (GPUs per node) adds a placement check on that cluster."""
    shape, source = load_model_shape(cfg.model.path, model_config, tiny=cfg.model.tiny)
    report = plan_config(cfg, shape)
    lines = model_lines(cfg, shape, source) + learner_lines(cfg, report) + vllm_lines(cfg, report)
    fits = report.fits
    placement, placement_ok = placement_lines(cfg, node_gpus)
    lines += placement
    fits = fits and placement_ok
    lines.append("")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    if fits:
        lines.append(
            f"fits: every estimate is within one GPU's {report.gpu_bytes / GiB:.1f} GiB "
            "(placement.gpu_memory_gib)"
        )
    for problem in report.problems:
        lines.append(f"does not fit: {problem}")
    return "\n".join(lines), fits


def gib(n: int) -> str:
    return f"{n / GiB:9.2f} GiB"


def model_lines(cfg, shape: ModelShape, source: str) -> list[str]:
    return [
        f"model: {cfg.model.path}  ({shape.params() / 1e9:.3f}B parameters; sizes from {source})",
        f"  hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads "
        f"({shape.kv_heads} KV, "
        f"head dim {shape.head_dim}), FFN {shape.intermediate}, vocabulary {shape.vocab}, "
        f"{'tied' if shape.tied else 'untied'} embeddings",
    ]


def learner_lines(cfg, report: FitReport) -> list[str]:
    lc = cfg.learner
    est = report.learner
    head = (
        f"learner, per GPU: ZeRO-{lc.zero_stage} over {lc.num_workers} rank(s), {cfg.model.dtype}, "
        f"micro-batch {micro_batch_text(cfg)}, gradient checkpointing "
        f"{'on' if cfg.model.gradient_checkpointing else 'off'}"
    )
    lines = ["", head]
    lora = lc.lora
    if lora.enabled:
        targets = lora.target_modules
        where = targets if isinstance(targets, str) else ", ".join(targets)
        lines.append(
            f"  LoRA rank {lora.rank} on {where}: {report.lora_params / 1e6:.2f}M adapter "
            "parameters train, the base is frozen"
        )
    lines += [f"  {name:<22}{gib(size)}" for name, size in est.parts.items()]
    lines.append(f"  {'total':<22}{gib(est.total)}   ({'; '.join(est.notes)})")
    sync = ", ".join(f"{k} {v / 2**20:,.1f} MiB" for k, v in report.sync_bytes.items())
    lines.append(f"  weight sync per step: {sync}")
    return lines


def vllm_lines(cfg, report: FitReport) -> list[str]:
    est = report.vllm
    if est is None:
        return ["", f"rollout engine: {cfg.rollout.engine} (no vLLM memory plan)"]
    vc = cfg.rollout.vllm
    lines = [
        "",
        f"vLLM, per GPU: {cfg.rollout.num_workers} engine(s) x TP {vc.tensor_parallel_size}, "
        f"max_model_len {max_model_len(cfg)}, max_num_seqs {vc.max_num_seqs}",
    ]
    for name in ("weights", "kv cache", "runtime"):
        lines.append(f"  {name:<22}{gib(est.parts[name])}")
    lines.append(f"  {'total':<22}{gib(est.total)}   ({'; '.join(est.notes)})")
    return lines


def placement_lines(cfg, node_gpus: list[int] | None) -> tuple[list[str], bool]:
    rc, lc, mode = cfg.rollout, cfg.learner, cfg.placement.mode
    if rc.engine != "vllm":
        gpus = lc.num_workers * lc.gpus_per_worker + rc.num_workers * rc.gpus_per_worker
        return ["", f"placement: HF engine; {gpus:g} GPU(s) requested by gpus_per_worker"], True
    need = required_gpus(mode, rc.num_workers, rc.vllm.tensor_parallel_size, lc.num_workers)
    lines = ["", f"placement: {mode}, needs {need} GPU(s)"]
    if node_gpus is None:
        lines.append("  (add --nodes N --gpus-per-node G to check a cluster's shape)")
        return lines, True
    try:
        plan = plan_for_config(cfg, node_gpus)
    except ConfigError as exc:
        lines.append(f"  does not fit {len(node_gpus)} node(s) x {node_gpus[0]} GPUs: {exc}")
        return lines, False
    lines.append(f"  {plan.describe()}")
    for i, slots in enumerate(plan.engines):
        lines.append(f"  engine {i}: node {slots[0].node}, GPUs {[s.gpu for s in slots]}")
    return lines, True


def micro_batch_text(cfg) -> str:
    lc = cfg.learner
    text = f"{lc.micro_batch_size} x {max_model_len(cfg)} tokens"
    if lc.max_tokens_per_micro_batch is not None:
        text += f", at most {lc.max_tokens_per_micro_batch} tokens"
    return text
