"""Sample efficiency of the sampling plug-ins on the built-in arith task.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sample_efficiency.py            # 3 seeds
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sample_efficiency.py --quick    # smoke test
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sample_efficiency.py --report DIR  # table again

Arms (ARMS below): GRPO (uniform prompts, two mini-batches), DARS-ET, DARS-HW, DARS-HW-B (4x the
prompts per step, full-batch, 2 epochs), MoPPS, DAPO dynamic sampling (gate.refill), MoPPS +
DARS-HW-B (the project's signature configuration) and TRL's GRPOTrainer (benchmarks/trl_grpo_arm.py)
as a peer. Every arm starts from the same warm-started model (recipes/bench/sample-efficiency.yaml)
and stops when its generated completions reach the same budget (trainer.max_completions; DARS
stage 2 and DAPO refill rounds count). Held-out pass@1 / pass@8 come from the loop's evaluation
(same problems and eval seed for every arm of a seed). Evaluations are every `eval.every` steps, set
per arm from its expected completions per step so they land near the same budgets; the table
reads each curve by linear interpolation at fixed budgets, the final point at the budget itself.

Runs go one at a time (2 cores), each in its own process with its own local Ray; before each, the
script waits while /tmp/rlvr-quiet exists (other people are timing). A finished run is not run
again when the same --out is given, so an interrupted benchmark continues where it stopped.
Writes DIR/results.json, DIR/table.md, DIR/sample_efficiency.png and DIR/levels.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "bench" / "sample-efficiency.yaml"
TRL_DIR = ROOT / ".cache" / "bench-trl"
TRL_VERSION = "1.16.0"
QUIET_FLAG = Path("/tmp/rlvr-quiet")
MINI = ["learner.update=mini-batch", "learner.mini_batches=2"]
BREADTH = [
    "trainer.prompts_per_step=256",
    "learner.update=full-batch",
    "learner.epochs=2",
    "learner.lr=3e-4",
]
HW = ["schedule.name=dars", "schedule.mode=hw", "schedule.std_normalized=true"]
MOPPS = ["sampler.name=mopps", "sampler.decay=0.5"]


@dataclass
class Arm:
    name: str
    overrides: list[str]
    per_step: int  # expected completions per step (sets eval.every); measured on the warm start
    about: str = ""
    trl: bool = False
    extra: dict = field(default_factory=dict)


ARMS = [
    Arm("grpo", MINI, 512, "uniform, 64 prompts x 8, 2 mini-batches"),
    Arm(
        "dars-et",
        MINI + ["schedule.name=dars", "schedule.mode=et", "schedule.std_normalized=true"],
        710,
        "GRPO + DARS equal treatment",
    ),
    Arm("dars-hw", MINI + HW, 1070, "GRPO + DARS hardness weighted"),
    Arm("dars-hw-b", HW + BREADTH, 4200, "DARS-HW, 256 prompts, full-batch, 2 epochs, lr 3e-4"),
    Arm("mopps", MINI + MOPPS, 512, "GRPO + MoPPS (decay 0.5, pool 8 x 64)"),
    Arm(
        "dapo-ds",
        MINI + ["gate.refill=true"],
        1024,
        "GRPO + DAPO dynamic sampling (up to 10 rounds)",
    ),
    Arm(
        "mopps-dars-hw-b",
        HW + BREADTH + MOPPS + ["sampler.ts_ratio=4"],
        4000,
        "MoPPS + DARS-HW-B (signature)",
    ),
    Arm("trl-grpo", [], 512, "TRL GRPOTrainer, as grpo", trl=True),
]


def wait_for_quiet(log=print) -> None:
    """Other engineers time things on these cores: wait while they ask for quiet."""
    if QUIET_FLAG.exists():
        log(f"waiting: {QUIET_FLAG} exists")
    while QUIET_FLAG.exists():
        time.sleep(30)


def ensure_trl(log=print) -> str | None:
    """Install trl into .cache/bench-trl without dependencies; None if ready, else why not."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    info = TRL_DIR / f"trl-{TRL_VERSION}.dist-info" / "METADATA"
    if not info.exists():
        log(f"installing trl=={TRL_VERSION} into {TRL_DIR} (benchmark only, --no-deps)")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(TRL_DIR),
            f"trl=={TRL_VERSION}",
        ]
        if subprocess.run(cmd).returncode != 0 or not info.exists():
            return f"pip could not install trl=={TRL_VERSION}"
    missing = []
    for line in info.read_text().splitlines():  # the project's environment must already satisfy trl
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            req = Requirement(line.split(":", 1)[1].strip())
            try:
                if not req.specifier.contains(version(req.name), prereleases=True):
                    missing.append(f"{req} (have {version(req.name)})")
            except PackageNotFoundError:
                missing.append(f"{req} (missing)")
    return f"trl needs {', '.join(missing)}" if missing else None


def run_arm(
    arm: Arm, seed: int, budget: int, evals: int, out: Path, base: list[str], log=print
) -> dict:
    """One arm and seed in its own process; returns its status (rc, wall seconds)."""
    name = f"{arm.name}-s{seed}"
    status_file = out / "status" / f"{name}.json"
    if status_file.exists() and json.loads(status_file.read_text())["rc"] == 0:
        return json.loads(status_file.read_text())
    wait_for_quiet(log)
    every = max(1, round(budget / evals / arm.per_step))
    run_dir = out / "runs" / name
    if arm.trl:
        every = max(
            2, 2 * round(budget / evals / arm.per_step)
        )  # optimizer steps, 2 per generation
        cmd = [
            sys.executable,
            str(ROOT / "benchmarks" / "trl_grpo_arm.py"),
            str(RECIPE),
            "--seed",
            str(seed),
            "--budget",
            str(budget),
            "--eval-every",
            str(every),
            "--out",
            str(run_dir),
            *base,
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "rlvr.cli",
            "train",
            str(RECIPE),
            *base,
            *arm.overrides,
            f"trainer.seed={seed}",
            f"trainer.max_completions={budget}",
            f"eval.every={every}",
            f"trainer.output_dir={out / 'runs'}",
            f"trainer.name={name}",
        ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + ([str(TRL_DIR)] if arm.trl else []))
    )
    # DeepSpeed JIT-builds its shm comm op at start-up; another venv building into the shared
    # ~/.cache/torch_extensions invalidates it (minutes per run here), so keep ours apart.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    for path in (run_dir / "metrics.jsonl",):  # a failed earlier try: start that run afresh
        if path.exists():
            path.unlink()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    status_file.parent.mkdir(parents=True, exist_ok=True)
    log(f"{time.strftime('%H:%M:%S')} {name}: {arm.about}")
    began = time.time()
    with open(out / "logs" / f"{name}.log", "w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    status = {"arm": arm.name, "seed": seed, "rc": rc, "wall_s": round(time.time() - began, 1)}
    status_file.write_text(json.dumps(status))
    log(
        f"    rc={rc} in {status['wall_s']:.0f} s"
        + ("" if rc == 0 else f"; see {out / 'logs' / (name + '.log')}")
    )
    return status


def warm_start_report(base: list[str], out: Path, log=print) -> dict:
    """The warm-started model's held-out pass@1 and pass@8, overall and per level (no Ray)."""
    path = out / "warmstart.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch
    from transformers import AutoTokenizer

    from rewards.pool import PoolConfig, VerifierPool
    from rlvr.config import load_config
    from rlvr.tasks.loading import load_task
    from rlvr.tasks.warm_start import builtin_model_dir
    from rlvr.train.evaluation import evaluate
    from rlvr.train.run import encode
    from rollout.hf_engine import HFEngine

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_config(RECIPE, base)
    model_path = str(builtin_model_dir(cfg, log=log))  # built once, cached by its settings
    sft = json.loads((Path(model_path) / "sft_metrics.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    engine = HFEngine(
        model_path,
        dtype=cfg.model.dtype,
        batch_size=cfg.rollout.batch_size,
        trust_remote_code=False,
    )
    rows = load_task(cfg)[1]
    report = {"model": model_path, "sft": sft, "levels": {}}
    with VerifierPool(PoolConfig(num_workers=0)) as pool:
        for level in [None] + sorted({r["level"] for r in rows}):
            part = [r for r in rows if level is None or r["level"] == level]
            m = evaluate(
                engine.generate,
                pool,
                tokenizer,
                part,
                encode(cfg, tokenizer, part),
                n=cfg.eval.n,
                ks=cfg.eval.k,
                temperature=cfg.eval.temperature,
                max_new_tokens=cfg.rollout.max_new_tokens,
                seed=3,
            )
            entry = {"problems": len(part), **{k: m[k] for k in m if k.startswith("pass@")}}
            report["levels" if level else "all"] = (
                {**report["levels"], level: entry} if level else entry
            )
    path.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, small budget, 200 eval problems"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=40_000, help="generated completions per run")
    parser.add_argument("--evals", type=int, default=5, help="evaluations per run after the first")
    parser.add_argument("--arms", default=",".join(a.name for a in ARMS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--report", type=Path, help="only rebuild table and plots from this directory"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value for every arm (the warm start included)"
    )
    args = parser.parse_intermixed_args()
    from sample_efficiency_report import report

    if args.report:
        print(report(args.report))
        return
    base = list(args.overrides)
    if args.quick:
        args.seeds, args.budget, args.evals = 1, 4000, 1
        base += ["eval.num_problems=200"]
    out = args.out or ROOT / "runs" / f"bench-sample-efficiency-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    arms = [a for a in ARMS if a.name in args.arms.split(",")]
    began = time.time()
    (out / "bench.json").write_text(
        json.dumps(
            {
                "budget": args.budget,
                "seeds": args.seeds,
                "evals": args.evals,
                "overrides": base,
                "arms": {a.name: {"overrides": a.overrides, "about": a.about} for a in arms},
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    warm = warm_start_report(base, out)
    print(
        f"warm start: pass@1 {warm['all']['pass@1']:.3f} pass@8 {warm['all']['pass@8']:.3f}; "
        + "; ".join(f"{k} {v['pass@1']:.3f}/{v['pass@8']:.3f}" for k, v in warm["levels"].items())
    )
    trl_problem = ensure_trl() if any(a.trl for a in arms) else None
    for seed in range(args.seeds):  # seed-major: a drift in machine load touches every arm alike
        for arm in arms:
            if arm.trl and trl_problem:
                print(f"skipping {arm.name}: {trl_problem}")
                continue
            run_arm(arm, seed, args.budget, args.evals, out, base)
    meta = json.loads((out / "bench.json").read_text())
    meta["total_wall_s"] = round(meta.get("total_wall_s", 0) + time.time() - began, 1)
    (out / "bench.json").write_text(json.dumps(meta, indent=2))
    print(report(out))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
