"""Conversational rows (a messages column), chat templates with a system prompt and template
arguments, the built-in tokenizer's template, and the prompt length limit (drop / truncate)."""

import pytest
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, PreTrainedTokenizerFast

from rlvr.config import load_config
from rlvr.errors import ConfigError
from rlvr.tasks.data import DataSourceError, checked_messages, load_rows, render_prompt
from rlvr.tasks.loading import encode_prompts, fit_prompts, load_task, prompt_limit
from rlvr.tasks.tiny_model import build_tokenizer

CHAT = ["data.task=dataset", "data.train=arith_chat", "data.eval=[arith_chat_heldout]"]
THINKING = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if enable_thinking is defined and not enable_thinking %}<|no_think|>{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def template_tokenizer(template: str):
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        chat_template=template,
    )


def test_shipped_conversational_rows_load_with_their_prompt_and_gold():
    rows = load_rows("arith_chat")
    assert len(rows) == 44
    first = rows[0]
    assert first["messages"] == [{"role": "user", "content": "14+43="}]
    assert (first["prompt"], first["answer"], first["verifier"]) == ("14+43=", "57", "math")
    assert all(int(r["answer"]) == sum(map(int, r["prompt"][:-1].split("+"))) for r in rows)
    assert len(load_rows("arith_chat_heldout")) == 24


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "row 3: messages must be a non-empty list of {role, content}"),
        ("hi", "row 3: messages must be a non-empty list"),
        ([{"role": "bot", "content": "x"}], "row 3: messages[0] must be {role: system | user | "
         "assistant, content: text}, got {'role': 'bot', 'content': 'x'}"),
        ([{"role": "user", "content": 5}], "row 3: messages[0] must be {role"),
        ([{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}],
         "row 3: the last message must be the user's, not the assistant's"),
    ],
)  # fmt: skip
def test_malformed_conversations_are_one_line_errors(messages, message):
    with pytest.raises(DataSourceError) as info:
        checked_messages(messages, "data.jsonl: row 3")
    assert str(info.value).startswith("data.jsonl: " + message) and "\n" not in str(info.value)


def test_a_conversation_renders_with_the_template_system_prompt_and_kwargs():
    tok = template_tokenizer(THINKING)
    row = {"prompt": "2+2?", "messages": [{"role": "user", "content": "2+2?"}]}
    text = render_prompt(
        row,
        "plain",
        tokenizer=tok,
        system_prompt="Be brief.",
        chat_kwargs={"enable_thinking": False},
    )
    assert text == "<|system|>Be brief.\n<|user|>2+2?\n<|no_think|><|assistant|>"
    # a conversation with its own system message keeps it; the instruction joins the user turn
    own = {
        "prompt": "q",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}],
    }
    text = render_prompt(
        own, "plain", tokenizer=tok, instruction="Box it.", system_prompt="Be brief."
    )
    assert text == "<|system|>S\n<|user|>q\n\nBox it.\n<|assistant|>"
    assert own["messages"][1]["content"] == "q"  # the row itself is not changed
    # prompt rows with the chat template get the system prompt too
    assert render_prompt({"prompt": "q"}, "chat", tokenizer=tok, system_prompt="Be brief.") == (
        "<|system|>Be brief.\n<|user|>q\n<|assistant|>"
    )
    with pytest.raises(ValueError, match="has no chat template; use data.template=plain"):
        render_prompt(row, "plain", tokenizer=template_tokenizer(None))


def test_the_builtin_tokenizer_renders_a_one_turn_chat_as_the_plain_prompt():
    cfg = load_config(None, CHAT)
    tok = build_tokenizer()
    chat = {"prompt": "12+34=", "messages": [{"role": "user", "content": "12+34="}]}
    assert render_prompt(chat, "plain", tokenizer=tok) == "<bos>12+34="
    # one <bos> (the template's), exactly the ids of the plain arith prompt
    assert (
        encode_prompts(cfg, tok, [chat]) == [tok("12+34=").input_ids] == [[1, 5, 6, 14, 7, 8, 17]]
    )
    few_shot = {"prompt": "3+4=", "messages": [
        {"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "3+4="}]}  # fmt: skip
    assert render_prompt(few_shot, "plain", tokenizer=tok) == "<bos>1+1=2<eos>3+4="


def test_load_task_resolves_the_recipes_reward_components():
    cfg = load_config(
        None,
        CHAT
        + ["rewards=[{name: math}, {name: format_regex, weight: 0.1, args: {pattern: '[0-9]+'}}]"],
    )
    train, heldout = load_task(cfg)
    assert len(train) == 44 and len(heldout) == 24
    assert {tuple((c["name"], c["weight"]) for c in r["rewards"]) for r in train + heldout} == {
        (("math", 1.0), ("format_regex", 0.1))
    }
    assert heldout[0]["level"] == "arith_chat_heldout"


def test_over_long_prompts_are_dropped_or_keep_their_last_tokens():
    rows = [{"i": 0}, {"i": 1}, {"i": 2}]
    prompts = [[1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7]]
    kept, ids, over = fit_prompts(rows, prompts, 5, "drop")
    assert (kept, ids, over) == (rows[:2], prompts[:2], 1)
    kept, ids, over = fit_prompts(rows, prompts, 5, "truncate")
    assert (kept, ids, over) == (rows, [[1, 2, 3], [1, 2, 3, 4, 5], [3, 4, 5, 6, 7]], 1)


def test_the_prompt_limit_leaves_room_in_the_models_positions(tmp_path):
    LlamaConfig(max_position_embeddings=64).save_pretrained(tmp_path)
    logged = []
    assert prompt_limit(load_config(None, ["data.max_prompt_tokens=16"]), str(tmp_path)) == 16
    assert prompt_limit(load_config(None), str(tmp_path), logged.append) == 56  # 64 - 8 new
    assert logged == [
        "data.max_prompt_tokens=1024: the model takes 64 tokens in all and a completion up to "
        "8; prompts are limited to 56"
    ]
    vllm = load_config(None, ["rollout.engine=vllm", "rollout.vllm.max_model_len=40",
                              "learner.gpus_per_worker=1"])  # fmt: skip
    assert prompt_limit(vllm, str(tmp_path), logged.append) == 32  # 40 - 8
    with pytest.raises(ConfigError, match="rollout.max_new_tokens=64: the model takes 64 pos"):
        prompt_limit(load_config(None, ["rollout.max_new_tokens=64"]), str(tmp_path))
