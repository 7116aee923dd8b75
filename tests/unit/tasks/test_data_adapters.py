"""Dataset adapters: the six shipped eval sets, local files, the hub when offline, templates.

Expected gold answers are read off the raw JSONL lines by hand (quoted in the comments).
"""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr.tasks.data import (
    BOXED_INSTRUCTION,
    EVAL_DATA_DIR,
    EVAL_SETS,
    DataSourceError,
    gold_text,
    load_rows,
    render_prompt,
)

REPO = Path(__file__).resolve().parents[3]

# short name -> (rows, {row index: gold answer as the adapter must give it})
EXPECTED = {
    # "answer": "\\left( 3, \\frac{\\pi}{2} \\right)" ; "answer": "p - q"
    "math500": (500, {0: r"\left( 3, \frac{\pi}{2} \right)", 1: "p - q"}),
    # no answer column: "...7200=\\boxed{1.6} \\mathrm{~cm}"; row 1 boxes 4.5e33 mid-solution
    "minerva": (272, {0: "1.6", 1: "4.5e33"}),
    # "#### 18" ; "#### 70000" ; "#### 2,125" loses its thousands separator
    "gsm8k": (1319, {0: "18", 2: "70000", 146: "2125"}),
    # "final_answer": ["2"] ; ["$\\frac{1}{2 n+2}$"] ; ["$69$,$84$"] ; ["1,3,5"]
    "olympiadbench": (675, {0: "2", 1: r"\frac{1}{2 n+2}", 13: "69,84", 21: "1,3,5"}),
    # "answer": "204" (a string in this file)
    "aime24": (30, {0: "204", 1: "113"}),
    # "answer": 27.0 ; row 15 "answer": -1.0
    "amc23": (40, {0: "27", 15: "-1"}),
}
PROMPT_COLUMN = {
    "math500": "problem",
    "minerva": "problem",
    "gsm8k": "question",
    "olympiadbench": "question",
    "aime24": "problem",
    "amc23": "problem",
}


def raw(name: str) -> list[dict]:
    path = EVAL_DATA_DIR / EVAL_SETS[name].file
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_eval_sets_load_with_the_right_gold(name):
    count, golds = EXPECTED[name]
    rows = load_rows(name)
    assert len(rows) == count
    for index, gold in golds.items():
        assert rows[index]["answer"] == gold
    source = raw(name)
    for row, record in zip(rows, source):
        assert row["prompt"] == record[PROMPT_COLUMN[name]]
        assert row["verifier"] == "math" and row["dataset"] == name
        assert isinstance(row["answer"], str) and row["answer"].strip()
        assert "$" not in row["answer"].replace("\\$", "")
    if name == "gsm8k":  # the reasoning moves to `solution`, for the reference-solution sweep
        assert rows[0]["solution"] == source[0]["answer"]


def test_shipped_files_carry_their_provenance():
    readme = (EVAL_DATA_DIR / "README.md").read_text()
    for spec in EVAL_SETS.values():
        assert spec.file in readme
    assert "Qwen2.5-Math a45202bd16f1ec06f433442dc1152d0074773465" in readme
    size = sum(p.stat().st_size for p in EVAL_DATA_DIR.iterdir())
    assert size < 10 * 1024 * 1024


def test_limit_and_overrides():
    rows = load_rows("aime24", limit=3, verifier="math_boxed")
    assert [r["answer"] for r in rows] == ["204", "113", "371"]
    assert {r["verifier"] for r in rows} == {"math_boxed"}


def test_local_jsonl_with_column_mapping_and_verifier_column(tmp_path):
    path = tmp_path / "mixed.jsonl"
    records = [
        {"q": "2+2?", "a": 4},
        {"q": "Make 6 from 2, 3.", "a": "6", "task": "countdown", "numbers": [2, 3]},
        {"q": "Half?", "a": 0.5},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    rows = load_rows(str(path), prompt_key="q", answer_key="a", verifier_key="task")
    assert [r["prompt"] for r in rows] == ["2+2?", "Make 6 from 2, 3.", "Half?"]
    assert [r["answer"] for r in rows] == ["4", "6", "0.5"]
    assert [r["verifier"] for r in rows] == ["math", "countdown", "math"]
    assert rows[1]["numbers"] == [2, 3] and rows[0]["dataset"] == "mixed"


def test_gold_from_the_last_box_of_a_solution(tmp_path):
    path = tmp_path / "math_style.json"
    path.write_text(
        json.dumps([{"problem": "p", "solution": r"First \boxed{1}, then $\boxed{\frac{2}{3}}$."}])
    )
    assert load_rows(str(path))[0]["answer"] == r"\frac{2}{3}"


def test_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(
        pa.table({"problem": ["a", "b", "c"], "answer": ["1", "2", "3"], "level": [1, 2, 3]}), path
    )
    rows = load_rows(str(path), limit=2)
    assert [(r["prompt"], r["answer"], r["level"]) for r in rows] == [("a", "1", 1), ("b", "2", 2)]


def test_clear_errors(tmp_path):
    with pytest.raises(DataSourceError, match="no such data file"):
        load_rows(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "answer": "1"}\n{oops\n')
    with pytest.raises(DataSourceError, match=r"bad.jsonl:2: not JSON"):
        load_rows(str(bad))
    bad.write_text('\n{"question": "p", "answer": "1"}\n')  # errors name file:line
    with pytest.raises(
        DataSourceError,
        match=r"bad.jsonl:2: no prompt column 'problem' \(nor 'messages'\); columns: answer, ques",
    ):
        load_rows(str(bad))
    bad.write_text('{"problem": "p", "solution": "no box here"}\n')
    with pytest.raises(DataSourceError, match="bad.jsonl:1: no gold answer"):
        load_rows(str(bad))
    bad.write_text('{"problem": "p", "answer": "1"}\n[1, 2]\n')
    with pytest.raises(DataSourceError, match=r"bad.jsonl:2: a row must be a JSON object"):
        load_rows(str(bad))
    bad.with_suffix(".json").write_text('[{"problem": "p", "answer": "1"}, {"problem": "q"}]')
    with pytest.raises(DataSourceError, match=r"bad.json: row 1: no gold answer"):
        load_rows(str(bad.with_suffix(".json")))


OFFLINE = """
from rlvr.tasks.data import load_rows
try:
    load_rows("no-such-org/no-such-dataset:main:test")
except Exception as e:
    print(type(e).__name__ + ": " + str(e))
"""


def test_hub_name_offline_gives_one_line_error():
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
    }
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr[-2000:]
    assert lines[0].startswith(
        "DataSourceError: cannot load 'no-such-org/no-such-dataset:main:test'"
    )
    assert "offline?" in lines[0] and "math500" in lines[0]


def test_gold_text():
    assert gold_text([r"$\frac{1}{2}$"]) == r"\frac{1}{2}"
    assert gold_text(["$1$", "$2$"]) == "1, 2"
    assert gold_text(3.0) == "3" and gold_text(2.5) == "2.5" and gold_text(7) == "7"
    assert gold_text(r"\$5") == r"\$5"  # an escaped dollar is a currency sign, not math mode
    assert gold_text("  ") is None and gold_text(None) is None


ROW = {"prompt": r"What is $\frac{1}{2}+\frac{1}{2}$?", "answer": "1"}


class RecordingTokenizer:
    chat_template = "recorded"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, **kwargs):
        assert tokenize is False and add_generation_prompt is True and kwargs == {}
        self.messages = messages
        return "|".join(f"{m['role']}:{m['content']}" for m in messages)


def test_plain_and_literal_templates():
    assert render_prompt(ROW, "plain") == ROW["prompt"]
    assert (
        render_prompt(ROW, "plain", instruction=BOXED_INSTRUCTION)
        == ROW["prompt"]
        + "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
    )
    assert (
        render_prompt(ROW, "Q: {prompt}\n{instruction}\nA: {", instruction="Box it.")
        == "Q: " + ROW["prompt"] + "\nBox it.\nA: {"
    )
    with pytest.raises(ValueError, match="unknown prompt template 'fancy'; valid: plain, chat"):
        render_prompt(ROW, "fancy")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        render_prompt(ROW, "chat")


def test_chat_templates_place_the_instruction():
    tok = RecordingTokenizer()
    assert (
        render_prompt(ROW, "chat", tokenizer=tok, instruction="Box it.")
        == "user:" + ROW["prompt"] + "\n\nBox it."
    )
    assert (
        render_prompt(ROW, "chat_system", tokenizer=tok, instruction="Box it.")
        == "system:Box it.|user:" + ROW["prompt"]
    )
    assert render_prompt(ROW, "chat_system", tokenizer=tok) == "user:" + ROW["prompt"]


def test_chat_template_with_a_real_transformers_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        chat_template=template,
    )
    text = render_prompt(ROW, "chat_system", tokenizer=tokenizer, instruction=BOXED_INSTRUCTION)
    assert text == (f"<|system|>{BOXED_INSTRUCTION}\n<|user|>{ROW['prompt']}\n<|assistant|>")
