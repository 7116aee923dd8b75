"""MoPPS: Bayesian prompt selection without extra rollouts (Qu et al., arXiv 2507.04632).

Each training prompt p keeps a Beta(alpha_p, beta_p) posterior over its success rate under the
current policy, held as two float64 arrays over all prompts (no per-prompt objects: 1M prompts
cost 17 MB). Each step draws a candidate pool of ts_ratio x B prompts uniformly, samples
g_p ~ Beta(alpha_p, beta_p) for each candidate (Thompson sampling) and keeps B of them:

- `topk`: the B candidates with the smallest (g_p - target)^2;
- `threshold`: B random candidates with g_p in [low, high]; when fewer qualify, all of them plus
  the candidates nearest to the interval.

After verification, only the prompts that were rolled out are updated, with k verified
completions of which s*k succeeded and decay lambda:
alpha_p <- lambda alpha_p + (1 - lambda) + s k;  beta_p <- lambda beta_p + (1 - lambda) + (1 - s) k.

Departures from the paper's code, all deliberate:
- the pool is drawn afresh each step (without replacement within the step) instead of being the
  next ts_ratio x B rows of an epoch-wise shuffled loader; drawing costs O(pool), not O(prompts);
- a prompt whose completions all failed verification (k = 0) is not updated at all (no decay):
  errors say nothing about the prompt's difficulty;
- a prompt observed twice in one call (a refill round drew it again) gets one update with the
  summed counts;
- the prior may come from an offline evaluation file (`load_prior`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STEP_METRICS = ("sampler/rank_corr", "sampler/selected_posterior_mean", "sampler/pool_size")


class MoPPSConfig(BaseModel):
    """MoPPS's settings (the `sampler` section adds `name`; docs/sampling.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="posterior decay lambda (1.0 = no forgetting; 0.5 in the paper for "
        "Countdown and geometry)",
    )
    ts_ratio: float = Field(
        8.0,
        ge=1.0,
        description="candidate pool = ts_ratio x prompts_per_step, drawn uniformly (16 in the "
        "paper for MATH, 8 otherwise)",
    )
    target: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="topk: keep the candidates whose sampled success rate is nearest to this",
    )
    mode: Literal["topk", "threshold"] = Field(
        "topk",
        description="topk (nearest to target) or threshold (random among [low, high], topped "
        "up by distance to the interval)",
    )
    low: float = Field(
        0.3, ge=0.0, le=1.0, description="threshold mode: lower end of the success-rate interval"
    )
    high: float = Field(
        0.7, ge=0.0, le=1.0, description="threshold mode: upper end of the success-rate interval"
    )
    prior_file: Optional[str] = Field(
        None,
        description="prior from an offline evaluation (JSONL, one {index | prompt, n, "
        "correct | success_rate} per line)",
    )
    prior_strength: float = Field(
        1.0,
        gt=0.0,
        description="weight of one offline completion in pseudo-counts "
        "(alpha = 1 + strength x correct)",
    )

    @field_validator("prior_file")
    @classmethod
    def _prior_exists(cls, path: Optional[str]) -> Optional[str]:
        if path and not Path(path).expanduser().exists():
            raise ValueError("file not found")
        return path

    @model_validator(mode="after")
    def _interval(self) -> MoPPSConfig:
        if self.low >= self.high:
            raise ValueError(f"low={self.low}, high={self.high}: low must be < high")
        return self


class MoPPSSampler:
    """Thompson-sampling prompt selection from Beta posteriors; see the module docstring."""

    def __init__(
        self,
        num_prompts: int,
        seed: int,
        config: MoPPSConfig,
        prompts: Sequence[str] | None = None,
    ):
        """`prompts` (the training rows' texts) is read only by a prior file that names prompts
        by text."""
        if num_prompts < 1:
            raise ValueError("MoPPSSampler needs at least one prompt")
        self.num_prompts, self.config = num_prompts, config
        self.alpha_P = np.ones(num_prompts, dtype=np.float64)
        self.beta_P = np.ones(num_prompts, dtype=np.float64)
        if config.prior_file:
            self.alpha_P[:], self.beta_P[:] = load_prior(
                config.prior_file, num_prompts, prompts, config.prior_strength
            )
        self.seen_P = np.zeros(num_prompts, dtype=bool)
        self.num_seen = 0
        self.rng = np.random.default_rng(seed)
        # (indices, g) selected since the last observe
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._metrics = dict.fromkeys(STEP_METRICS, math.nan)

    def next_batch(self, size: int) -> list[int]:
        """B distinct prompt indices chosen by Thompson sampling from a uniform candidate pool."""
        if not 1 <= size <= self.num_prompts:
            raise ValueError(f"MoPPS cannot select {size} distinct prompts from {self.num_prompts}")
        pool_size = min(self.num_prompts, max(size, math.ceil(self.config.ts_ratio * size)))
        # Floyd's algorithm inside numpy for small pools: O(pool), independent of num_prompts.
        pool = self.rng.choice(self.num_prompts, size=pool_size, replace=False)
        g = self.rng.beta(self.alpha_P[pool], self.beta_P[pool])
        pick = self._pick(g, size)
        idx, g_sel = pool[pick], g[pick]
        self._pending.append((idx, g_sel))
        a, b = self.alpha_P[idx], self.beta_P[idx]
        self._metrics["sampler/selected_posterior_mean"] = float(np.mean(a / (a + b)))
        self._metrics["sampler/pool_size"] = float(pool_size)
        return idx.tolist()

    def _pick(self, g: np.ndarray, size: int) -> np.ndarray:
        """Positions in the pool of the `size` kept candidates."""
        c = self.config
        if c.mode == "topk":
            return np.argsort((g - c.target) ** 2, kind="stable")[:size]
        inside = (g >= c.low) & (g <= c.high)
        ins = np.flatnonzero(inside)
        if ins.size >= size:
            return self.rng.choice(ins, size=size, replace=False)
        out = np.flatnonzero(~inside)
        gap = np.maximum(c.low - g[out], g[out] - c.high)
        return np.concatenate([ins, out[np.argsort(gap, kind="stable")[: size - ins.size]]])

    def observe(
        self, indices: Sequence[int], successes: Sequence[float], counts: Sequence[int]
    ) -> None:
        """Decayed Beta update of rolled-out prompts (successes of counts verified completions)."""
        idx = np.asarray(indices, dtype=np.int64)
        s = np.asarray(successes, dtype=np.float64)
        k = np.asarray(counts, dtype=np.float64)
        if not idx.shape == s.shape == k.shape or idx.ndim != 1:
            raise ValueError(
                f"observe: indices, successes, counts differ in length "
                f"({idx.shape}, {s.shape}, {k.shape})"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_prompts):
            raise ValueError(f"observe: prompt index out of range [0, {self.num_prompts})")
        if np.any(s < 0) or np.any(s > k + 1e-6):
            raise ValueError("observe: successes must lie in [0, counts]")
        self._metrics["sampler/rank_corr"] = self._rank_corr(idx, s, k)
        keep = k > 0
        uniq, inv = np.unique(idx[keep], return_inverse=True)
        s_u = np.bincount(inv, weights=s[keep], minlength=uniq.size)
        k_u = np.bincount(inv, weights=k[keep], minlength=uniq.size)
        lam = self.config.decay
        self.alpha_P[uniq] = lam * self.alpha_P[uniq] + (1.0 - lam) + s_u
        self.beta_P[uniq] = lam * self.beta_P[uniq] + (1.0 - lam) + (k_u - s_u)
        self.num_seen += int(np.count_nonzero(~self.seen_P[uniq]))
        self.seen_P[uniq] = True

    def _rank_corr(self, idx: np.ndarray, s: np.ndarray, k: np.ndarray) -> float:
        """Spearman correlation of the g_p sampled at selection and the observed success rates."""
        if not self._pending:
            return math.nan
        sel_idx = np.concatenate([p[0] for p in self._pending])
        sel_g = np.concatenate([p[1] for p in self._pending])
        self._pending = []
        order = np.argsort(sel_idx, kind="stable")
        sel_idx, sel_g = sel_idx[order], sel_g[order]
        pos = np.minimum(np.searchsorted(sel_idx, idx), sel_idx.size - 1)
        ok = (sel_idx[pos] == idx) & (k > 0)
        return spearman(sel_g[pos[ok]], s[ok] / k[ok])

    def state_dict(self) -> dict[str, Any]:
        """Posteriors as tensors, RNG state as plain ints: stored as JSON + safetensors."""
        return {
            "kind": "mopps",
            "alpha": torch.from_numpy(self.alpha_P.copy()),
            "beta": torch.from_numpy(self.beta_P.copy()),
            "seen": torch.from_numpy(self.seen_P.copy()),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "mopps":
            raise ValueError(
                f"sampler state is not MoPPS state (keys {sorted(state)}); was the run "
                "started with another sampler.name?"
            )
        alpha = np.asarray(state["alpha"], dtype=np.float64)
        if alpha.shape != (self.num_prompts,):
            raise ValueError(
                f"sampler state covers {alpha.shape[0]} prompts, the data has {self.num_prompts}"
            )
        self.alpha_P = alpha.copy()
        self.beta_P = np.asarray(state["beta"], dtype=np.float64).copy()
        self.seen_P = np.asarray(state["seen"], dtype=bool).copy()
        self.num_seen = int(np.count_nonzero(self.seen_P))
        self.rng.bit_generator.state = state["rng"]
        self._pending = []

    def metrics(self) -> dict[str, float]:
        """The last selection's and observation's numbers (NaN before the first)."""
        return {**self._metrics, "sampler/observed_frac": self.num_seen / self.num_prompts}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties; NaN if either side is constant."""
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(np.asarray(x)), average_ranks(np.asarray(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else math.nan


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (binary outcomes tie a lot)."""
    values, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank - 1 of each distinct value's first occurrence
    return (first + (counts + 1) / 2.0)[inv.reshape(-1)]


def load_prior(
    path: str | Path, num_prompts: int, prompts: Sequence[str] | None = None, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Beta pseudo-counts from an offline evaluation, as (alpha_P, beta_P).

    JSONL, one evaluated prompt per line: `index` (0-based row of the training data) or `prompt`
    (its exact text; every row with that text gets the counts), `n` completions evaluated, and
    `correct` (count) or `success_rate` (fraction). Repeated prompts add up. A prompt gets
    alpha = 1 + strength * correct, beta = 1 + strength * (n - correct); others keep Beta(1, 1).
    """
    path = Path(path).expanduser()
    correct_P = np.zeros(num_prompts, dtype=np.float64)
    n_P = np.zeros(num_prompts, dtype=np.float64)
    by_text: dict[str, list[int]] | None = None
    with path.open() as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if "prompt" in rec and by_text is None:
                by_text = _text_index(prompts, where)
            rows = _rows_of(rec, num_prompts, by_text, where)
            n, c = _counts_of(rec, where)
            correct_P[rows] += c
            n_P[rows] += n
    return 1.0 + strength * correct_P, 1.0 + strength * (n_P - correct_P)


def _text_index(prompts: Sequence[str] | None, where: str) -> dict[str, list[int]]:
    if prompts is None:
        raise ValueError(
            f"{where}: the prior names prompts by text, but no prompt texts were given"
        )
    out: dict[str, list[int]] = {}
    for i, text in enumerate(prompts):
        out.setdefault(text, []).append(i)
    return out


def _rows_of(
    rec: dict, num_prompts: int, by_text: dict[str, list[int]] | None, where: str
) -> list[int]:
    if ("index" in rec) == ("prompt" in rec):
        raise ValueError(f"{where}: give exactly one of 'index' and 'prompt'")
    if "index" in rec:
        i = rec["index"]
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < num_prompts:
            raise ValueError(
                f"{where}: index={i!r} is not a row of the {num_prompts} training prompts"
            )
        return [i]
    rows = by_text.get(rec["prompt"]) if by_text is not None else None
    if not rows:
        raise ValueError(f"{where}: prompt {str(rec['prompt'])[:60]!r} is not in the training data")
    return rows


def _counts_of(rec: dict, where: str) -> tuple[float, float]:
    n = rec.get("n")
    if not _is_number(n) or n <= 0:
        raise ValueError(f"{where}: n={n!r} must be a positive number of evaluated completions")
    if ("correct" in rec) == ("success_rate" in rec):
        raise ValueError(f"{where}: give exactly one of 'correct' and 'success_rate'")
    if "correct" in rec:
        c = rec["correct"]
        if not _is_number(c) or not 0 <= c <= n:
            raise ValueError(f"{where}: correct={c!r} must lie in [0, n={n}]")
        return float(n), float(c)
    rate = rec["success_rate"]
    if not _is_number(rate) or not 0 <= rate <= 1:
        raise ValueError(f"{where}: success_rate={rate!r} must lie in [0, 1]")
    return float(n), float(rate) * n


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
