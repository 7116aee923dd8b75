"""GPU checks (marker `gpu`; tests/conftest.py skips them without CUDA). Each runs a script in a
subprocess and checks its RESULT line; run_gpu_checks.sh runs them and prints the figures.

A check whose packages are missing on the GPU machine is skipped with a reason starting
"NOT RUN", so it shows as skipped, never as passed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"NOT RUN: {module} is not importable here (carry it as a wheel; see run_gpu_checks.sh)"
        )


def result_lines(out: str) -> list[dict]:
    return [
        json.loads(line[len("RESULT ") :])
        for line in out.splitlines()
        if line.startswith("RESULT ")
    ]


def run(cmd: list[str], timeout: float) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    results = result_lines(proc.stdout)
    assert proc.returncode == 0 and results, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    for r in results:
        print("FIGURES " + json.dumps(r))
    return results


def test_deepspeed_learner_and_bucketed_sync_into_hf_engine():
    require("deepspeed")
    import torch

    gpus = torch.cuda.device_count()
    learners = 1 if gpus <= 2 else 2  # NCCL needs distinct GPUs per rank of one group
    results = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={learners + 1}",
            str(HERE / "sync_torchrun.py"),
            f"--gpus={gpus}",
            "--zero=3",
        ],
        timeout=900,
    )
    learner = next(r for r in results if r["role"] == "learner")
    engine = next(r for r in results if r["role"] == "engine")
    assert all(engine["fingerprints_match"]) and len(engine["fingerprints_match"]) == 3
    assert (
        learner["fingerprint"] == learner["fingerprint_after_update"]
    )  # what was sent is the learner's state
    assert learner["fingerprint"] != engine["fingerprint_before_sync"]  # and the update moved it
    assert learner["optimizer_steps"] >= 1 and learner["backend"] == (
        "nccl" if gpus > 1 else "gloo"
    )


def test_vllm_smoke():
    require("vllm")
    (r,) = run([sys.executable, str(HERE / "vllm_smoke.py")], timeout=900)
    assert r["fingerprints"] and all(fp == r["sent"] for fp in r["fingerprints"])
    assert r["greedy_equal"] == r["prompts"]
    assert r["max_logprob_diff"] < 1e-2
