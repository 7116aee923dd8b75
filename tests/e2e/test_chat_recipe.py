"""The conversational recipe end to end (recipes/chat-tiny.yaml): rows with a messages column,
`math + 0.1 x format` logged per component, over-long prompts dropped with a count, sample rows,
and a W&B run (offline) that a kill and `trainer.resume=auto` continue under the same id."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlvr.config import load_config
from rlvr.train.controller import train
from rlvr.train.metrics import read_history
from tests.wandb_records import offline_run

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "chat-tiny.yaml"


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 900) -> None:
    deadline = time.time() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.2)


def own_wandb_service() -> dict:
    """The environment without WANDB_SERVICE: an earlier test's wandb.init in this process left
    its service's address there, and a child that shares that service leaves its run id held by
    it after a SIGKILL, so the resume below would get "run ID ... is in use"."""
    return {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}


def test_chat_recipe_logs_components_drops_long_prompts_and_resumes_its_wandb_run(
    e2e_overrides, tmp_path, monkeypatch
):
    pytest.importorskip("wandb", reason="the [wandb] extra (dev installs it)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    common = e2e_overrides + [
        f"trainer.output_dir={tmp_path}",
        "trainer.name=chat",
        "trainer.steps=4",
        "trainer.checkpoint_every=2",
        "trainer.prompts_per_step=8",
        "log.samples_every=1",
        "log.samples_per_step=4",
        "log.eval_samples=2",
        "log.wandb.project=rlvr-e2e",
    ]
    run = tmp_path / "chat"
    cmd = [sys.executable, "-m", "rlvr.cli", "train", str(RECIPE), *common]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=own_wandb_service(),
    )  # fmt: skip
    wait_for(run / "checkpoints" / "step_000002", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # driver, Ray, actors, W&B's service: all of it
    proc.wait()
    state = torch.load(run / "checkpoints" / "step_000002" / "trainer_state.pt", weights_only=False)
    run_id = state["extra"]["tracker"]["wandb_run_id"]

    logged = []
    train(load_config(RECIPE, common + ["trainer.resume=auto"]), str(RECIPE), log=logged.append)
    history = read_history(run)
    steps = [r for r in history if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # nothing repeated, nothing lost
    for r in steps:
        # math + 0.1 x format_regex: each component's own mean, errors and advantage share
        assert 0.0 <= r["reward/math/mean"] <= 1.0 and 0.0 <= r["reward/format_regex/mean"] <= 1.0
        assert r["reward/math/errors"] == 0 and r["reward/format_regex/errors"] == 0
        assert r["reward/math/mean"] == pytest.approx(r["train/pass@1"])  # math decides correct
        want = r["reward/math/mean"] + 0.1 * r["reward/format_regex/mean"]
        assert r["reward/mean"] == pytest.approx(want, abs=1e-6)
        shares = r["reward/math/adv_share"] + r["reward/format_regex/adv_share"]
        assert math.isnan(shares) or shares == pytest.approx(1.0, abs=1e-9)
    # the 4 training rows of 6-9 operands (19-28 tokens) and the 1 long row among the first 9
    # held-out ones are over data.max_prompt_tokens=16: dropped, counted, in the summary
    data = [r for r in history if r["kind"] == "data"][-1]
    assert (data["train_prompts"], data["train_over"], data["eval_over"]) == (40, 4, 1)
    assert any(
        "4 training and 1 held-out longer than 16 tokens were dropped" in line for line in logged
    )

    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    train_rows = [s for s in samples if s["kind"] == "train"]
    assert [s["step"] for s in train_rows] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert {s["kind"] for s in samples} == {"train", "eval_best", "eval_worst"}
    for s in train_rows:
        assert s["prompt"].startswith("<bos>") and s["prompt"].endswith("=")
        assert set(s["components"]) == {"math", "format_regex"}
        want = s["components"]["math"] + 0.1 * s["components"]["format_regex"]
        assert s["reward"] == pytest.approx(want, abs=1e-6)

    runs = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and all(p.name == f"run-{run_id}.wandb" for p in runs)
    resumed = offline_run(runs[1])  # finished cleanly: the whole record is there
    assert resumed["id"] == run_id
    logged_steps = {row["_step"] for row in resumed["history"] if "reward/math/mean" in row}
    assert logged_steps == {3, 4}
    assert resumed["config"]["rewards"][1]["args"] == {"pattern": "-?[0-9]+"}
    assert list(runs[1].parent.glob("files/media/table/samples/train_4_*.table.json"))
