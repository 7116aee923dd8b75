"""Table and plots of bench_sample_efficiency.py from its output directory (no training here).

Each run's evaluations become points (completions generated so far, training seconds so far,
metrics). rlvr runs: completions are the sum of `rollout/completions` of the steps before the
evaluation, seconds the sum of `time/step` (every phase of a step; Ray start-up, evaluations and
checkpoints are left out). TRL runs record both directly (evaluation time excluded). A curve is
read at fixed budgets by linear interpolation between evaluations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

FRACTIONS = (0.25, 0.5, 1.0)


def curve(run_dir: Path) -> list[dict]:
    """Evaluation points of one run, in order."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    points, spent, seconds = [], 0, 0.0
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "train":
            spent += r["rollout/completions"]
            seconds += r["time/step"]
        elif r["kind"] == "eval":
            point = {
                "completions": r.get("completions", spent),
                "time_s": r.get("train_time_s", seconds),
            }
            points.append({**r, **point})
    return points


def train_stats(run_dir: Path) -> dict:
    """Means over a run's steps of the diagnostics that explain the sample counts."""
    path = run_dir / "metrics.jsonl"
    steps = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    steps = [r for r in steps if r["kind"] == "train"]
    keys = {
        "groups/solved_all": "solved_all",
        "groups/solved_none": "solved_none",
        "gate/gen_batches": "rounds",
        "sampler/rank_corr": "rank_corr",
        "rollout/completions": "per_step",
        "actor/optimizer_steps": "opt_steps",
    }
    out = {"steps": len(steps)}
    for key, short in keys.items():
        vals = [
            r[key] for r in steps if isinstance(r.get(key), int | float) and not math.isnan(r[key])
        ]
        out[short] = float(np.mean(vals)) if vals else math.nan
    return out


def at(points: list[dict], key: str, x: float, axis: str = "completions") -> float:
    xs = [p[axis] for p in points if key in p]
    ys = [p[key] for p in points if key in p]
    if not xs or x > xs[-1] + 1e-9:
        return math.nan
    return float(np.interp(x, xs, ys))


def first_reach(points: list[dict], key: str, target: float, axis: str, budget: float) -> float:
    """Interpolated `axis` value where the curve first reaches `target` within `budget`
    completions (NaN if it does not)."""
    if points and points[0][key] >= target:
        return 0.0
    for a, b in zip(points, points[1:]):
        if a[key] < target <= b[key]:
            w = (target - a[key]) / (b[key] - a[key])
            if a["completions"] + w * (b["completions"] - a["completions"]) > budget:
                return math.nan
            return a[axis] + w * (b[axis] - a[axis])
    return math.nan


def collect(out: Path) -> dict:
    """{arm: {seed: {"points", "stats", "status"}}} for every run found under `out`."""
    meta = json.loads((out / "bench.json").read_text())
    runs: dict = {arm: {} for arm in meta["arms"]}
    for status_file in sorted((out / "status").glob("*.json")):
        status = json.loads(status_file.read_text())
        run_dir = out / "runs" / status_file.stem
        runs.setdefault(status["arm"], {})[status["seed"]] = {
            "status": status,
            "points": curve(run_dir),
            "stats": train_stats(run_dir),
        }
    return runs


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    vals = [v * scale for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def table(out: Path) -> tuple[str, dict]:
    meta = json.loads((out / "bench.json").read_text())
    budget, runs = meta["budget"], collect(out)
    level = "level/3:+:2/pass@1"
    grpo_final = [
        at(r["points"], "pass@1", budget) for r in runs.get("grpo", {}).values() if r["points"]
    ]
    start = [r["points"][0]["pass@1"] for arm in runs.values() for r in arm.values() if r["points"]]
    target = (
        (np.mean(start) + 0.8 * (np.nanmean(grpo_final) - np.mean(start)))
        if grpo_final and start
        else math.nan
    )
    head = (
        f"| arm | runs ok | pass@1 @{budget // 2} | pass@1 @{budget} | gain | "
        f"pass@8 @{budget} | gain | "
        f"3-digit pass@1 | k completions to pass@1 {target * 100:.1f} | train s to it | "
        "train s, whole run | "
        "steps | completions/step | solved-all groups | rank corr |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    summary = {"target_pass@1": target, "arms": {}}
    for arm, seeds in runs.items():
        ok = [r for r in seeds.values() if r["status"]["rc"] == 0 and r["points"]]
        pts = [r["points"] for r in ok]
        row = {
            "half_p1": [at(p, "pass@1", budget / 2) for p in pts],
            "p1": [at(p, "pass@1", budget) for p in pts],
            "p8": [at(p, "pass@8", budget) for p in pts],
            "tail": [at(p, level, budget) for p in pts],
            "gain1": [at(p, "pass@1", budget) - p[0]["pass@1"] for p in pts],
            "gain8": [at(p, "pass@8", budget) - p[0]["pass@8"] for p in pts],
            "reach": [first_reach(p, "pass@1", target, "completions", budget) for p in pts],
            "reach_s": [first_reach(p, "pass@1", target, "time_s", budget) for p in pts],
            "train_s": [p[-1]["time_s"] for p in pts],
        }
        stats = [r["stats"] for r in ok]
        reached = sum(not math.isnan(x) for x in row["reach"])
        lines.append(
            f"| {arm} | {len(ok)}/{len(seeds)} | {fmt(row['half_p1'])} | {fmt(row['p1'])} | "
            f"{fmt(row['gain1'])} | "
            f"{fmt(row['p8'])} | {fmt(row['gain8'])} | {fmt(row['tail'])} | "
            f"{fmt(row['reach'], 1e-3, 1)} "
            f"({reached}/{len(ok)} runs) | "
            f"{fmt(row['reach_s'], 1, 0)} | {fmt(row['train_s'], 1, 0)} | "
            f"{fmt([s['steps'] for s in stats], 1, 0)} | "
            f"{fmt([s['per_step'] for s in stats], 1, 0)} | "
            f"{fmt([s['solved_all'] for s in stats])} | "
            f"{fmt([s['rank_corr'] for s in stats], 1, 2)} |"
        )
        summary["arms"][arm] = {
            **row,
            "stats": stats,
            "failed": [
                r["status"] for r in seeds.values() if r["status"]["rc"] != 0 or not r["points"]
            ],
        }
    return "\n".join(lines), summary


def band(xs_runs: list[list[float]], ys_runs: list[list[float]], grid: np.ndarray):
    ys = np.array([np.interp(grid, x, y, right=np.nan) for x, y in zip(xs_runs, ys_runs)])
    return np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def plot(out: Path, keys: list[tuple[str, str]], name: str) -> Path:
    """One panel per (metric, axis): mean over seeds, band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = collect(out)
    cols = min(2, len(keys))
    fig, axes = plt.subplots(
        math.ceil(len(keys) / cols), cols, figsize=(6.2 * cols, 4.4 * math.ceil(len(keys) / cols))
    )
    for ax, (key, axis) in zip(np.atleast_1d(axes).flat, keys):
        for arm, seeds in runs.items():
            pts = [
                r["points"]
                for r in seeds.values()
                if r["status"]["rc"] == 0 and len(r["points"]) > 1
            ]
            if not pts:
                continue
            xs = [[p[axis] for p in run] for run in pts]
            ys = [[p.get(key, math.nan) for p in run] for run in pts]
            grid = np.linspace(0, min(x[-1] for x in xs), 60)
            mean, lo, hi = band(xs, ys, grid)
            scale = 1e-3 if axis == "completions" else 1.0
            (line,) = ax.plot(
                grid * scale, mean, label=arm, ls="--" if arm.startswith("trl") else "-"
            )
            ax.fill_between(grid * scale, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set(
            xlabel="completions generated (thousands)"
            if axis == "completions"
            else "training seconds",
            ylabel=f"held-out {key}",
            title=f"{key}, mean over seeds (band: min to max)",
        )
        ax.grid(alpha=0.3)
    np.atleast_1d(axes).flat[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(out: Path) -> str:
    """Write table.md, results.json and the plots; return the text to print."""
    text, summary = table(out)
    meta = json.loads((out / "bench.json").read_text())
    warm = (
        json.loads((out / "warmstart.json").read_text())
        if (out / "warmstart.json").exists()
        else {}
    )
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "warm_start": warm, **summary}, indent=2, default=float)
    )
    (out / "table.md").write_text(text + "\n")
    plots = [
        plot(
            out,
            [
                ("pass@1", "completions"),
                ("pass@8", "completions"),
                ("pass@1", "time_s"),
                ("pass@8", "time_s"),
            ],
            "sample_efficiency.png",
        ),
        plot(
            out,
            [("level/2:+:2/pass@1", "completions"), ("level/3:+:2/pass@1", "completions")],
            "levels.png",
        ),
    ]
    failed = [f for arm in summary["arms"].values() for f in arm["failed"]]
    notes = [f"failed runs: {failed}"] if failed else []
    return "\n".join([text, *notes, *[f"plot: {p}" for p in plots]])
