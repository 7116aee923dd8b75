"""What a run records besides its metrics: sample rows (samples.jsonl) and the W&B tracker.

Sample rows show what the model generated: every `log.samples_every` steps a seeded random
`log.samples_per_step` completions of the step, and at every evaluation its best and worst
`log.eval_samples`. Each row holds the prompt as the model saw it, the completion, the gold
answer, the reward, each component's score and the verifiers' verdict and reasons. Texts are
cut to `log.sample_chars` and the file stops growing at `log.samples_max_mb` (rows past it are
counted, not written), so a long run cannot fill the disk.

W&B (optional: `pip install 'rlvr[wandb]'`) gets the same scalars as TensorBoard, the samples as
tables and the resolved config. Its run id is stored in every checkpoint, so a resumed run
continues the same W&B run. `WANDB_MODE=offline` writes everything under <run>/wandb/ without a
network (`wandb sync` uploads it later).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

SAMPLES_FILE = "samples.jsonl"
SAMPLE_COLUMNS = (
    "step", "kind", "prompt", "completion", "gold", "reward", "components", "outcome", "reason",
    "length", "finish",
)  # fmt: skip


class WandbConfig(BaseModel):
    """`log.wandb`: a Weights & Biases run beside TensorBoard."""

    model_config = ConfigDict(extra="forbid", strict=True)

    project: str = Field(min_length=1, description="W&B project")
    name: str = Field("", description="W&B run name (default: the run directory's name)")
    tags: list[str] = Field(default_factory=list, description="W&B run tags")
    entity: Optional[str] = Field(None, description="W&B team or user (default: your own)")


class LogConfig(BaseModel):
    """The `log` section: sample rows and trackers (TensorBoard is always on)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    samples_every: int = Field(
        5, ge=0, description="write sample rows of the training batch every N steps (0 = never)"
    )
    samples_per_step: int = Field(8, ge=1, description="sample rows per logged training step")
    eval_samples: int = Field(
        4, ge=0, description="best and worst completions of each evaluation logged (each)"
    )
    sample_chars: int = Field(
        2000, ge=16, description="longest prompt or completion text kept in a sample row"
    )
    samples_max_mb: float = Field(
        50.0, gt=0.0, description="samples.jsonl stops growing past this size (rows counted)"
    )
    wandb: Optional[WandbConfig] = Field(
        None, description="also log to Weights & Biases (needs the wandb package)"
    )


def cut(text: str, chars: int) -> str:
    """`text` shortened to `chars` characters, saying how much was left out."""
    if len(text) <= chars:
        return text
    return f"{text[:chars]}... [{len(text) - chars} more characters]"


def _number(x: float) -> float | None:
    return None if math.isnan(x) else x  # JSON has no NaN


def sample_rows(step, kind, rows, prompts, comps, scores, picked, tokenizer, chars) -> list[dict]:
    """Sample rows of the completions `picked`; rows[p] / prompts[p] are prompt p's data row and
    token ids (comps.prompt_index_N points into them)."""
    out = []
    for i in picked:
        p = int(comps.prompt_index_N[i])
        used = (
            (scores.weight_CN[:, i] != 0) | scores.error_CN[:, i] | ~scores.score_CN[:, i].isnan()
        )
        components = {
            name: _number(float(scores.score_CN[c, i]))
            for c, name in enumerate(scores.names)
            if used[c]
        }
        outcome = (
            "error" if scores.error_N[i] else "correct" if scores.correct_N[i] else "incorrect"
        )
        out.append(
            {
                "step": step,
                "kind": kind,
                "prompt": cut(tokenizer.decode(prompts[p]), chars),
                "completion": cut(scores.texts[i], chars),
                "gold": str(rows[p]["answer"]),
                "reward": _number(float(scores.reward_N[i])),
                "components": components,
                "outcome": outcome,
                "reason": cut(scores.reasons[i], chars),
                "length": int(comps.length_N[i]),
                "finish": comps.finish_reason[i],
            }
        )
    return out


def random_picks(count: int, total: int, seed: int) -> list[int]:
    """`count` distinct completion indices of `total`, drawn with their own seed (no global RNG
    is touched, so logging samples changes no training stream)."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(total, size=min(count, total), replace=False).tolist())


def extremes(reward_N: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
    """Indices of the `count` highest and `count` lowest defined rewards (ties: lower index
    first); errored completions (NaN) are in neither."""
    defined = [i for i in range(len(reward_N)) if not math.isnan(float(reward_N[i]))]
    order = sorted(defined, key=lambda i: (-float(reward_N[i]), i))
    best = order[:count]
    worst = sorted(defined, key=lambda i: (float(reward_N[i]), i))[:count]
    return best, worst


class SampleWriter:
    """samples.jsonl, appended to, bounded in size; rows past the bound are counted."""

    def __init__(self, run_dir: Path, max_mb: float):
        self.path = run_dir / SAMPLES_FILE
        self.limit = int(max_mb * 2**20)
        self.size = self.path.stat().st_size if self.path.exists() else 0
        self.dropped = 0

    def write(self, rows: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                line = json.dumps(row, ensure_ascii=False) + "\n"
                size = len(line.encode("utf-8"))
                if self.size + size > self.limit:
                    self.dropped += 1
                    continue
                f.write(line)
                self.size += size


class WandbTracker:
    """One W&B run: scalars per step, sample tables, the config; `state()` goes into every
    checkpoint and `resume` (that state) continues the same run."""

    def __init__(self, config: WandbConfig, run_dir: Path, run_config: dict, resume: dict):
        import wandb

        self.run = wandb.init(
            project=config.project,
            entity=config.entity,
            name=config.name or run_dir.name,
            tags=list(config.tags),
            config=run_config,
            dir=str(run_dir),
            id=resume.get("wandb_run_id"),  # None: a new run, with an id W&B chooses
            resume="allow",
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_samples(self, step: int, kind: str, rows: list[dict]) -> None:
        import wandb

        data = [
            [json.dumps(r[c]) if c == "components" else r[c] for c in SAMPLE_COLUMNS] for r in rows
        ]
        self.run.log(
            {f"samples/{kind}": wandb.Table(columns=list(SAMPLE_COLUMNS), data=data)}, step=step
        )

    def state(self) -> dict:
        return {"wandb_run_id": self.run.id}

    def close(self) -> None:
        self.run.finish()
