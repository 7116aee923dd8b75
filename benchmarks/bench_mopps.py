"""MoPPS cost per step as the prompt set grows: select + observe time and resident memory.

    python benchmarks/bench_mopps.py                      # 10k, 100k, 1M prompts, B = 256, k = 8
    python benchmarks/bench_mopps.py --sizes 1000000 --steps 500 --mode threshold

Each size runs in a fresh subprocess so its RSS is its own. Per step: `next_batch(B)` over a pool
of ts_ratio x B candidates, then `observe` with k completions per prompt and outcomes drawn from
each prompt's hidden true rate (so posteriors move as in training). "step ms" is wall time,
"CPU ms" this process's CPU time (steadier on a shared machine). Time and memory should stay
flat in the number of prompts beyond the O(prompts) arrays themselves (2 float64 + 1 bool each).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(num_prompts: int, steps: int, batch: int, k: int, ts_ratio: float, mode: str) -> dict:
    # before the first RSS reading: torch is not our cost
    from rollout.mopps import MoPPSConfig, MoPPSSampler

    rss_start = rss_mib()
    began = time.perf_counter()
    sampler = MoPPSSampler(num_prompts, seed=0, config=MoPPSConfig(ts_ratio=ts_ratio, mode=mode))
    init_s = time.perf_counter() - began
    truth = np.random.default_rng(1).beta(0.5, 0.5, size=num_prompts)  # hidden success rates
    outcome_rng = np.random.default_rng(2)
    counts = [k] * batch
    times, cpu, rss_after_warmup = [], [], None
    for step in range(steps + 10):
        t0, c0 = time.perf_counter(), time.process_time()
        idx = sampler.next_batch(batch)
        t1, c1 = time.perf_counter(), time.process_time()
        successes = outcome_rng.binomial(k, truth[idx]).astype(float)  # the "rollout": not timed
        t2, c2 = time.perf_counter(), time.process_time()
        sampler.observe(idx, successes, counts)
        t3, c3 = time.perf_counter(), time.process_time()
        if step == 9:
            rss_after_warmup = rss_mib()
        if step >= 10:  # first steps pay allocation warm-up
            times.append((t1 - t0) + (t3 - t2))
            cpu.append((c1 - c0) + (c3 - c2))
    ms = np.array(times) * 1e3
    return {
        "prompts": num_prompts,
        "mode": mode,
        "init_s": init_s,
        "step_ms_mean": float(ms.mean()),
        "step_ms_p50": float(np.percentile(ms, 50)),
        "step_ms_p95": float(np.percentile(ms, 95)),
        "cpu_ms_mean": float(np.mean(cpu) * 1e3),
        "rss_start_mib": rss_start,
        "rss_warm_mib": rss_after_warmup,
        "rss_end_mib": rss_mib(),
        "rank_corr_last": sampler.metrics()["sampler/rank_corr"],
        "observed_frac": sampler.metrics()["sampler/observed_frac"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--ts-ratio", type=float, default=16.0)
    ap.add_argument("--mode", choices=["topk", "threshold"], default="topk")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.one:
        print(
            json.dumps(
                measure(args.sizes[0], args.steps, args.batch, args.k, args.ts_ratio, args.mode)
            )
        )
        return
    print(
        f"MoPPS select+observe, B={args.batch}, k={args.k}, ts_ratio={args.ts_ratio:g} "
        f"(pool {int(args.ts_ratio * args.batch)}), mode={args.mode}, {args.steps} timed steps"
    )
    print(
        f"{'prompts':>9} {'init s':>7} {'step ms':>8} {'p50':>7} {'p95':>7} {'CPU ms':>7} "
        f"{'RSS start':>10} {'RSS warm':>9} {'RSS end':>8} {'growth':>7}"
    )
    for size in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--sizes",
            str(size),
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--k",
            str(args.k),
            "--ts-ratio",
            str(args.ts_ratio),
            "--mode",
            args.mode,
        ]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"{r['prompts']:>9,} {r['init_s']:>7.3f} {r['step_ms_mean']:>8.2f} "
            f"{r['step_ms_p50']:>7.2f} {r['step_ms_p95']:>7.2f} {r['cpu_ms_mean']:>7.2f} "
            f"{r['rss_start_mib']:>8.1f}Mi {r['rss_warm_mib']:>7.1f}Mi "
            f"{r['rss_end_mib']:>6.1f}Mi {r['rss_end_mib'] - r['rss_warm_mib']:>5.1f}Mi"
        )


if __name__ == "__main__":
    main()
