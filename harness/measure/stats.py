"""Latency statistics that keep the raw values, accuracy against labels and a reference, and the tests
that decide with them: Wilson intervals, exact McNemar, Mann-Whitney U, the paired accuracy difference,
Kendall's tau.

SciPy computes what it has (the median's order-statistic interval, Wilson, the binomial tests,
Mann-Whitney, Kendall's tau); what it lacks (Newcombe's paired interval, the paired block ratio) is here.
scipy.stats is imported inside the functions: it takes about a second, and reading reports rarely needs it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

MEDIAN_CI_MIN_N = 6  # below this no pair of order statistics covers the median with 95%: the range is given


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The ranks come from the exact binomial(n, 1/2) distribution (scipy.stats.quantile_test), so no
    normality is assumed; latency distributions are skewed. Ranks, 1-based: [k, n + 1 - k] with k the
    largest rank such that P(X < k) <= (1 - confidence) / 2.
    """
    n = len(values)
    if n == 0:
        return (math.nan, math.nan)
    s = sorted(values)
    if n < MEDIAN_CI_MIN_N:
        return (s[0], s[-1])
    lo, hi = median_ci_ranks(n, confidence)
    return (s[lo], s[hi])


@functools.lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based order statistics of the median's CI for n values (scipy.stats.quantile_test on the ranks)."""
    from scipy.stats import quantile_test

    ci = quantile_test(np.arange(n, dtype=np.float64), q=0.0, p=0.5).confidence_interval(confidence)
    # No pair of order statistics reaches the confidence (n = 6 at 99%): scipy says NaN, the range is given.
    return (0 if math.isnan(ci.low) else int(ci.low), n - 1 if math.isnan(ci.high) else int(ci.high))


@dataclass
class LatencyStats:
    """Summary of raw latencies in milliseconds; `from_ns` keeps the derivation in one place."""

    n: int
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    mean: float
    std: float
    min: float
    max: float
    p50_ci: list[float]

    @classmethod
    def from_ns(cls, latencies_ns: Sequence[int]) -> LatencyStats:
        if not latencies_ns:
            raise ValueError("no latencies to summarise")
        ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
        lo, hi = median_ci(ms.tolist())
        return cls(
            n=int(ms.size),
            p50=float(np.percentile(ms, 50)),
            p90=float(np.percentile(ms, 90)),
            p95=float(np.percentile(ms, 95)),
            p99=float(np.percentile(ms, 99)),
            p999=float(np.percentile(ms, 99.9)),
            mean=float(ms.mean()),
            std=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
            min=float(ms.min()),
            max=float(ms.max()),
            p50_ci=[float(lo), float(hi)],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the reference's arg-max."""
    a = np.argmax(logits.reshape(len(reference), -1), axis=1)
    b = np.argmax(reference.reshape(len(reference), -1), axis=1)
    return float(np.mean(a == b))


def max_abs_diff(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference between two output arrays of the same shape."""
    if outputs.shape != reference.shape:
        raise ValueError(f"output shape {outputs.shape} differs from reference {reference.shape}")
    return float(np.max(np.abs(outputs.astype(np.float64) - reference.astype(np.float64))))


def _z(confidence: float) -> float:
    """Two-sided normal quantile for a confidence level (0.95 -> 1.96)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    if n <= 0:
        return (0.0, 1.0)
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(max(p * (1.0 - p) / n + z2n / (4.0 * n), 0.0))
    return (0.0 if p <= 0 else max(0.0, centre - half), 1.0 if p >= 1 else min(1.0, centre + half))


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n; it stays inside [0, 1] and is sane at 0/n and n/n."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..{n}")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (0.0 if k == 0 else max(0.0, float(ci.low)), 1.0 if k == n else min(1.0, float(ci.high)))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs b and c (binomial(b + c, 1/2))."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return min(1.0, float(binomtest(int(min(b, c)), int(b + c), 0.5).pvalue))


def mcnemar_one_sided(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that b is larger than c: P(X >= b), X ~ Binomial(b + c, 1/2)."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(b), int(b + c), 0.5, alternative="greater").pvalue)


@dataclass
class MannWhitney:
    """U statistic of the NEW sample, its z score, and one-sided p-values for 'slower' and 'faster'."""

    u: float
    z: float
    p_slower: float
    p_faster: float


def mann_whitney(old: Sequence[float], new: Sequence[float]) -> MannWhitney:
    """One-sided Mann-Whitney U tests of NEW against OLD (normal approximation, ties averaged, continuity)."""
    a, b = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples need at least one value")
    from scipy.stats import mannwhitneyu, rankdata, tiecorrect

    slower = mannwhitneyu(b, a, alternative="greater", method="asymptotic", use_continuity=True)
    faster = mannwhitneyu(b, a, alternative="less", method="asymptotic", use_continuity=True)
    n1, n2 = a.size, b.size
    var = n1 * n2 * (n1 + n2 + 1) / 12.0 * tiecorrect(rankdata(np.concatenate([a, b])))
    if not var > 0:  # every value identical: no evidence either way
        return MannWhitney(float(slower.statistic), 0.0, 1.0, 1.0)
    u = float(slower.statistic)
    return MannWhitney(u, (u - n1 * n2 / 2.0) / math.sqrt(var), float(slower.pvalue), float(faster.pvalue))


def paired_difference_ci(both: float, first_only: float, second_only: float, neither: float,
                         confidence: float = 0.95) -> tuple[float, float]:
    """CI of p1 - p2 for two proportions measured on the same samples (Newcombe 1998, method 10).

    `first_only` counts samples the first gets right and the second wrong, `second_only` the reverse.
    The hybrid score interval combines each proportion's Wilson interval with the correlation of the
    paired outcomes, so it neither collapses at zero discordant pairs nor leaves [-1, 1].
    """
    n = both + first_only + second_only + neither
    if n <= 0:
        return (-1.0, 1.0)
    z = _z(confidence)
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    l1, u1 = _wilson(p1, n, z)
    l2, u2 = _wilson(p2, n, z)
    den = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    phi = (both * neither - first_only * second_only) / math.sqrt(den) if den > 0 else 0.0
    d = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return (max(-1.0, d - delta), min(1.0, d + eps))


def samples_to_show_excess(both: float, first_only: float, second_only: float, neither: float, limit: float,
                           confidence: float = 0.95, cap: int = 10 ** 9) -> int | None:
    """Samples at which a paired difference of the observed size would have its CI wholly above `limit`.

    The four counts are scaled together (same rates, more samples). None when the observed difference
    is not above the limit (more data of this kind would not show an excess) or when it needs over `cap`.
    """
    n = both + first_only + second_only + neither
    if n <= 0 or (first_only - second_only) / n <= limit:
        return None

    def shows(m: int) -> bool:
        k = m / n
        return paired_difference_ci(both * k, first_only * k, second_only * k, neither * k, confidence)[0] > limit

    lo, hi = int(n), int(n)
    while not shows(hi):
        lo, hi = hi, hi * 2
        if hi > cap:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if shows(mid) else (mid, hi)
    return hi


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation of two equally long sequences (ties in either count as neither)."""
    if len(a) != len(b):
        raise ValueError("kendall_tau needs sequences of equal length")
    if len(a) < 2:
        return math.nan
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def paired_ratio(num: Sequence[float | None], den: Sequence[float | None],
                 confidence: float = 0.95) -> dict[str, Any] | None:
    """Latency ratio num/den from paired blocks (same round, back to back), with a distribution-free CI.

    `num[i]` and `den[i]` are the two cells' block medians in interleaving round i (None where a
    cell was not timed that round). Each round's ratio sees the same device state for both cells,
    so a device that slows down between rounds moves numerator and denominator alike; the interval
    is that of the median of the per-round ratios. None when fewer than 2 rounds pair up.
    """
    ratios = [a / b for a, b in zip(num, den) if a is not None and b is not None and b > 0]
    if len(ratios) < 2:
        return None
    lo, hi = median_ci(ratios, confidence)
    return {"ratio": float(np.median(ratios)), "ci": [float(lo), float(hi)], "n": len(ratios)}
