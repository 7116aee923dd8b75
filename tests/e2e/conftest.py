"""E2E tests share one warm-started tiny model, built once into the repo-local cache."""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("RLVR_CACHE", str(ROOT / ".cache" / "rlvr"))
os.environ.setdefault("DEEPSPEED_TIMEOUT", "5")  # minutes: a hung collective fails the test, not CI
# An empty JIT-extension folder per session: the learner must start without building any op
# (tests/e2e/test_learner.py checks that it stays empty).
os.environ["TORCH_EXTENSIONS_DIR"] = tempfile.mkdtemp(prefix="rlvr-torch-ext-")

# A quick warm start on one-digit sums: good enough to be right about half the time, so the
# reward has room to rise within a few RL steps.
E2E = [
    "data.arith.mix={'1:+:2': 1}",
    "data.arith.train_size=80",
    "data.arith.heldout_size=9",
    "sft.steps=150",
    "sft.batch_size=128",
    "rollout.max_new_tokens=4",
    "eval.num_problems=9",
    "eval.n=4",
    "eval.k=[1,4]",
    "eval.every=0",
]


@pytest.fixture(scope="session")
def e2e_overrides(tmp_path_factory):
    from rlvr.config import load_config
    from rlvr.tasks.warm_start import builtin_model_dir

    out = tmp_path_factory.mktemp("runs")
    overrides = E2E + [f"trainer.output_dir={out}"]
    builtin_model_dir(load_config(None, overrides))
    return overrides


def kill_when(cmd: list[str], marker: Path, timeout_s: float) -> None:
    """Start `rlvr train` as its own process group, wait until `marker` exists (a checkpoint),
    then SIGKILL the whole group: driver, Ray and its actors."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + timeout_s
    while not marker.exists():
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{marker} did not appear within {timeout_s:g} s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
