"""Automatic restarts (trainer.max_restarts): after an actor failure the controller closes the
run (verifier pool, actors, Ray) and starts it again with trainer.resume=auto in the same run
directory, so it continues from the newest complete checkpoint, or from step 0 if there is none.

The steps after that checkpoint are computed again from the same state and seeds, so they equal
the ones they replace; their old records are dropped from metrics.jsonl (Run.truncate_history),
so trainer.max_completions counts each completion once. Each restart leaves a `restart` record:
its number, the cause in one line, the step that failed, the steps redone and the seconds from
the failure to the new cluster being ready.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rlvr.train.checkpoint import PATTERN, list_checkpoints


@dataclass
class Restart:
    number: int
    cause: str
    failed_step: int  # the step in progress when the failure came
    failed_at: float  # time.monotonic()

    @classmethod
    def after(cls, exc: BaseException, run, number: int, log) -> Restart:
        done = [r["step"] for r in run.history() if r["kind"] == "train"]
        limit = run.cfg.trainer.max_restarts
        log(f"restart {number}/{limit}: {exc}; starting the cluster again")
        return cls(number, str(exc), max(done, default=0) + 1, time.monotonic())

    def config(self, cfg, run_dir: Path):
        """The run's config for the restart: the same directory, resumed automatically."""
        tc = cfg.trainer.model_copy(
            update={"output_dir": str(run_dir.parent), "name": run_dir.name, "resume": "auto"}
        )
        return cfg.model_copy(update={"trainer": tc})

    def record(self, run) -> None:
        """Before the restarted loop: the `restart` record, at the step it resumes from."""
        found = list_checkpoints(run.dir)
        start = int(PATTERN.match(found[-1].name).group(1)) if found else 0
        record = {
            "kind": "restart",
            "step": start,
            "wall_time": time.time(),
            "restart": self.number,
            "cause": self.cause,
            "failed_step": self.failed_step,
            "steps_redone": self.failed_step - 1 - start,
            "restart_s": time.monotonic() - self.failed_at,
        }
        with open(run.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
