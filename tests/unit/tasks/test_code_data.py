"""HumanEval as `code` rows, and the recipe rules for the code verifier."""

import pytest

from rlvr.cli import main
from rlvr.config import ConfigError, load_config
from rlvr.tasks.code_data import split_check
from rlvr.tasks.data import load_rows

CHECK = """
METADATA = {"author": "x"}


def check(candidate):
    import math
    assert True, "not about candidate"
    assert candidate(1) == 2
    rng = [3, 4]
    for x in rng:
        assert candidate(x) == x + 1
    note = "trailing set-up"
"""
CODE_RECIPE = [
    "model.path=Qwen/Qwen2.5-Coder-1.5B-Instruct",
    "data.task=dataset",
    "data.train=humaneval",
    "data.eval=[humaneval]",
]


def test_split_check_scores_each_assert_on_candidate():
    setup, units = split_check(CHECK)
    assert setup == 'METADATA = {"author": "x"}'
    # Set-up statements (and asserts that do not involve candidate) join the next scored unit;
    # trailing set-up joins the last one.
    assert units == [
        'import math\nassert True, "not about candidate"\nassert candidate(1) == 2',
        'rng = [3, 4]\nfor x in rng:\n    assert candidate(x) == x + 1\nnote = "trailing set-up"',
    ]
    with pytest.raises(ValueError, match="check"):
        split_check("def test():\n    pass\n")


def test_humaneval_rows():
    rows = load_rows("humaneval")
    assert len(rows) == 164
    first = rows[0]
    assert first["task_id"] == "HumanEval/0" and first["verifier"] == "code"
    assert first["entry_point"] == "has_close_elements"
    assert first["answer"] == first["prompt"] + first["canonical_solution"]  # verbatim, $ and all
    assert first["code_prefix"] == first["prompt"]
    assert len(first["tests"]) == 7  # HumanEval/0's seven asserts
    # 1133 top-level statements of the 164 check() bodies mention both assert and candidate
    assert sum(len(r["tests"]) for r in rows) == 1133
    assert load_rows("humaneval", limit=5)[4]["task_id"] == "HumanEval/4"


def test_code_rows_from_a_file_need_no_reference_solution(tmp_path):
    path = tmp_path / "code.jsonl"
    path.write_text('{"problem": "add", "tests": ["assert add(1, 1) == 2"]}\n')
    [row] = load_rows(str(path), verifier="code")
    assert row["answer"] == "" and row["verifier"] == "code"


def test_recipe_rules_for_the_code_verifier():
    load_config(None, CODE_RECIPE)  # defaults fit (2 workers): 10 >= 5 + 3 + 2
    with pytest.raises(ConfigError, match="must run in pool workers"):
        load_config(None, CODE_RECIPE + ["verifier.num_workers=0"])
    with pytest.raises(ConfigError, match=r"timeout_s=9 is too small .* = 10 s"):
        load_config(None, CODE_RECIPE + ["verifier.num_workers=2", "verifier.timeout_s=9"])
    with pytest.raises(ConfigError, match="code.memory_mb=4096 exceeds verifier.memory_mb=2048"):
        load_config(None, CODE_RECIPE + ["verifier.num_workers=2", "verifier.code.memory_mb=4096"])


def test_a_too_small_pool_clock_fails_the_recipe_with_one_line(capsys):
    recipe = "recipes/qwen2.5-coder-1.5b/grpo-humaneval.yaml"
    assert main(["config", recipe, "verifier.timeout_s=4"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "rlvr: error: verifier.timeout_s=4 is too small for the code verifier: it needs at least "
        "verifier.code.start_timeout_s + verifier.code.timeout_s + 2 = 10 s"
    ]
