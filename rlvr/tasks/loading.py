"""Where a run's prompts come from: (train rows, held-out rows), each row a dict with at least
prompt, answer and verifier; and the text each prompt is given to the model as."""

from __future__ import annotations

from rlvr.tasks.arith import make_split


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
