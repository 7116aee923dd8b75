"""Evaluation maths: unbiased pass@k and bootstrap confidence intervals over problems."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import Tensor


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, Codex, arXiv
    2107.03374): 1 - C(n - c, k) / C(n, k).

    Computed stably as 1 - prod_{i=n-c+1..n} (1 - k / i), i.e. -expm1(sum log1p(-k / i)), which
    keeps full relative precision even when the result is tiny (n = 1024, c = 1). It is exactly 1
    when n - c < k (every k-subset holds a correct sample). Needs 0 <= c <= n and 1 <= k <= n.
    """
    n, c, k = operator.index(n), operator.index(c), operator.index(k)
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return -math.expm1(math.fsum(math.log1p(-k / i) for i in range(n - c + 1, n + 1)))


def mean_with_ci(
    values: Sequence[float] | Tensor, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over problems and its percentile-bootstrap 1 - alpha interval.

    Resamples the problems with replacement n_boot times (Efron 1979) with a seeded generator,
    so the interval is reproducible; low / high are the alpha/2 and 1 - alpha/2 quantiles of
    the resampled means (linear interpolation). values: one number per problem, e.g. pass@k.
    """
    if isinstance(values, Tensor):
        values_P = values.detach().to("cpu", torch.float64).flatten()
    else:  # straight to float64: going through torch's default float32 would round the values
        values_P = torch.tensor(values, dtype=torch.float64).flatten()
    if values_P.numel() == 0 or torch.isnan(values_P).any():
        raise ValueError("mean_with_ci needs at least one value and no NaN")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    gen = torch.Generator().manual_seed(seed)
    num = values_P.numel()
    idx_RP = torch.randint(0, num, (n_boot, num), generator=gen)
    means_R = values_P[idx_RP].mean(dim=1)
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    low, high = torch.quantile(means_R, q).tolist()
    return values_P.mean().item(), low, high
