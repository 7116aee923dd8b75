"""pass@k against exact combinatorics, and the bootstrap confidence interval."""

import math
from fractions import Fraction

import pytest

from rlvr.algorithms import mean_with_ci, pass_at_k


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """1 - C(n - c, k) / C(n, k) in exact rationals (math.comb is 0 when k > n - c)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_hand_values():
    # n 10, c 3, k 2: 1 - C(7,2)/C(10,2) = 1 - 21/45 = 8/15
    assert abs(pass_at_k(10, 3, 2) - 8 / 15) < 1e-15
    # k = 1 is the fraction correct: 3/10
    assert abs(pass_at_k(10, 3, 1) - 0.3) < 1e-15
    assert pass_at_k(5, 0, 3) == 0.0  # nothing correct
    assert pass_at_k(5, 5, 3) == 1.0  # everything correct
    assert pass_at_k(4, 2, 3) == 1.0  # n - c = 2 < k = 3: every 3-subset holds a correct one
    # n 1024, c 1, k 1: 1/1024 exactly representable; the stable form keeps it exact
    assert pass_at_k(1024, 1, 1) == 1 / 1024


@pytest.mark.parametrize("n", [1, 2, 5, 16, 128, 1024])
def test_pass_at_k_matches_exact_combinatorics(n):
    ks = sorted({k for k in (1, 2, 3, 5, 8, 16, 64, n // 2, n - 1, n) if 1 <= k <= n})
    for k in ks:
        for c in range(n + 1):
            got = pass_at_k(n, c, k)
            want = float(exact_pass_at_k(n, c, k))
            assert 0.0 <= got <= 1.0 and math.isfinite(got)
            # relative accuracy even for tiny values (no cancellation in 1 - prod)
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300), (n, c, k, got, want)


def test_pass_at_k_validates():
    for n, c, k in [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1), (0, 0, 1)]:
        with pytest.raises(ValueError, match="1 <= k <= n"):
            pass_at_k(n, c, k)
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)


def test_mean_with_ci_constant_values():
    # Every resample of a constant is the constant: interval collapses to the mean.
    assert mean_with_ci([0.25] * 30) == (0.25, 0.25, 0.25)


def test_mean_with_ci_binary_values_hand_quantiles():
    # 100 problems, 50 solved: a bootstrap mean is X / 100 with X ~ Binomial(100, 1/2).
    # P(X <= 39) = .0176, P(X <= 40) = .0284 (exact sums of C(100, i) / 2^100), so the 2.5%
    # quantile of X is 40; by symmetry the 97.5% quantile is 60. With 50000 resamples the
    # empirical quantile position (1250th of 50000) sits 12 sd above the expected count at
    # <= 39 (880) and 4.6 sd below that at <= 40 (1422): the interval is [.40, .60].
    mean, low, high = mean_with_ci([1.0] * 50 + [0.0] * 50, n_boot=50_000, seed=7)
    assert mean == 0.5
    assert abs(low - 0.40) < 1e-12 and abs(high - 0.60) < 1e-12


def test_mean_with_ci_is_reproducible_and_validates():
    values = [0.1, 0.9, 0.4, 0.7, 0.0, 1.0, 0.3]
    first = mean_with_ci(values, seed=3)
    assert first == mean_with_ci(values, seed=3)
    assert abs(first[0] - 3.4 / 7) < 1e-15  # (.1+.9+.4+.7+0+1+.3)/7
    assert first[1] < first[0] < first[2]
    for bad in ([], [0.5, float("nan")]):
        with pytest.raises(ValueError, match="at least one value"):
            mean_with_ci(bad)
    with pytest.raises(ValueError, match="alpha"):
        mean_with_ci(values, alpha=1.0)
