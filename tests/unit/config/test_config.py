"""Config loading and validation: defaults, overrides, and one-line errors for bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.config import ConfigError, dump_yaml, load_config

ROOT = Path(__file__).resolve().parents[3]


def error_of(overrides, recipe=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(recipe, overrides)
    return str(info.value)


def test_defaults_and_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "trainer.steps=7",
            "learner.lr=3e-4",
            "eval.k=[1,4]",
            "learner.lr_schedule=cosine",
            "algorithm.dual_clip=10",
            "data.arith.mix={'1:+:2': 1, '3:+-:2': 3}",
        ],
    )
    assert cfg.trainer.steps == 7
    assert cfg.learner.lr == 3e-4 and isinstance(cfg.learner.lr, float)
    assert cfg.eval.k == [1, 4]
    assert cfg.algorithm.dual_clip == 10.0 and isinstance(cfg.algorithm.dual_clip, float)
    assert cfg.data.arith.mix == {"1:+:2": 1.0, "3:+-:2": 3.0}
    assert cfg.trainer.prompts_per_step == 64  # untouched default


def test_unknown_key_suggests_the_closest():
    assert error_of(["trainer.stesp=3"]) == "unknown key trainer.stesp; did you mean trainer.steps?"
    assert error_of(["trainr.steps=3"]).startswith("unknown key trainr; did you mean trainer?")
    assert "valid keys:" in error_of(["trainer.zzzzzz=1"])


def test_wrong_type_names_field_and_value():
    assert error_of(["trainer.steps=abc"]) == "trainer.steps='abc': expected an integer"
    assert error_of(["trainer.steps=2.5"]) == "trainer.steps=2.5: expected an integer"
    assert (
        error_of(["sync.check_fingerprint=1"]) == "sync.check_fingerprint=1: expected true or false"
    )
    assert error_of(["eval.k=3"]) == "eval.k=3: expected a list"
    assert error_of(["trainer=3"]) == "trainer: expected a section (mapping), got 3"


def test_out_of_range_and_choices():
    assert error_of(["learner.lr=-1"]) == "learner.lr=-1.0 is out of range: must be > 0.0"
    assert error_of(["rollout.top_p=1.5"]) == "rollout.top_p=1.5 is out of range: must be <= 1.0"
    assert (
        error_of(["learner.zero_stage=4"])
        == "learner.zero_stage=4 is not allowed; choose one of: 0, 1, 2, 3"
    )
    assert error_of(["algorithm.advantage=ppo"]) == (
        "algorithm.advantage='ppo' is not allowed; choose one of: grpo, rloo"
    )
    assert (
        error_of(["data.arith.mix={'2:+:2': 0}"])
        == "data.arith.mix.2:+:2=0.0 is out of range: must be > 0.0"
    )


def test_missing_files(tmp_path):
    assert (
        error_of([], tmp_path / "nope.yaml") == f"recipe file not found: {tmp_path / 'nope.yaml'}"
    )
    assert error_of([f"trainer.resume={tmp_path}/ckpt"]) == (
        f"trainer.resume='{tmp_path}/ckpt': no such checkpoint (use 'auto' or a path)"
    )
    assert (
        error_of(["model.path=./no/such/model"])
        == "model.path='./no/such/model': directory not found"
    )


def test_contradictions():
    assert error_of(["learner.mini_batches=4"]) == (
        "learner.mini_batches=4: only meaningful with learner.update=mini-batch "
        "(full-batch takes one step per epoch)"
    )
    assert error_of(["eval.k=[1,16]"]) == "eval.k=[1, 16]: every k must be <= eval.n=8"
    assert error_of(["algorithm.advantage=rloo", "rollout.n=1"]) == (
        "rollout.n=1: algorithm.advantage=rloo needs n >= 2"
    )
    assert error_of(["data.arith.mix={'2:x:2': 1}"]).startswith(
        "data.arith.mix: level '2:x:2' must be"
    )
    # the built-in model's 64 positions bound a sequence; a hub model's are the data + rollout caps
    assert error_of(["learner.max_tokens_per_micro_batch=63"]) == (
        "learner.max_tokens_per_micro_batch=63: below the longest possible sequence, 64 tokens "
        "(data.max_prompt_tokens + rollout.max_new_tokens, within the model's positions)"
    )
    assert load_config(None, ["learner.max_tokens_per_micro_batch=64"]).learner.padding_free
    assert error_of(
        ["trainer.async_mode=one_step_off", "placement.mode=colocated", "rollout.engine=vllm"]
    ) == (
        "trainer.async_mode=one_step_off: needs placement.mode=disaggregated (colocated "
        "engines sleep while the learner steps, so nothing can overlap)"
    )


def test_one_step_off_weighs_stale_samples_by_default():
    """The rollout's samples are a policy version old: truncated IS (C = 2) unless set."""
    assert load_config(None, []).algorithm.tis_cap is None
    assert load_config(None, ["trainer.async_mode=one_step_off"]).algorithm.tis_cap == 2.0
    cfg = load_config(None, ["trainer.async_mode=one_step_off", "algorithm.tis_cap=5.0"])
    assert cfg.algorithm.tis_cap == 5.0


def test_async_mode_off_survives_yaml(tmp_path):
    """YAML 1.1 reads a bare `off` as false: on the command line and in a recipe it means off."""
    assert load_config(None, ["trainer.async_mode=off"]).trainer.async_mode == "off"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  async_mode: off\n")
    assert load_config(str(recipe), []).trainer.async_mode == "off"
    assert error_of(["trainer.async_mode=true"]).startswith("trainer.async_mode=True")


def test_malformed_yaml_reports_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  steps: 3\n  name: [unclosed\n")
    assert error_of([], bad).startswith(f"{bad}: line ")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert error_of([], listy) == f"{listy}: a recipe must be a mapping of sections, got list"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["trainer.steps=11", "eval.k=[1,2]"])
    dump_yaml(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "recipe", sorted(p.relative_to(ROOT) for p in (ROOT / "recipes").rglob("*.yaml")), ids=str
)
def test_every_recipe_validates(recipe):
    text = (ROOT / recipe).read_text()
    assert text.startswith("#"), "a recipe starts with a header comment"
    load_config(ROOT / recipe)


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli", "train", "recipes/arith-tiny.yaml", "learner.lr=fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == "rlvr: error: learner.lr='fast': expected float\n"
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli", "sft", str(tmp_path / "x.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
