"""Automatic restarts: the restarted config, the `restart` record, and what a resume keeps of the
history (every completion counted once towards trainer.max_completions)."""

import json
from pathlib import Path

from rlvr.config import load_config
from rlvr.errors import ActorFailure
from rlvr.train.checkpoint import MANIFEST
from rlvr.train.controller import completions_spent
from rlvr.train.metrics import read_history, summary_table
from rlvr.train.recovery import Restart
from rlvr.train.run import Run


def fake_run(run_dir: Path, records: list[dict]) -> Run:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = object.__new__(Run)
    run.dir, run.cfg = run_dir, load_config(None, ["trainer.max_restarts=2"])
    return run


def train(step: int) -> dict:
    return {"kind": "train", "step": step, "rollout/completions": 128}


def test_a_restart_resumes_the_same_directory_and_records_what_is_redone(tmp_path):
    run = fake_run(tmp_path / "runs" / "x-1", [train(s) for s in (1, 2, 3, 4, 5)])
    ckpt = run.dir / "checkpoints" / "step_000004"
    ckpt.mkdir(parents=True)
    (ckpt / MANIFEST).write_text("{}")
    said = []
    restart = Restart.after(
        ActorFailure("sending weights: rollout worker 1 died (killed)"), run, 1, said.append
    )
    assert said == [
        "restart 1/2: sending weights: rollout worker 1 died (killed); starting the cluster again"
    ]
    cfg = restart.config(run.cfg, run.dir)
    assert (cfg.trainer.output_dir, cfg.trainer.name, cfg.trainer.resume) == (
        str(tmp_path / "runs"), "x-1", "auto",
    )  # fmt: skip
    assert cfg.learner == run.cfg.learner and run.cfg.trainer.resume == ""
    restart.record(run)
    record = read_history(run.dir)[-1]
    assert record["kind"] == "restart" and record["step"] == 4  # from checkpoint 4
    assert record["failed_step"] == 6 and record["steps_redone"] == 1  # step 5 is done again
    assert record["cause"] == "sending weights: rollout worker 1 died (killed)"
    # the resumed loop drops step 5's record but keeps the restart record
    run.truncate_history(4)
    kept = read_history(run.dir)
    assert [(r["kind"], r["step"]) for r in kept] == [("train", s) for s in (1, 2, 3, 4)] + [
        ("restart", 4)
    ]
    assert completions_spent(kept) == 4 * 128  # step 5's completions are counted once, later
    assert summary_table(kept).splitlines()[0] == "restarts: 1 (1 steps redone), preemptions: 0"


def test_a_restart_before_the_first_checkpoint_starts_over(tmp_path):
    run = fake_run(tmp_path / "r", [{"kind": "data", "step": 0}, train(1), train(2)])
    restart = Restart.after(ActorFailure("generation: learner rank 0 died"), run, 1, print)
    restart.record(run)
    run.truncate_history(-1)  # what the loop does when resume=auto finds no checkpoint
    (record,) = read_history(run.dir)
    assert record["step"] == 0 and record["steps_redone"] == 2


def test_a_line_cut_short_by_a_kill_is_not_a_record(tmp_path):
    run = fake_run(tmp_path / "r", [train(1)])
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    assert read_history(run.dir) == [train(1)]
