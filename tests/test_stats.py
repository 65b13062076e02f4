from __future__ import annotations

import numpy as np
import pytest

from harness.stats import LatencyStats, agreement, max_abs_diff, median_ci, top1


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
