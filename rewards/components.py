"""Reward components: a completion's reward as a weighted sum of named verifiers' scores.

A row's components come, in order of precedence, from its own `rewards` column, from the
recipe's top-level `rewards` list, or else from its `verifier` column (one component, weight 1):

    rewards: [{name: math, weight: 1.0}, {name: format_boxed, weight: 0.1}]

Each component is a verifier (built-in, installed plug-in or `verifier.plugins` path) called
with the usual contract; a component's `args` are added to the row its verifier sees, so one
verifier can serve several recipes (`format_regex` reads its `pattern` there). The reward is
sum_c weight_c * score_c. If any component errors, the completion's reward is undefined (NaN):
it is left out of the advantages and counted, never scored 0 (ALGORITHMS.md section 1). The
FIRST component is the answer check: its verdict is what pass@k, MoPPS and DARS count.

Pure Python: no torch, no Ray (verifier workers import this package).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rewards.base import CORRECT, Outcome

ROWS_KEY = "rewards"  # the column a row names its own components in
RESERVED = {"overlong": "set algorithm.overlong_buffer (DAPO's length penalty needs token counts)"}


class RewardComponent(BaseModel):
    """One entry of `rewards`: a verifier by name, its weight in the reward and its arguments."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(min_length=1, description="a verifier name (built-in, plug-in or path)")
    weight: float = Field(
        1.0, description="multiplies the verifier's score in the reward (0: logged, no reward)"
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="fields added to the row its verifier sees (e.g. format_regex's pattern)",
    )


def attach(rows: list[dict], default: Sequence[RewardComponent], source: str) -> list[str]:
    """Give every row its resolved components as `row["rewards"]` (plain dicts, JSON-able);
    returns the component names in first-seen order (the recipe's first). Raises ValueError
    naming `source`, the row and the field for a malformed `rewards` column or a reserved name."""
    names = {c.name: None for c in default}
    plain = [c.model_dump() for c in default]
    for i, row in enumerate(rows):
        own = row.get(ROWS_KEY)
        if own is None:
            row[ROWS_KEY] = plain or [{"name": row["verifier"], "weight": 1.0, "args": {}}]
        else:
            row[ROWS_KEY] = [c.model_dump() for c in _parse(own, f"{source} row {i}")]
        for c in row[ROWS_KEY]:
            if c["name"] in RESERVED:
                raise ValueError(
                    f"{source} row {i}: reward component {c['name']!r} is computed by the "
                    f"trainer; {RESERVED[c['name']]}"
                )
            names.setdefault(c["name"], None)
    return list(names)


def _parse(value: Any, where: str) -> list[RewardComponent]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {ROWS_KEY} must be a non-empty list of {{name, weight}}")
    out = []
    for j, c in enumerate(value):
        try:
            out.append(RewardComponent.model_validate(c))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = "".join(f".{p}" for p in err["loc"])
            raise ValueError(f"{where}: {ROWS_KEY}[{j}]{field}: {err['msg']}") from None
    return out


def request_row(row: Mapping[str, Any], component: Mapping[str, Any]) -> dict[str, Any]:
    """The row a component's verifier sees: the data row's own columns (without the prompt,
    the gold and the component list) with the component's args on top."""
    extra = {k: v for k, v in row.items() if k not in ("prompt", "answer", ROWS_KEY)}
    return {**extra, **component.get("args", {})}


def combine(outcomes: Sequence[Outcome], weights: Sequence[float]) -> tuple[float, bool, bool]:
    """(reward, correct, error) of one completion from its components' outcomes, in order.

    reward = sum of weight * score, NaN if any component errored; correct = the first
    component's verdict (False when the reward is undefined)."""
    if any(o.is_error for o in outcomes):
        return math.nan, False, True
    reward = math.fsum(w * o.score for o, w in zip(outcomes, weights))
    return reward, outcomes[0].status == CORRECT, False


def check_args(rows: Sequence[Mapping[str, Any]]) -> None:
    """Let each component's verifier refuse arguments it cannot use (its optional `check_args`
    attribute, see rewards/format.py), once per distinct (name, args); raises ValueError."""
    from rewards.registry import get_verifier

    seen: set[tuple[str, str]] = set()
    for row in rows:
        for c in row[ROWS_KEY]:
            key = (c["name"], repr(sorted(c["args"].items())))
            if key in seen:
                continue
            seen.add(key)
            check = getattr(get_verifier(c["name"]), "check_args", None)
            if check is not None:
                check(c["args"])
