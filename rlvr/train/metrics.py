"""Run output: phase timers, JSONL + TensorBoard logs, progress bar, plots, the summary table."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from rlvr.train.tracking import SAMPLES_FILE, LogConfig, SampleWriter, WandbTracker


class PhaseTimer:
    """`with timer("generate"):` records seconds under time/generate for the current step."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"time/{phase}"] = (
                self.times.get(f"time/{phase}", 0.0) + time.perf_counter() - start
            )

    def pop(self) -> dict[str, float]:
        out, self.times = self.times, {}
        out["time/step"] = sum(out.values())
        return out


class RunLogger:
    """metrics.jsonl (one JSON object per step or evaluation), TensorBoard events, progress bar,
    sample rows (samples.jsonl) and, when `log.wandb` is set, a W&B run (rlvr.train.tracking)."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int = 0,
        log_cfg: LogConfig | None = None,
        run_config: dict | None = None,
        resume: dict | None = None,
    ):
        self.run_dir = run_dir
        log_cfg = log_cfg or LogConfig()
        self.samples = SampleWriter(run_dir, log_cfg.samples_max_mb)
        self.wandb = None
        if log_cfg.wandb is not None:  # first: it may fail (no wandb), before files are opened
            self.wandb = WandbTracker(log_cfg.wandb, run_dir, run_config or {}, resume or {})
        self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.bar = tqdm(
            total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
        )
        self.history: list[dict] = []

    def log(self, step: int, metrics: dict[str, float], kind: str = "train") -> None:
        record = {"kind": kind, "step": step, "wall_time": time.time(), **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        self.history.append(record)
        scalars = {
            key if kind == "train" else f"{kind}/{key}": value
            for key, value in metrics.items()
            if isinstance(value, int | float)
        }
        for key, value in scalars.items():
            self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(step, scalars)
        if kind == "train":
            self.bar.update(1)
            self.bar.set_postfix(
                reward=f"{metrics.get('reward/mean', float('nan')):.3f}",
                pass1=f"{metrics.get('train/pass@1', float('nan')):.3f}",
                s_per_step=f"{metrics.get('time/step', 0):.2f}",
                refresh=False,
            )
        elif kind == "eval":
            self.bar.write(
                f"step {step} {kind}: "
                + ", ".join(
                    f"{k}={v:.3f}"
                    for k, v in metrics.items()
                    if k.startswith("pass@") and "_ci" not in k
                )
            )

    def log_samples(self, step: int, kind: str, rows: list[dict]) -> None:
        """Sample rows (rlvr.train.tracking.sample_rows) to samples.jsonl and the tracker."""
        if not rows:
            return
        self.samples.write(rows)
        if self.wandb is not None:
            self.wandb.log_samples(step, kind, rows)

    def tracker_state(self) -> dict:
        """What a checkpoint keeps so a resumed run continues the same tracker run."""
        return self.wandb.state() if self.wandb is not None else {}

    def close(self) -> None:
        if self.jsonl.closed:  # closed already (a failed run's logger is closed with the run)
            return
        if self.samples.dropped:
            self.bar.write(
                f"{SAMPLES_FILE}: {self.samples.dropped} sample rows not written (the file "
                "reached log.samples_max_mb)"
            )
        self.bar.close()
        self.tb.close()
        self.jsonl.close()
        if self.wandb is not None:
            self.wandb.close()


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    try:
        records += [json.loads(line) for line in lines[-1:]]
    except ValueError:  # the last line, cut short by a kill: never a whole record
        pass
    return records


def write_plots(run_dir: Path, history: list[dict]) -> Path:
    """training.png: train reward / pass@1 per step, and held-out pass@k per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in history if r["kind"] == "train"]
    evals = [r for r in history if r["kind"] == "eval"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax1.plot(
            [r["step"] for r in train], [r.get("reward/mean") for r in train], label="mean reward"
        )
        ax1.plot(
            [r["step"] for r in train],
            [r.get("train/pass@1") for r in train],
            "--",
            label="train pass@1",
            alpha=0.7,
        )
    ax1.set(xlabel="step", title="training batches")
    ax1.legend()
    for key in sorted({k for r in evals for k in r if k.startswith("pass@") and "_ci" not in k}):
        ax2.errorbar(
            [r["step"] for r in evals],
            [r[key] for r in evals],
            marker="o",
            yerr=[
                [r[key] - r[f"{key}_ci_lo"] for r in evals],
                [r[f"{key}_ci_hi"] - r[key] for r in evals],
            ],
            label=f"held-out {key}",
            capsize=3,
        )
    ax2.set(xlabel="step", title="held-out evaluation (95% bootstrap CI)", ylim=(0, 1))
    ax2.legend()
    fig.tight_layout()
    path = run_dir / "training.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(history: list[dict]) -> str:
    """Prompts kept and over the length limit, first vs last evaluation and mean phase times,
    as an aligned text table."""
    evals = [r for r in history if r["kind"] == "eval"]
    train = [r for r in history if r["kind"] == "train"]
    data = [r for r in history if r["kind"] == "data"]
    lines = []
    if data:
        d = data[-1]
        lines.append(
            f"prompts: {d['train_prompts']} training, {d['eval_prompts']} held-out; "
            f"{d['train_over']} training and {d['eval_over']} held-out longer than "
            f"{d['prompt_limit']} tokens were {d['over_action']}"
        )
    if evals:
        first, last = evals[0], evals[-1]
        lines.append(
            f"{'held-out':<24}{'step ' + str(first['step']):>14}"
            f"{'step ' + str(last['step']):>14}{'change':>10}"
        )
        for key in sorted(k for k in last if k.startswith("pass@") and "_ci" not in k):
            lines.append(
                f"{key:<24}{first[key]:>14.3f}{last[key]:>14.3f}{last[key] - first[key]:>+10.3f}"
            )
    events = [r for r in history if r["kind"] in ("restart", "preempt")]
    if events:
        restarts = [r for r in events if r["kind"] == "restart"]
        lines.append(
            f"restarts: {len(restarts)} ({sum(r['steps_redone'] for r in restarts)} steps redone), "
            f"preemptions: {len(events) - len(restarts)}"
        )
    if train:
        lines.append(f"{'phase (mean s/step)':<24}{'':>14}{'seconds':>14}{'share':>10}")
        step_time = sum(r.get("time/step", 0) for r in train) / len(train)
        for key in sorted(
            {k for r in train for k in r if k.startswith("time/") and k != "time/step"}
        ):
            mean = sum(r.get(key, 0) for r in train) / len(train)
            lines.append(f"{key[5:]:<24}{'':>14}{mean:>14.3f}{mean / max(step_time, 1e-9):>10.1%}")
        lines.append(f"{'step':<24}{'':>14}{step_time:>14.3f}{1:>10.1%}")
    return "\n".join(lines)
