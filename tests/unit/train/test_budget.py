"""trainer.max_completions: the budget check counts every generated completion of a run."""

import pytest

from rlvr.config import load_config
from rlvr.errors import ConfigError
from rlvr.train.controller import completions_spent


def test_spent_counts_train_steps_only():
    history = [
        {"kind": "eval", "step": 0, "pass@1": 0.5},
        {"kind": "train", "step": 1, "rollout/completions": 512},  # 64 prompts x 8
        {"kind": "train", "step": 2, "rollout/completions": 731},  # + 219 DARS stage-2 completions
        {"kind": "checkpoint", "step": 2, "time/checkpoint": 0.1},
        {
            "kind": "train",
            "step": 3,
            "rollout/completions": 1536,
        },  # 3 DAPO refill rounds in one record
        {"kind": "eval", "step": 3, "pass@1": 0.6},
    ]
    assert completions_spent(history) == 512 + 731 + 1536
    assert completions_spent([]) == 0


def test_max_completions_is_optional_and_positive():
    assert load_config(None).trainer.max_completions is None
    assert load_config(None, ["trainer.max_completions=5000"]).trainer.max_completions == 5000
    with pytest.raises(ConfigError, match="trainer.max_completions"):
        load_config(None, ["trainer.max_completions=0"])
