"""Dataset adapters: rows of prompts and gold answers from files, the hub or shipped eval sets.

Every row comes out as a plain dict holding at least `prompt`, `answer` (the gold answer as a
string) and `verifier` (a name from rewards.registry), plus the source's other columns and
`dataset`. Rows stay JSON-able so they can travel to verifier workers and into checkpoints.
A conversational row has a `messages` column (a list of {role, content}, ending with the user's
turn): it is kept as `messages`, rendered with the tokenizer's chat template, and its last user
message becomes `prompt` (for logs and samplers).

Sources:
- a short name of a shipped set (EVAL_SETS: math500, minerva, gsm8k, olympiadbench, aime24,
  amc23; humaneval for the `code` verifier; and arith_chat / arith_chat_heldout, small
  conversational arithmetic sets written for the built-in model), whose column conventions
  are known;
- a local .jsonl / .json / .parquet file;
- a Hugging Face hub dataset "owner/name", "owner/name:split" or "owner/name:config:split"
  (needs a network; offline it fails with a one-line DataSourceError).

Gold answers, in order: the answer column (a list joins with ", "; GSM8K's "reasoning #### 42"
keeps the part after "####" and moves the reasoning to `solution`), else the last \\boxed{} of
the solution column (MATH / Minerva style). `$` delimiters are dropped; 27.0 becomes "27".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.extract import last_boxed
from rlvr.errors import ConfigError
from rlvr.tasks.code_data import humaneval_row

EVAL_DATA_DIR = Path(__file__).with_name("eval_data")
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = ("plain", "chat", "chat_system")
ROLES = ("system", "user", "assistant")


class DataSourceError(ConfigError):
    """A source that cannot be read: a missing file, no network for a hub name, a bad row.
    Bad input, so every command (train, eval, sft) reports it as one line with status 2."""


@dataclass(frozen=True)
class EvalSet:
    """Column conventions of a shipped evaluation set (see rlvr/tasks/eval_data/README.md)."""

    file: str
    prompt_key: str
    answer_key: str | None
    solution_key: str | None = "solution"
    verifier: str = "math"
    adapter: Callable[[dict], dict] | None = None  # record -> row fields, before the rest


EVAL_SETS: dict[str, EvalSet] = {
    "math500": EvalSet("math500.jsonl", "problem", "answer"),
    "minerva": EvalSet("minerva_math.jsonl", "problem", None),
    "gsm8k": EvalSet("gsm8k_test.jsonl", "question", "answer", None),
    "olympiadbench": EvalSet("olympiadbench.jsonl", "question", "final_answer", None),
    "aime24": EvalSet("aime24.jsonl", "problem", "answer"),
    "amc23": EvalSet("amc23.jsonl", "problem", "answer", None),
    "arith_chat": EvalSet("arith_chat.jsonl", "messages", "answer", None),
    "arith_chat_heldout": EvalSet("arith_chat_heldout.jsonl", "messages", "answer", None),
    "humaneval": EvalSet("humaneval.jsonl", "prompt", "answer", None, "code", humaneval_row),
}

_DOLLAR = re.compile(r"(?<!\\)\$")  # math delimiters; \$ (a currency sign) stays


def load_rows(
    source: str,
    *,
    prompt_key: str | None = None,
    answer_key: str | None = None,
    solution_key: str | None = None,
    verifier: str | None = None,
    verifier_key: str = "verifier",
    messages_key: str = "messages",
    limit: int | None = None,
) -> list[dict]:
    """Rows of `source` with `prompt`, `answer`, `verifier` and `dataset` set.

    Keys left as None take the eval set's convention for a short name, else "problem",
    "answer", "solution" and verifier "math". A row's own `verifier_key` column, when present
    and non-empty, overrides `verifier` (mixed-task data routes each row to its verifier). A row
    with a `messages_key` column is conversational and needs no prompt column.
    """
    spec = EVAL_SETS.get(source)
    name = source
    if spec is not None:
        records, lines = _read_file(EVAL_DATA_DIR / spec.file, limit)
    else:
        spec = EvalSet("", "problem", "answer")
        records, lines = _read_source(source, limit)
        name = Path(source).stem if looks_like_file(source) else source
    prompt_key = prompt_key or spec.prompt_key
    answer_key = answer_key if answer_key is not None else spec.answer_key
    solution_key = solution_key if solution_key is not None else spec.solution_key
    default_verifier = verifier or spec.verifier
    rows = []
    for i, record in enumerate(records):
        where = f"{source}:{lines[i]}" if lines else f"{source}: row {i}"
        if not isinstance(record, dict):
            raise DataSourceError(f"{where}: a row must be a JSON object, got {str(record)[:40]}")
        messages = record.get(messages_key)
        if messages is None and prompt_key not in record:
            raise DataSourceError(
                f"{where}: no prompt column {prompt_key!r} (nor {messages_key!r}); "
                f"columns: {', '.join(sorted(record))}"
            )
        row = spec.adapter(record) if spec.adapter else dict(record)
        row_verifier = str(row.get(verifier_key) or default_verifier)
        if row_verifier == "code":  # a reference program, kept verbatim; optional: tests decide
            gold = str(row.get(answer_key) or "") if answer_key else ""
        else:
            gold = _gold(row, answer_key, solution_key)
        if gold is None:
            raise DataSourceError(
                f"{where}: no gold answer in {answer_key!r} or a "
                f"\\boxed{{}} in {solution_key!r}; columns: "
                f"{', '.join(sorted(record))}"
            )
        if messages is not None:
            row.pop(messages_key)
            row["messages"] = checked_messages(messages, where)
            row["prompt"] = [m["content"] for m in row["messages"] if m["role"] == "user"][-1]
        else:
            row["prompt"] = str(record[prompt_key])
        row["answer"] = gold
        row["verifier"] = row_verifier
        row["dataset"] = name
        rows.append(row)
    return rows


def checked_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A conversation as [{role, content}], or DataSourceError naming what is wrong: roles are
    system / user / assistant, contents strings, and the last turn is the user's (the model
    answers it)."""
    if not isinstance(messages, list) or not messages:
        raise DataSourceError(f"{where}: messages must be a non-empty list of {{role, content}}")
    out = []
    for j, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise DataSourceError(
                f"{where}: messages[{j}] must be {{role: {' | '.join(ROLES)}, content: text}}, "
                f"got {str(m)[:80]}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise DataSourceError(
            f"{where}: the last message must be the user's, not the {out[-1]['role']}'s"
        )
    return out


def gold_text(value: Any) -> str | None:
    """A gold answer as a string: lists joined by ", ", `$` dropped, 27.0 -> "27"."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [gold_text(v) for v in value]
        return ", ".join(p for p in parts if p) or None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = _DOLLAR.sub("", str(value)).strip()
    return text or None


def _gold(row: dict, answer_key: str | None, solution_key: str | None) -> str | None:
    value = row.get(answer_key) if answer_key else None
    if isinstance(value, str) and "####" in value:
        # GSM8K: "reasoning ... #### 1,600". The number keeps no thousands separators, and the
        # reasoning becomes the row's reference solution.
        _, _, number = value.rpartition("####")
        row.setdefault("solution", value)
        return gold_text(number.replace(",", ""))
    gold = gold_text(value)
    if gold is None and solution_key and isinstance(row.get(solution_key), str):
        gold = gold_text(last_boxed(row[solution_key]))
    return gold


def looks_like_file(source: str) -> bool:
    return source.endswith((".jsonl", ".json", ".parquet")) or os.path.exists(source)


def _read_source(source: str, limit: int | None) -> tuple[list, list[int] | None]:
    if looks_like_file(source):
        return _read_file(Path(source), limit)
    return _read_hub(source, limit), None


def _read_file(path: Path, limit: int | None) -> tuple[list, list[int] | None]:
    """The records of a data file, and for JSONL the line number of each (else None)."""
    if not path.is_file():
        raise DataSourceError(f"no such data file: {path}")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            table = table.slice(0, limit) if limit is not None else table
            return table.to_pylist(), None
        if path.suffix == ".json":
            records = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(records, list):
                raise DataSourceError(f"{path}: a .json data file must hold a list of objects")
            return records[:limit], None
        return _read_jsonl(path, limit)
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        raise DataSourceError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None


def _read_jsonl(path: Path, limit: int | None) -> tuple[list, list[int]]:
    records, lines = [], []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(records) >= limit:
                break
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataSourceError(f"{path}:{number}: not JSON: {e.msg}") from None
                lines.append(number)
    return records, lines


def _read_hub(source: str, limit: int | None) -> list[dict]:
    """`owner/name[:split]` or `owner/name:config:split` from the Hugging Face hub (split
    defaults to "train"; e.g. "openai/gsm8k:main:test")."""
    name, *rest = source.split(":")
    config, split = rest if len(rest) == 2 else [None, rest[0] if rest else ""]
    split = split or "train"
    if limit is not None:
        split = f"{split}[:{limit}]"
    try:
        import datasets

        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown name, bad split: one line, not a 40-line trace
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataSourceError(
            f"cannot load {source!r} from the Hugging Face hub ({type(e).__name__}: {first[:200]})"
            f"; offline? use a local .jsonl/.parquet file or a shipped set: "
            f"{', '.join(EVAL_SETS)}"
        ) from None
    return [dict(r) for r in dataset]


def render_prompt(
    row: Mapping[str, Any],
    template: str = "plain",
    *,
    tokenizer: Any = None,
    instruction: str | None = None,
    system_prompt: str | None = None,
    chat_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """The text a model is given for `row`.

    - a row with `messages`: the tokenizer's chat template over the conversation (whatever
      `template` says), `instruction` appended to the last user turn;
    - "plain": the prompt, then a blank line and `instruction` when given;
    - "chat": the tokenizer's chat template, `instruction` appended to the user turn (the
      Qwen2.5-Math evaluation convention);
    - "chat_system": the chat template with `instruction` as the system message;
    - any other string containing "{prompt}": a literal template; "{prompt}" and
      "{instruction}" are replaced (no str.format, so LaTeX braces in it are safe).
    With a chat template, `system_prompt` opens a conversation that has no system message, and
    `chat_kwargs` go to the template (e.g. enable_thinking=False for Qwen3).
    `tokenizer` is a Hugging Face tokenizer, or a name/path loaded with AutoTokenizer.
    """
    prompt = str(row["prompt"])
    with_instruction = f"{prompt}\n\n{instruction}" if instruction else prompt
    if "messages" in row:
        messages = [dict(m) for m in row["messages"]]
        if instruction:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{instruction}"
    elif template == "plain":
        return with_instruction
    elif template == "chat":
        messages = [{"role": "user", "content": with_instruction}]
    elif template == "chat_system":
        messages = [{"role": "system", "content": instruction}] if instruction else []
        messages.append({"role": "user", "content": prompt})
    elif "{prompt}" in template:
        return template.replace("{prompt}", prompt).replace("{instruction}", instruction or "")
    else:
        raise ValueError(
            f"unknown prompt template {template!r}; valid: {', '.join(TEMPLATES)} or a "
            "string containing {prompt}"
        )
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return apply_chat_template(tokenizer, messages, chat_kwargs or {})


def is_chat(row: Mapping[str, Any], template: str) -> bool:
    """Whether `render_prompt` gives this row a chat template (which holds its own special
    tokens, so tokenizing its text must add none)."""
    return "messages" in row or template in ("chat", "chat_system")


def apply_chat_template(
    tokenizer: Any, messages: list[dict], chat_kwargs: Mapping[str, Any]
) -> str:
    if tokenizer is None:
        raise ValueError("a chat template needs a tokenizer")
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; use "
            "data.template=plain or a string template, and rows without messages"
        )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **chat_kwargs
    )
