"""Per-phase time breakdown of a default run, and the share of step time outside generate+update.

    .venv/bin/python benchmarks/bench_pipeline.py [--steps 30] [key=value ...]

Runs the default recipe (recipes/arith-tiny.yaml) for a few steps without checkpoints (the loop
evaluates only at the start and the end, outside the step times), then prints the mean seconds
per phase from metrics.jsonl. The share spent outside generation (`generate`, and DARS's
`expand`) and `update` is the controller's own cost plus Ray, verification and weight sync: the
overhead of the pipeline compared with a bare single-process loop. The first step is left out
(warm-up).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "arith-tiny.yaml"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from rlvr.config import load_config
    from rlvr.train.controller import train
    from rlvr.train.metrics import read_history

    out = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    cfg = load_config(
        args.recipe,
        [
            f"trainer.steps={args.steps}",
            "eval.every=0",
            "trainer.checkpoint_every=0",
            f"trainer.output_dir={out}",
            "trainer.name=bench",
            *args.overrides,
        ],
    )
    train(cfg, args.recipe, log=lambda *_: None)
    steps = [r for r in read_history(out / "bench") if r["kind"] == "train"][1:]
    phases = sorted({k for r in steps for k in r if k.startswith("time/") and k != "time/step"})
    mean = {k: sum(r.get(k, 0.0) for r in steps) / len(steps) for k in phases + ["time/step"]}
    total = mean["time/step"]
    print(
        f"{len(steps)} steps of {cfg.trainer.prompts_per_step} prompts x "
        f"{cfg.rollout.n} completions, "
        f"{cfg.rollout.num_workers} rollout worker(s), {cfg.learner.num_workers} learner rank(s)"
    )
    print(f"{'phase':<12}{'s/step':>10}{'share':>9}")
    for key in phases:
        print(f"{key[5:]:<12}{mean[key]:>10.4f}{mean[key] / total:>9.1%}")
    print(f"{'step':<12}{total:>10.4f}{1:>9.1%}")
    # DARS's expand phase is generation too (the extra completions), from the same engines
    outside = total - sum(mean.get(f"time/{k}", 0.0) for k in ("generate", "expand", "update"))
    print(
        f"outside generation (generate + expand) and update: {outside:.4f} s/step = "
        f"{outside / total:.1%} of the step"
    )
    completions = sum(r["rollout/completions"] for r in steps) / len(steps)
    print(f"throughput: {completions / total:.0f} completions/s end to end")


if __name__ == "__main__":
    main()
