"""LoRA vs full-parameter RL on the main job at an equal completion budget: held-out pass@k,
step time, learner memory, sync bytes and checkpoint size.

    .venv/bin/python benchmarks/bench_lora.py --run [--seeds 0 1]   # train the arms, then report
    .venv/bin/python benchmarks/bench_lora.py RUN_DIR [RUN_DIR ...]  # report finished runs

Each arm is `rlvr train recipes/arith-tiny.yaml` with `trainer.max_completions=64799` (what the
full-parameter main job generated in its 25 steps on 2026-12-02); the LoRA arm adds rank-16
adapters on every linear layer (alpha 32) at lr 2e-3 (5x the full-parameter 4e-4). The report
reads each run's metrics.jsonl and its last checkpoint: the held-out evaluation at step 0 and at
the end (500 problems x 8 samples, 95% bootstrap intervals), completions, mean seconds per step
and per update (steps 2 onward), the weight sync's bytes, the learner's peak RSS (its whole
process: Python, torch, DeepSpeed and the model state) and the checkpoint's size on disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 64_799
LORA = [
    "learner.lora.enabled=true",
    "learner.lora.rank=16",
    "learner.lora.alpha=32",
    "learner.lr=2e-3",
]


def train(name: str, seed: int, extra: list[str], out: Path) -> Path:
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "recipes/arith-tiny.yaml"]
    cmd += [f"trainer.seed={seed}", f"trainer.max_completions={BUDGET}", *extra]
    cmd += [f"trainer.output_dir={out}", f"trainer.name={name}"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out / name


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def summary(run: Path) -> dict:
    import yaml

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lora = cfg["learner"]["lora"]
    later = train_rows[1:] or train_rows
    mean = lambda key: sum(r[key] for r in later) / len(later)  # noqa: E731
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    return {
        "arm": f"LoRA r{lora['rank']}" if lora["enabled"] else "full",
        "seed": cfg["trainer"]["seed"],
        "lr": cfg["learner"]["lr"],
        "steps": len(train_rows),
        "completions": sum(int(r["rollout/completions"]) for r in train_rows),
        "start": evals[0],
        "end": evals[-1],
        "s_per_step": mean("time/step"),
        "s_update": mean("time/update"),
        "sync_bytes": later[-1]["sync/bytes"],
        "peak_rss_mb": max(r.get("learner/peak_rss_mb", float("nan")) for r in train_rows),
        "trainable": later[-1].get("learner/trainable_params", float("nan")),
        "ckpt_bytes": dir_bytes(ckpt / "policy") + dir_bytes(ckpt / "deepspeed"),
    }


def report(runs: list[Path]) -> None:
    head = (
        "| arm | seed | lr | steps | completions | pass@1 start -> end (95% CI) | "
        "pass@8 start -> end (95% CI) | s/step | s/update | trainable | sync bytes | "
        "learner peak RSS MB | policy + optimizer checkpoint MB |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for run in runs:
        s = summary(run)
        a, b = s["start"], s["end"]
        print(
            f"| {s['arm']} | {s['seed']} | {s['lr']:g} | {s['steps']} | {s['completions']:,} | "
            f"{a['pass@1']:.3f} -> {b['pass@1']:.3f} ({b['pass@1_ci_lo']:.3f}-"
            f"{b['pass@1_ci_hi']:.3f}) | {a['pass@8']:.3f} -> {b['pass@8']:.3f} "
            f"({b['pass@8_ci_lo']:.3f}-{b['pass@8_ci_hi']:.3f}) | {s['s_per_step']:.2f} | "
            f"{s['s_update']:.2f} | {s['trainable']:,.0f} | {s['sync_bytes']:,.0f} | "
            f"{s['peak_rss_mb']:.0f} | {s['ckpt_bytes'] / 1e6:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finished run directories")
    parser.add_argument("--run", action="store_true", help="train both arms first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-lora")
    args = parser.parse_args()
    runs = list(args.runs)
    if args.run:
        for seed in args.seeds:
            runs.append(train(f"full-s{seed}", seed, [], args.out))
            runs.append(train(f"lora-s{seed}", seed, LORA, args.out))
    if not runs:
        parser.error("give run directories or --run")
    report(runs)


if __name__ == "__main__":
    main()
