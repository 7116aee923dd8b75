"""Run data from the config: the arith task or dataset files, and the prompt text the model sees."""

import json

import pytest

from rlvr.config import ConfigError, load_config
from rlvr.tasks.loading import load_task, prompt_texts
from rlvr.tasks.tiny_model import build_tokenizer
from rlvr.train.run import encode


def test_dataset_task_reads_train_file_and_capped_eval_sets(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"problem": "What is 2+2?", "solution": "It is $\\boxed{4}$."},
                {"problem": "Half of 9?", "solution": "\\frac{9}{2} so \\boxed{\\frac92}"},
            ]
        )
        + "\n"
    )
    cfg = load_config(
        None,
        [
            "model.path=Qwen/Qwen2.5-Math-1.5B",
            "data.task=dataset",
            f"data.train={train}",
            "data.eval=[math500, gsm8k]",
            "eval.num_problems=3",
            'data.template="Q: {prompt}\\nA:"',
        ],
    )
    rows, heldout = load_task(cfg)
    assert [r["answer"] for r in rows] == ["4", "\\frac92"]
    assert {r["verifier"] for r in rows + heldout} == {"math"}
    assert [r["level"] for r in heldout] == ["math500"] * 3 + ["gsm8k"] * 3
    assert prompt_texts(cfg, rows, None) == ["Q: What is 2+2?\nA:", "Q: Half of 9?\nA:"]


def test_arith_prompts_are_plain_and_get_bos():
    cfg = load_config(
        None, ["data.arith.train_size=3", "data.arith.heldout_size=2", "eval.num_problems=2"]
    )
    rows, heldout = load_task(cfg)
    assert len(rows) == 3 and len(heldout) == 2
    ids = encode(cfg, build_tokenizer(), rows)
    assert all(seq[0] == 1 and len(seq) == len(r["prompt"]) + 1 for seq, r in zip(ids, rows))


def test_dataset_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.train is empty"):
        load_config(None, ["model.path=Qwen/Qwen2.5-Math-1.5B", "data.task=dataset"])
    with pytest.raises(ConfigError, match=r"data.eval\[0\]='.*nope.jsonl': file not found"):
        load_config(
            None,
            [
                "model.path=Qwen/Qwen2.5-Math-1.5B",
                "data.task=dataset",
                "data.train=math500",
                f"data.eval=[{tmp_path}/nope.jsonl]",
            ],
        )
