"""End to end on Ray: rollout workers + DeepSpeed learners + weight sync, on the tiny task."""

import json
import sys
from pathlib import Path

import pytest
import torch

from rlvr.config import load_config
from rlvr.tasks.warm_start import resolve_model_path
from rlvr.train.controller import train
from rlvr.train.metrics import read_history
from tests.e2e.conftest import kill_when

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


@pytest.mark.parametrize("lora", [[], LORA_RESUME], ids=["full", "lora"])
def test_resume_after_kill_continues_exactly(e2e_overrides, tmp_path, lora):
    common = e2e_overrides + [
        f"trainer.output_dir={tmp_path}",
        "trainer.steps=6",
        "trainer.checkpoint_every=2",
        "trainer.prompts_per_step=16",
        "learner.lr=1e-3",
        *lora,
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
    state4 = torch.load(
        killed / "checkpoints" / "step_000004" / "trainer_state.pt", weights_only=False
    )
    assert state4["step"] == 4
    # the same prompts as a run that was never interrupted (the sampler state was restored)
    assert [r["sampler/batch_hash"] for r in after] == [
        straight[s]["sampler/batch_hash"] for s in range(1, 7)
    ]
    assert json.loads((killed / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    if lora:
        check_lora_resume(tmp_path / "straight", killed, straight, after)
    check_export(killed, tmp_path / "exported", bool(lora))


def check_export(run: Path, out: Path, lora: bool):
    """`rlvr export RUN OUT`: a plain HF model whose log-probs are the final policy's (for
    LoRA, the base with the adapter applied by peft itself)."""
    from transformers import AutoModelForCausalLM

    from rlvr.cli import main
    from rollout.types import score_tokens

    assert main(["export", str(run), str(out)]) == 0
    policy = run / "checkpoints" / "step_000006" / "policy"
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    if lora:
        import peft

        base = json.loads((policy / "adapter_config.json").read_text())["base_model_name_or_path"]
        reference = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), policy
        ).eval()
    else:
        reference = AutoModelForCausalLM.from_pretrained(policy).eval()
    probe = [[1, 5, 6, 14, 7, 17, 9, 2], [1, 12, 4, 16, 8, 8, 2]]
    cpu = torch.device("cpu")
    for mine, theirs in zip(
        score_tokens(exported, probe, cpu), score_tokens(reference, probe, cpu)
    ):
        torch.testing.assert_close(torch.tensor(mine), torch.tensor(theirs), atol=1e-5, rtol=0)
    assert main(["export", str(run), str(out)]) == 2  # never over an existing model


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
