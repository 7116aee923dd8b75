"""Code tasks end to end: the HumanEval anchor, and `rlvr eval` scoring real programs.

Anchor: every canonical HumanEval solution passes its own tests through the pool (164 / 164),
and each problem with the next problem's canonical solution fails (164 / 164: that program
defines another function, so the tests reach the prompt's stub, which returns None).

`rlvr eval`: the built-in tiny model writes digits, not Python, so a model that writes code is
built here: a one-layer Llama whose attention and MLP outputs are zeroed, leaving a fixed
next-token table (embedding -> lm_head) over a word-level vocabulary of whole lines. Whatever
the prompt, it writes one fenced program defining `add` (right), `mul` (wrong) and `neg`
(right). Real programs then go through the CLI, the HF engine, the pool and the sandbox, and
pass@1 must come out at exactly 2/3 on three problems with no verifier error.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewards import VerifierPool, VerifyRequest
from rewards.code_verifier import CodeConfig
from rewards.pool import PoolConfig
from rlvr.tasks.data import load_rows

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PROGRAM_LINES = [
    "```python\n",
    "def add(a, b):\n",
    "    return a + b\n",
    "def mul(a, b):\n",
    "    return a * b + 1\n",
    "def neg(a):\n",
    "    return -a\n",
    "```",
]
PROBLEMS = [
    {"problem": "Write add(a, b).", "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]},
    {"problem": "Write mul(a, b).", "tests": ["assert mul(2, 3) == 6"]},
    {"problem": "Write neg(a).", "tests": ["assert neg(4) == -4"]},
]


def request(row: dict, program: str) -> VerifyRequest:
    extra = {k: v for k, v in row.items() if k not in ("prompt", "answer")}
    return VerifyRequest("code", f"```python\n{program}\n```", row["answer"], extra)


def test_humaneval_canonical_solutions_pass_and_the_next_ones_fail():
    rows = load_rows("humaneval")
    own = [request(row, row["answer"]) for row in rows]
    swapped = [request(row, rows[(i + 1) % len(rows)]["answer"]) for i, row in enumerate(rows)]
    config = PoolConfig(num_workers=2, timeout_s=16.0, code=CodeConfig(timeout_s=8.0))
    with VerifierPool(config) as pool:
        passed = pool.verify_batch(own)
        failed = pool.verify_batch(swapped)
    not_passing = [(r["task_id"], o) for r, o in zip(rows, passed) if o.status != "correct"]
    not_failing = [(r["task_id"], o) for r, o in zip(rows, failed) if o.status != "incorrect"]
    assert not_passing == [] and not_failing == []
    print(
        f"HumanEval: {len(rows) - len(not_passing)} / {len(rows)} canonical solutions pass, "
        f"{len(rows) - len(not_failing)} / {len(rows)} next-problem solutions fail"
    )


def build_line_model(path: Path) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + PROGRAM_LINES)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^\n]*\n?"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )
    size = 16
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=16,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"],
    )
    model = LlamaForCausalLM(config)
    # The next token of each token: any prompt token -> the fence, each line -> the next line,
    # the closing fence -> <eos>.
    following = {i: vocab[PROGRAM_LINES[0]] for i in range(len(vocab))}
    for line, nxt in zip(PROGRAM_LINES, PROGRAM_LINES[1:] + ["<eos>"]):
        following[vocab[line]] = vocab[nxt]
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.zero_()
            if name.endswith("norm.weight"):
                param.fill_(1.0)
        model.model.embed_tokens.weight[:, : len(vocab)] = torch.eye(len(vocab))
        for token, nxt in following.items():
            model.lm_head.weight[nxt, token] = 10.0  # a logit gap of 40 after the norm
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_rlvr_eval_scores_real_programs(tmp_path):
    model_dir = tmp_path / "line-model"
    build_line_model(model_dir)
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    recipe = tmp_path / "code-eval.yaml"
    recipe.write_text(
        f"model:\n  path: {model_dir}\n"
        f"data:\n  task: dataset\n  train: {data}\n  eval: [{data}]\n  verifier: code\n"
        "rollout:\n  max_new_tokens: 12\n"
        "verifier:\n  num_workers: 1\n"
        "eval:\n  n: 2\n  k: [1, 2]\n  num_problems: 3\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "rlvr.cli", "eval", str(recipe), "--model", str(model_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "held-out: 3 problems x 2 samples at T=1.0 (hf engine)" in lines
    assert any(line.startswith("code sandbox: ") for line in lines)  # probed at start
    pass1 = next(line for line in lines if line.strip().startswith("pass@1"))
    assert pass1.split()[1] == "0.667", pass1  # add and neg right, mul wrong, for both samples
