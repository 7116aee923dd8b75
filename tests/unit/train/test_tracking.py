"""Sample rows (samples.jsonl: content, choice, size bound) and the W&B tracker, offline: the
scalars, the sample table and the config land in the offline run, and a logger resumed from
a checkpoint's tracker state continues the same W&B run."""

import json
import math
import time

import pytest
import torch
from train_support import TOK, completions

from rewards.pool import PoolConfig, VerifierPool
from rlvr.train.metrics import RunLogger
from rlvr.train.scoring import RewardSpec, score
from rlvr.train.tracking import (
    LogConfig,
    SampleWriter,
    WandbConfig,
    cut,
    extremes,
    random_picks,
    sample_rows,
)
from tests.wandb_records import offline_run

ROWS = [
    {"prompt": "40+6=", "answer": "46", "verifier": "math",
     "rewards": [{"name": "math", "weight": 1.0, "args": {}},
                 {"name": "format_regex", "weight": 0.1, "args": {"pattern": "[0-9]+"}}]},
    {"prompt": "1+1=", "answer": "2", "verifier": "arith"},
]  # fmt: skip
PROMPTS = [TOK("40+6=").input_ids, TOK("1+1=").input_ids]


@pytest.fixture(scope="module")
def scored():
    comps = completions(["46", "4=6", "2", "3"], [0, 0, 1, 1])
    with VerifierPool(PoolConfig(num_workers=0)) as pool:
        scores = score(pool, TOK, ROWS, comps, RewardSpec(("math", "format_regex", "arith")))
    return comps, scores


def test_sample_rows_say_what_the_model_was_given_and_how_it_was_judged(scored):
    comps, scores = scored
    rows = sample_rows(7, "train", ROWS, PROMPTS, comps, scores, [1, 2], TOK, 2000)
    assert rows == [
        {"step": 7, "kind": "train", "prompt": "<bos>40+6=", "completion": "4=6", "gold": "46",
         "reward": 0.0, "components": {"math": 0.0, "format_regex": 0.0}, "outcome": "incorrect",
         "reason": "math: wrong answer; format_regex: no match", "length": 4, "finish": "stop"},
        {"step": 7, "kind": "train", "prompt": "<bos>1+1=", "completion": "2", "gold": "2",
         "reward": 1.0, "components": {"arith": 1.0}, "outcome": "correct", "reason": "",
         "length": 2, "finish": "stop"},
    ]  # fmt: skip
    json.dumps(rows, allow_nan=False)  # plain JSON: no NaN
    assert cut("x" * 20, 16) == "x" * 16 + "... [4 more characters]"


def test_best_and_worst_and_seeded_random_picks():
    reward_N = torch.tensor([0.1, math.nan, 1.1, 0.0, 1.1])
    assert extremes(reward_N, 2) == ([2, 4], [3, 0])  # NaN (an error) is in neither
    assert extremes(reward_N, 0) == ([], [])
    picks = random_picks(3, 10, seed=5)
    assert picks == random_picks(3, 10, seed=5) and len(set(picks)) == 3
    assert picks != random_picks(3, 10, seed=6)
    assert random_picks(8, 4, seed=5) == [0, 1, 2, 3]


def test_samples_file_stops_growing_at_its_bound(tmp_path):
    row = {"step": 1, "completion": "x" * 80}
    size = len(json.dumps(row)) + 1  # 97 bytes a line
    writer = SampleWriter(tmp_path, max_mb=(2 * size + 10) / 2**20)
    writer.write([row] * 3)
    writer.write([row])
    assert (tmp_path / "samples.jsonl").stat().st_size == 2 * size and writer.dropped == 2
    again = SampleWriter(tmp_path, max_mb=(2 * size + 10) / 2**20)  # a resumed run: same bound
    again.write([row])
    assert again.dropped == 1


def flushed(path, timeout_s=60.0):
    """The offline run once W&B's service has written it out (finish() does not wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = offline_run(path)
        if run["id"] is not None and run["history"] or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def test_wandb_offline_holds_scalars_table_and_config_and_resumes_the_same_run(
    tmp_path, monkeypatch, scored
):
    pytest.importorskip("wandb", reason="the [wandb] extra (dev installs it)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    comps, scores = scored
    cfg = LogConfig(wandb=WandbConfig(project="rlvr-test", tags=["unit"]))
    logger = RunLogger(tmp_path, 3, 0, cfg, {"trainer": {"steps": 3}}, {})
    logger.log(1, {"reward/mean": 0.25, "reward/math/mean": 0.5})
    logger.log(1, {"pass@1": 0.75}, kind="eval")
    logger.log_samples(
        1, "eval_best", sample_rows(1, "eval_best", ROWS, PROMPTS, comps, scores, [0], TOK, 100)
    )
    logger.log(2, {"reward/mean": 0.5, "reward/math/mean": 0.625})
    state = logger.tracker_state()  # what the checkpoint of step 2 keeps
    logger.close()
    resumed = RunLogger(tmp_path, 3, 2, cfg, {"trainer": {"steps": 3}}, state)
    assert resumed.tracker_state() == state
    resumed.log(3, {"reward/mean": 0.75, "reward/math/mean": 0.875})
    resumed.close()

    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and {p.name for p in runs} == {f"run-{state['wandb_run_id']}.wandb"}
    first, second = (flushed(p) for p in runs)
    assert first["id"] == second["id"] == state["wandb_run_id"]
    steps = {}
    for run in (first, second):
        for row in run["history"]:
            steps.setdefault(row["_step"], {}).update(row)
    assert {s: steps[s]["reward/mean"] for s in (1, 2, 3)} == {1: 0.25, 2: 0.5, 3: 0.75}
    assert steps[1]["eval/pass@1"] == 0.75 and steps[3]["reward/math/mean"] == 0.875
    assert steps[1]["samples/eval_best/_type"] == "table-file"
    assert first["config"]["trainer"] == {"steps": 3} or first["config"]["trainer"] == {"steps": 3}
    table = next(runs[0].parent.glob("files/media/table/samples/eval_best_1_*.table.json"))
    data = json.loads(table.read_text())
    assert data["columns"][:4] == ["step", "kind", "prompt", "completion"]
    assert data["data"][0][2:5] == ["<bos>40+6=", "46", "46"]  # prompt, completion, gold
    assert (tmp_path / "samples.jsonl").read_text().count("\n") == 1
