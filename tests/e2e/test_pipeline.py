"""End to end on Ray: rollout workers + DeepSpeed learners + weight sync, on the tiny task."""

from pathlib import Path

import pytest
import torch

from rlvr.config import load_config
from rlvr.tasks.warm_start import resolve_model_path
from rlvr.train.controller import train
from rlvr.train.metrics import read_history

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def records(run_dir: Path, kind: str = "train") -> list[dict]:
    return [r for r in read_history(run_dir) if r["kind"] == kind]


def test_two_workers_two_learners_learn_and_stay_in_sync(e2e_overrides):
    cfg = load_config(
        None,
        e2e_overrides
        + [
            "rollout.num_workers=2",
            "learner.num_workers=2",
            "learner.zero_stage=2",
            "learner.lr=5e-4",
            "learner.warmup_steps=3",
            "learner.micro_batch_size=48",
            "trainer.steps=20",
            "trainer.prompts_per_step=64",
            "trainer.checkpoint_every=0",
            "trainer.name=sync",
        ],
    )
    train(cfg, None)
    run = Path(cfg.trainer.output_dir) / "sync"
    steps = records(run)
    assert [r["step"] for r in steps] == list(range(1, 21))
    updated = [r for r in steps if not r["update/skipped"]]
    assert len(updated) >= 18
    # after every sync each of the 2 workers' fingerprints was compared with the learner's
    # (a mismatch raises), so every updating step reports 2 checked workers
    assert all(r["sync/checked_workers"] == 2 for r in updated)
    first = sum(r["reward/mean"] for r in steps[:4]) / 4
    last = sum(r["reward/mean"] for r in steps[-4:]) / 4
    assert last > first + 0.04, f"reward did not rise: {first:.3f} -> {last:.3f}"
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg)).state_dict()
    final_dir = sorted((run / "checkpoints").iterdir())[-1] / "policy"
    end = AutoModelForCausalLM.from_pretrained(final_dir).state_dict()
    unchanged = [n for n in start if torch.equal(start[n], end[n])]
    assert not unchanged, f"parameters that never changed: {unchanged}"
    assert (run / "training.png").exists() and (run / "config.yaml").exists()


def test_max_completions_stops_with_a_final_evaluation(e2e_overrides, tmp_path):
    cfg = load_config(
        None,
        e2e_overrides
        + [
            f"trainer.output_dir={tmp_path}",
            "trainer.steps=50",
            "trainer.prompts_per_step=16",
            "rollout.n=4",
            "trainer.max_completions=150",
            "trainer.checkpoint_every=0",
            "trainer.name=budget",
        ],
    )
    train(cfg, None)
    run = tmp_path / "budget"
    # 16 prompts x 4 = 64 completions a step: 128 < 150 <= 192, so the run stops after step 3
    assert [r["step"] for r in records(run)] == [1, 2, 3]
    assert [r["step"] for r in records(run, "eval")] == [0, 3]  # eval.every=0: start, and the stop
    assert (run / "checkpoints" / "step_000003").exists()


def test_mopps_and_dars_on_two_workers(e2e_overrides):
    cfg = load_config(
        None,
        e2e_overrides
        + [
            "rollout.num_workers=2",
            "sampler.name=mopps",
            "sampler.ts_ratio=4",
            "schedule.name=dars",
            "schedule.mode=hw",
            "schedule.n_max=16",
            "trainer.steps=4",
            "trainer.prompts_per_step=16",
            "trainer.checkpoint_every=0",
            "learner.lr=1e-4",
            "trainer.name=mopps_dars",
        ],
    )
    train(cfg, None)
    steps = records(Path(cfg.trainer.output_dir) / "mopps_dars")
    assert len(steps) == 4
    for r in steps:
        # every extra completion the schedule asked for was generated and counted once
        assert r["rollout/extra_completions"] == r["dars/extra_completions"]
        assert r["rollout/completions"] == 16 * cfg.rollout.n + r["rollout/extra_completions"]
        assert r["sampler/pool_size"] == 64  # ts_ratio x B candidates (80 prompts available)
        assert 0.0 < r["sampler/selected_posterior_mean"] < 1.0
    assert sum(r["rollout/extra_completions"] for r in steps) > 0
    # the posteriors cover more prompts as steps observe new ones (16 selected per step of 80)
    seen = [r["sampler/observed_frac"] for r in steps]
    assert (
        seen[0] == pytest.approx(16 / 80)
        and all(b >= a for a, b in zip(seen, seen[1:]))
        and seen[-1] > seen[0]
    )
