"""Where a run's prompts come from: (train rows, held-out rows), each row a dict with at least
prompt, answer, verifier and its resolved reward components; the text each prompt is given to
the model as; and the prompt length limit (drop or truncate)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from rewards.components import attach
from rlvr.errors import ConfigError
from rlvr.tasks.arith import ArithConfig, make_split


class DataConfig(BaseModel):
    """The `data` section: the built-in arith task, or datasets (rlvr.tasks.data.load_rows)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: Literal["arith", "dataset"] = Field(
        "arith", description="arith: the built-in task; dataset: data.train and data.eval"
    )
    arith: ArithConfig = Field(default_factory=ArithConfig)
    train: str = Field(
        "",
        description="task=dataset: a .jsonl/.json/.parquet file, a hub name "
        "owner/name[:config]:split, or a shipped set (math500, minerva, gsm8k, olympiadbench, "
        "aime24, amc23, humaneval)",
    )
    eval: list[str] = Field(
        default_factory=lambda: ["math500"],
        description="task=dataset: held-out sets, same forms as data.train",
    )
    prompt_key: Optional[str] = Field(
        None, description="prompt column (default: the set's convention, else 'problem')"
    )
    answer_key: Optional[str] = Field(None, description="gold-answer column (default 'answer')")
    solution_key: Optional[str] = Field(
        None,
        description="solution column whose last \\boxed{} is the gold when there is no answer "
        "column (default 'solution')",
    )
    verifier: Optional[str] = Field(
        None, description="verifier for rows without a 'verifier' column (default math)"
    )
    template: str = Field(
        "plain",
        description="prompt template: plain, chat (instruction in the user turn), chat_system, "
        "or a string containing {prompt}",
    )
    instruction: Optional[str] = Field(
        None,
        description="appended by the template, e.g. 'Please reason step by step, and put your "
        "final answer within \\boxed{}.'",
    )
    limit: Optional[int] = Field(
        None, ge=1, description="task=dataset: read at most this many training rows"
    )
    messages_key: str = Field(
        "messages",
        description="conversation column (a list of {role, content}); rows that have it are "
        "rendered with the tokenizer's chat template",
    )
    system_prompt: Optional[str] = Field(
        None,
        description="system message opening every chat-rendered prompt that has none "
        "(task=dataset)",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to the tokenizer's chat template, e.g. {enable_thinking: false} "
        "(task=dataset)",
    )
    max_prompt_tokens: int = Field(
        1024,
        ge=1,
        description="longest prompt in tokens (also capped by the model's positions); longer "
        "ones are dropped at load (counted) or truncated, see overlong_prompts; with "
        "rollout.max_new_tokens it sizes vLLM's max_model_len and the memory plan",
    )
    overlong_prompts: Literal["drop", "truncate"] = Field(
        "drop",
        description="prompts over max_prompt_tokens: drop them, or keep their last "
        "max_prompt_tokens tokens (the question and the chat template's reply header)",
    )


def load_task(cfg) -> tuple[list[dict], list[dict]]:
    """Training rows and held-out rows (at most eval.num_problems of each held-out set), each
    with its reward components resolved (`rewards`: the row's own, the recipe's, or its
    verifier). Raises ConfigError for a malformed `rewards` column."""
    train, heldout = _load_rows(cfg)
    for rows, where in ((train, "data.train"), (heldout, "data.eval")):
        try:
            attach(rows, cfg.rewards, where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return train, heldout


def _load_rows(cfg) -> tuple[list[dict], list[dict]]:
    data = cfg.data
    if data.task == "arith":
        a = data.arith
        train = make_split(
            a.mix, a.train_size, heldout=False, fraction=a.heldout_fraction, seed=a.seed
        )
        heldout = make_split(
            a.mix, a.heldout_size, heldout=True, fraction=a.heldout_fraction, seed=a.seed
        )
        return train, heldout[: cfg.eval.num_problems]
    from rlvr.tasks.data import EVAL_SETS, load_rows, looks_like_file

    keys = {
        "prompt_key": data.prompt_key,
        "answer_key": data.answer_key,
        "solution_key": data.solution_key,
        "verifier": data.verifier,
        "messages_key": data.messages_key,
    }
    train = load_rows(data.train, limit=data.limit, **keys)
    heldout = []
    for source in data.eval:
        # A shipped set keeps its own column conventions; the recipe's keys apply to the
        # user's files (and to the training source used for evaluation too).
        own = source == data.train or (source not in EVAL_SETS and looks_like_file(source))
        rows = load_rows(source, limit=cfg.eval.num_problems, **(keys if own else {}))
        heldout.extend(
            {**row, "level": row["dataset"]} for row in rows
        )  # per-set pass@1 in the eval
    return train, heldout


def prompt_texts(cfg, rows: list[dict], tokenizer) -> list[str]:
    """The model's input text for each row (the template applies to datasets; arith is plain)."""
    if cfg.data.task == "arith":
        return [row["prompt"] for row in rows]
    from rlvr.tasks.data import render_prompt

    data = cfg.data
    return [
        render_prompt(
            row,
            data.template,
            tokenizer=tokenizer,
            instruction=data.instruction,
            system_prompt=data.system_prompt,
            chat_kwargs=data.chat_template_kwargs,
        )
        for row in rows
    ]


def encode_prompts(cfg, tokenizer, rows: list[dict]) -> list[list[int]]:
    """Prompt token ids. Chat templates already hold their special tokens, so none are added."""
    from rlvr.tasks.data import is_chat

    texts = prompt_texts(cfg, rows, tokenizer)
    chat = [cfg.data.task == "dataset" and is_chat(row, cfg.data.template) for row in rows]
    ids: list[list[int]] = [[] for _ in rows]
    for flag in (False, True):
        picked = [i for i, c in enumerate(chat) if c == flag]
        if picked:
            encoded = tokenizer([texts[i] for i in picked], add_special_tokens=not flag).input_ids
            for i, e in zip(picked, encoded):
                ids[i] = e
    return ids


def fit_prompts(
    rows: list[dict], prompts: list[list[int]], limit: int, mode: str
) -> tuple[list[dict], list[list[int]], int]:
    """Rows and prompts within `limit` tokens: longer prompts are dropped (mode "drop") or keep
    their last `limit` tokens ("truncate"). Returns (rows, prompts, how many were over)."""
    over = sum(len(p) > limit for p in prompts)
    if mode == "truncate":
        return rows, [p[-limit:] if len(p) > limit else p for p in prompts], over
    kept = [i for i, p in enumerate(prompts) if len(p) <= limit]
    return [rows[i] for i in kept], [prompts[i] for i in kept], over


def prompt_limit(cfg, model_path: str, log=print) -> int:
    """data.max_prompt_tokens, lowered when needed so that a prompt leaves room for a whole
    completion (rollout.max_new_tokens) within the model's positions (and vLLM's
    max_model_len when set). Raises ConfigError when not even a one-token prompt fits."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    contexts = [getattr(config, "max_position_embeddings", None)]
    if cfg.rollout.engine == "vllm":
        contexts.append(cfg.rollout.vllm.max_model_len)
    context = min((c for c in contexts if c), default=None)
    limit, new = cfg.data.max_prompt_tokens, cfg.rollout.max_new_tokens
    if context is None:
        return limit
    if new >= context:
        raise ConfigError(
            f"rollout.max_new_tokens={new}: the model takes {context} positions in all (prompt "
            f"+ completion); use at most {context - 1}"
        )
    if limit > context - new:
        log(
            f"data.max_prompt_tokens={limit}: the model takes {context} tokens in all and a "
            f"completion up to {new}; prompts are limited to {context - new}"
        )
        limit = context - new
    return limit
