"""End to end on Ray: rollout workers + DeepSpeed learners + weight sync, on the tiny task."""

import json
import sys
from pathlib import Path

import pytest
import torch

from rlvr.config import load_config
from rlvr.tasks.warm_start import resolve_model_path
from rlvr.train.checkpoint import read_state
from rlvr.train.controller import train
from rlvr.train.metrics import read_history
from tests.e2e.conftest import kill_when
from tests.export_check import check_export

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


LORA_RESUME = ["learner.lora.enabled=true", "learner.lora.rank=8", "learner.lora.alpha=16.0"]


def test_lora_resume_after_kill_continues_exactly(e2e_overrides, tmp_path):
    """kill -9 and resume of a LoRA run (tests/e2e/test_faults.py does it for full-parameter
    runs): same prompts, rewards and final adapter; `rlvr export` of the adapter."""
    common = e2e_overrides + [
        f"trainer.output_dir={tmp_path}",
        "trainer.steps=6",
        "trainer.checkpoint_every=2",
        "trainer.prompts_per_step=16",
        "learner.lr=1e-3",
        *LORA_RESUME,
    ]
    recipe = ROOT / "recipes/arith-tiny.yaml"
    train(load_config(recipe, common + ["trainer.name=straight"]), None)
    straight = {r["step"]: r for r in records(tmp_path / "straight")}

    cmd = [
        sys.executable,
        "-m",
        "rlvr.cli",
        "train",
        "recipes/arith-tiny.yaml",
        *common,
        "trainer.name=killed",
    ]
    killed = tmp_path / "killed"
    kill_when(cmd, killed / "checkpoints" / "step_000004", 600)
    train(load_config(recipe, common + ["trainer.name=killed", "trainer.resume=auto"]), None)
    after = records(killed)
    assert [r["step"] for r in after] == [1, 2, 3, 4, 5, 6]  # nothing repeated, nothing lost
    assert read_state(killed / "checkpoints" / "step_000004")["step"] == 4
    # the same prompts as a run that was never interrupted (the sampler state was restored)
    assert [r["sampler/batch_hash"] for r in after] == [
        straight[s]["sampler/batch_hash"] for s in range(1, 7)
    ]
    assert json.loads((killed / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    check_lora_resume(tmp_path / "straight", killed, straight, after)
    check_export(killed, tmp_path / "exported", lora=True)


def check_lora_resume(straight_dir: Path, killed: Path, straight: dict, after: list[dict]):
    """A LoRA run's checkpoints hold the adapter (peft format) and resume to the same rewards
    and the same final adapter as the run that was never interrupted."""
    from safetensors.torch import load_file

    assert [r["reward/mean"] for r in after] == [straight[s]["reward/mean"] for s in range(1, 7)]
    final = "checkpoints/step_000006/policy"
    assert (killed / final / "adapter_config.json").exists()
    assert not (killed / final / "model.safetensors").exists()
    mine = load_file(killed / final / "adapter_model.safetensors")
    theirs = load_file(straight_dir / final / "adapter_model.safetensors")
    assert set(mine) == set(theirs) and len(mine) == 28
    for name, tensor in theirs.items():
        torch.testing.assert_close(mine[name], tensor, atol=1e-6, rtol=0, msg=name)


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
