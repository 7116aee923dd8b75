"""Preemption: SIGTERM or SIGINT ends a run at a step boundary with a checkpoint, within
`trainer.preempt_grace_s`, and the CLI exits with PREEMPTED_EXIT so a scheduler can requeue it.

On the first signal the run finishes the step in progress, writes a checkpoint of it and stops.
If finishing the step and writing the checkpoint would not fit in the grace time (estimated from
the previous step and checkpoint), or the step is still running when the time left is only the
checkpoint's, the step is abandoned: the run stops at once and keeps its last checkpoint (the
abandoned step is redone after the requeue). A second signal abandons at once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

# EX_TEMPFAIL (sysexits.h, "try again later"): launch/slurm_train.sbatch requeues the job on it
PREEMPTED_EXIT = 75


class Preempted(BaseException):
    """The run stopped on a signal (the message: one line for the user). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


class Abandon(Preempted):
    """Raised from the signal handler: the step in progress is given up."""


class PreemptWatch:
    """Installs the SIGTERM/SIGINT handlers for the duration of a run (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, grace_s: float, log=print):
        self.grace_s, self.log = grace_s, log
        self.signum: int | None = None
        self.at = 0.0
        self.step_began: float | None = None  # set while a step runs
        self.step_s = 0.0  # the last step's duration, checkpoint included
        self.checkpoint_s = 0.0  # the last checkpoint's duration
        self._saved: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> PreemptWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in (*self.SIGNALS, signal.SIGALRM):
                self._saved[sig] = signal.getsignal(sig)
            self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: ray.init installs its own SIGTERM handler (it prints a
        stack and kills the process), so this runs again after Ray has started."""
        if self._saved:
            for sig in self.SIGNALS:
                signal.signal(sig, self._on_signal)
            signal.signal(signal.SIGALRM, self._on_alarm)

    def __exit__(self, *exc) -> None:
        if self._saved:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved = {}

    def begin_step(self, step: int) -> None:
        """Called before each step; a signal that came between steps stops the run here."""
        if self.requested:
            raise Preempted(f"{self.name} before step {step + 1}")
        self.step_began = time.monotonic()

    def end_step(self, checkpoint_s: float | None) -> None:
        """Called after each step (and its checkpoint, if one was written)."""
        if self._saved:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self.step_began is not None:
            self.step_s = time.monotonic() - self.step_began
        if checkpoint_s is not None:
            self.checkpoint_s = checkpoint_s
        self.step_began = None

    def record(self, run_dir: Path, exc: Preempted, kept: Path | None) -> str:
        """The `preempt` record in metrics.jsonl; returns the line for the user."""
        step = int(kept.name.split("_")[-1]) if kept is not None else 0
        record = {
            "kind": "preempt",
            "step": step,
            "wall_time": time.time(),
            "signal": self.name,
            "abandoned": isinstance(exc, Abandon),
            "exit_s": time.monotonic() - self.at if self.requested else 0.0,
        }
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        where = f"checkpoint {kept}" if kept is not None else "no checkpoint yet"
        return f"preempted ({exc}); {where}; {record['exit_s']:.1f} s after the signal"

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise Abandon(f"second signal ({signal.Signals(signum).name}): step abandoned")
        self.signum, self.at = signum, time.monotonic()
        if self.step_began is None:
            return  # between steps (starting, evaluating at step 0): begin_step stops the run
        remaining = max(0.0, self.step_s - (time.monotonic() - self.step_began))
        # no checkpoint timed yet: half the grace for the step, half for the checkpoint
        budget = self.grace_s - self.checkpoint_s if self.checkpoint_s else self.grace_s / 2
        self.log(
            f"{self.name}: finishing the step (about {remaining:.0f} s) and writing a checkpoint "
            f"(about {self.checkpoint_s:.0f} s) within trainer.preempt_grace_s={self.grace_s:g}"
        )
        if self.step_s and remaining > budget:
            raise Abandon(
                f"{self.name}: the step would not finish within trainer.preempt_grace_s="
                f"{self.grace_s:g} s (about {remaining:.0f} s left, {self.checkpoint_s:.0f} s to "
                "checkpoint); step abandoned"
            )
        signal.setitimer(signal.ITIMER_REAL, max(budget, 0.001))

    def _on_alarm(self, signum, frame) -> None:
        if self.step_began is not None:
            raise Abandon(
                f"{self.name}: the step was still running when only the checkpoint's time of "
                f"trainer.preempt_grace_s={self.grace_s:g} s was left; step abandoned"
            )
