"""Where a run's prompts come from: (train rows, held-out rows), each row a dict with at least
prompt, answer and verifier; and the text each prompt is given to the model as."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

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


def load_task(cfg) -> tuple[list[dict], list[dict]]:
    """Training rows and held-out rows (at most eval.num_problems of each held-out set)."""
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
    from rlvr.tasks.data import load_rows

    keys = {
        "prompt_key": data.prompt_key,
        "answer_key": data.answer_key,
        "solution_key": data.solution_key,
        "verifier": data.verifier,
    }
    train = load_rows(data.train, limit=data.limit, **keys)
    heldout = []
    for source in data.eval:
        rows = load_rows(
            source, limit=cfg.eval.num_problems, **(keys if source == data.train else {})
        )
        heldout.extend(
            {**row, "level": row["dataset"]} for row in rows
        )  # per-set pass@1 in the eval
    return train, heldout


def prompt_texts(cfg, rows: list[dict], tokenizer) -> list[str]:
    """The model's input text for each row (the template applies to datasets; arith is plain)."""
    if cfg.data.task == "arith":
        return [row["prompt"] for row in rows]
    from rlvr.tasks.data import render_prompt

    return [
        render_prompt(row, cfg.data.template, tokenizer=tokenizer, instruction=cfg.data.instruction)
        for row in rows
    ]
