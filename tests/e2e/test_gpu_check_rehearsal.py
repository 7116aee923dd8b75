"""The GPU sync check's own flow, rehearsed on CPU (marker e2e, about a minute on 2 cores):
torchrun, two DeepSpeed ZeRO-3 learner ranks, one update, three bucketed gloo syncs into the
HF engine. It keeps sync_torchrun.py working between visits to a GPU machine."""

from __future__ import annotations

import sys

import pytest

from tests.gpu.test_gpu_checks import HERE, run  # the GPU checks' own runner

pytestmark = pytest.mark.e2e


def test_sync_check_flow_on_cpu(tmp_path):
    pytest.importorskip("deepspeed")
    results = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=3",
            str(HERE / "sync_torchrun.py"),
            "--gpus=0",
            "--zero=3",
            "--hidden=64",
            "--layers=2",
            f"--workdir={tmp_path}",
        ],
        timeout=600,
    )
    learner = next(r for r in results if r["role"] == "learner")
    engine = next(r for r in results if r["role"] == "engine")
    assert engine["fingerprints_match"] == [True, True, True]
    assert (
        learner["fingerprint"]
        == learner["fingerprint_after_update"]
        != engine["fingerprint_before_sync"]
    )
    assert (
        learner["backend"] == "gloo"
        and learner["learners"] == 2
        and learner["optimizer_steps"] == 1
    )
    # tiny Llama, vocabulary 18, hidden 64, 2 layers, FFN 256, tied:
    # 18*64 + 2*(4*64*64 + 3*64*256 + 128) + 64
    assert learner["bytes"] == 4 * 132_544
