from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, kendalltau

from harness.measure.stats import (
    LatencyStats,
    agreement,
    kendall_tau,
    mann_whitney,
    max_abs_diff,
    mcnemar_exact,
    mcnemar_one_sided,
    median_ci,
    paired_difference_ci,
    samples_to_show_excess,
    top1,
    wilson,
)
from targets import runner


def test_latency_stats_on_known_values():
    ns = [int(x * 1e6) for x in range(1, 101)]  # 1..100 ms
    s = LatencyStats.from_ns(ns)
    assert s.n == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5)
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (s.min, s.max) == (1.0, 100.0)
    # Exact binomial 95% interval for n=100: order statistics 40 and 61 (1-based).
    assert s.p50_ci == [40.0, 61.0]
    assert s.min <= s.p50_ci[0] <= s.p50 <= s.p50_ci[1] <= s.max


def test_median_ci_covers_the_median_at_about_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        sample = rng.lognormal(0.0, 0.5, size=60)  # skewed like latencies; true median is 1.0
        lo, hi = median_ci(sample)
        hits += lo <= 1.0 <= hi
    assert 0.92 <= hits / 400 <= 0.99


def test_median_ci_small_and_large_samples():
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)
    lo, hi = median_ci(list(range(5000)))
    assert lo < 2500 < hi and hi - lo < 200


def test_stats_reject_empty():
    with pytest.raises(ValueError):
        LatencyStats.from_ns([])


def test_accuracy_functions():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    assert top1(logits, labels) == 0.75
    ref = logits.copy()
    ref[3] = [0.0, 0.0, 9.0]
    assert agreement(logits, ref) == 0.75
    assert max_abs_diff(logits, ref) == 9.0
    with pytest.raises(ValueError):
        max_abs_diff(logits, ref[:2])


def test_latency_stats_have_p95_and_p999():
    s = LatencyStats.from_ns([int(x * 1e6) for x in range(1, 101)])
    assert s.p95 == pytest.approx(95.05) and s.p999 == pytest.approx(99.901)
    assert s.p90 <= s.p95 <= s.p99 <= s.p999 <= s.max
    assert {"p95", "p999", "p50_ci"} <= set(s.to_dict())


@pytest.mark.parametrize("k,n", [(0, 10), (1, 90), (89, 90), (90, 90), (45, 90), (81, 263), (517, 1000)])
def test_wilson_matches_scipy(k, n):
    lo, hi = wilson(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    lo99, hi99 = wilson(k, n, 0.99)
    ref99 = binomtest(k, n).proportion_ci(confidence_level=0.99, method="wilson")
    assert (lo99, hi99) == pytest.approx((ref99.low, ref99.high), abs=1e-12)
    assert lo99 <= lo <= k / n <= hi <= hi99


def test_wilson_matches_newcombes_published_values():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3.
    for (k, n), expected in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                             (1, 29): (0.0061, 0.1718)}.items():
        assert tuple(round(v, 4) for v in wilson(k, n)) == expected
    with pytest.raises(ValueError):
        wilson(11, 10)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (0, 1), (3, 10), (20, 0), (12, 9), (40, 55), (300, 250)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    n = b + c
    expected = 1.0 if n == 0 else binomtest(min(b, c), n, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(b, c) == pytest.approx(mcnemar_exact(c, b), rel=1e-12)
    one = 1.0 if n == 0 else binomtest(b, n, 0.5, alternative="greater").pvalue
    assert mcnemar_one_sided(b, c) == pytest.approx(one, rel=1e-9)


def test_mcnemar_on_the_demo_case():
    # One sample of 90 lost against the reference, none gained: no evidence of any difference.
    assert mcnemar_exact(1, 0) == 1.0
    assert mcnemar_one_sided(1, 0) == 0.5
    assert mcnemar_exact(20, 0) == pytest.approx(2 * 0.5 ** 20)


def test_paired_difference_ci_reduces_to_square_and_add_without_correlation():
    # Counts with a*d == b*c give phi = 0: Newcombe's paired interval equals the unpaired square-and-add one.
    a, b, c, d = 40, 20, 10, 5
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b, n), wilson(a + c, n)
    lo, hi = paired_difference_ci(a, b, c, d)
    assert lo == pytest.approx(p1 - p2 - np.hypot(p1 - l1, u2 - p2))
    assert hi == pytest.approx(p1 - p2 + np.hypot(u1 - p1, p2 - l2))


def test_paired_difference_ci_covers_at_about_95_percent():
    rng = np.random.default_rng(1)
    probs = np.array([0.80, 0.06, 0.02, 0.12])  # both right, first only, second only, both wrong
    true = probs[1] - probs[2]
    hits = 0
    for _ in range(1000):
        counts = rng.multinomial(150, probs)
        lo, hi = paired_difference_ci(*counts)
        hits += lo <= true <= hi
    assert 0.93 <= hits / 1000 <= 0.975


def test_paired_difference_ci_on_one_and_twenty_of_ninety():
    lo, hi = paired_difference_ci(89, 1, 0, 0)  # reference 100%, cell 98.9%
    assert lo < 0.01 < 1 / 90 < hi  # cannot show a drop of more than 1 point
    lo, hi = paired_difference_ci(70, 20, 0, 0)  # cell 77.8%
    assert 0.01 < lo < 20 / 90 < hi
    lo, hi = paired_difference_ci(90, 0, 0, 0)  # identical: a narrow interval around 0, not a point
    assert lo < 0 < hi and hi - lo < 0.1


def test_samples_to_show_excess_is_the_smallest_sufficient_size():
    need = samples_to_show_excess(89, 1, 0, 0, 0.01)
    assert need is not None and 20_000 < need < 50_000  # a 1.1-point drop against a 1-point limit

    def lower(m):
        return paired_difference_ci(89 * m / 90, 1 * m / 90, 0, 0)[0]

    assert lower(need) > 0.01 >= lower(need - 1)
    assert samples_to_show_excess(89, 1, 0, 0, 0.0) < 1000  # any drop at all: far fewer
    assert samples_to_show_excess(90, 0, 0, 0, 0.01) is None  # no drop observed: more data would not show one


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.integers(0, 6, 12).astype(float)  # with ties
        b = a + rng.normal(0, 2, 12)
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0


def _exact_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based order statistics of the median's CI: k the largest rank with P(X < k) <= alpha/2, X ~ B(n, 1/2),
    in integer arithmetic (the hand-written host version before scipy)."""
    half_alpha, k, below = (1 - confidence) / 2, 0, math.comb(n, 0)  # below: 2**n * P(X <= k)
    while k < n // 2 and below / 2 ** n <= half_alpha:
        k += 1
        below += math.comb(n, k)
    k = max(k, 1)
    return k - 1, n - k


@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_median_ci_is_the_exact_binomial_order_statistics(confidence):
    for n in list(range(6, 160)) + [257, 500, 999, 1000, 1001, 2000]:
        lo, hi = _exact_ranks(n, confidence)
        assert median_ci(list(range(n))[::-1], confidence) == (lo, hi), n  # values = their 0-based ranks


def _ranks(values: list[float], interval: tuple[float, float]) -> tuple[int, int]:
    s = sorted(values)
    return s.index(interval[0]), s.index(interval[1])


# The runner's standard-library _median_ci (adaptive stopping on the device) sums the same binomial
# exactly up to runner._EXACT_CI_MAX_N values; beyond, a normal approximation at most one rank wider.
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_runner_median_ci_equals_the_host_exactly_up_to_its_exact_limit(confidence):
    for n in range(1, runner._EXACT_CI_MAX_N + 1):
        values = list(range(n))
        assert tuple(runner._median_ci(values, confidence)) == median_ci(values, confidence), n


@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_runner_median_ci_beyond_its_exact_limit_is_at_most_one_rank_wider(confidence):
    rng = np.random.default_rng(4)
    for n in rng.integers(runner._EXACT_CI_MAX_N + 1, 20_000, 150).tolist():
        values = rng.lognormal(0.0, 0.4, int(n)).tolist()  # distinct, skewed like latencies
        host = _ranks(values, median_ci(values, confidence))
        device = _ranks(values, runner._median_ci(sorted(values), confidence))
        assert 0 <= host[0] - device[0] <= 1 and 0 <= device[1] - host[1] <= 1, (n, host, device)


def test_mann_whitney_u_counts_the_pairs_with_ties_on_random_samples():
    rng = np.random.default_rng(5)
    for _ in range(200):
        old = np.round(rng.lognormal(0, 0.3, rng.integers(1, 60)), int(rng.integers(0, 3)))  # rounding: ties
        new = np.round(rng.lognormal(rng.normal(0, 0.2), 0.3, rng.integers(1, 60)), int(rng.integers(0, 3)))
        mw = mann_whitney(old, new)
        pairs = (new[:, None] > old[None, :]) + 0.5 * (new[:, None] == old[None, :])
        assert mw.u == pytest.approx(float(pairs.sum()))
        assert 0.0 <= mw.p_slower <= 1.0 and 0.0 <= mw.p_faster <= 1.0
    same = mann_whitney([1.0] * 4, [1.0] * 4)
    assert (same.p_slower, same.p_faster) == (1.0, 1.0)
    with pytest.raises(ValueError):
        mann_whitney([], [1.0])
