"""Latency statistics that keep the raw values, and accuracy against labels and a reference."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The ranks come from the binomial(n, 1/2) distribution (exact for small n), so no
    normality is assumed; latency distributions are skewed.
    """
    s = sorted(values)
    n = len(s)
    if n == 0:
        return (math.nan, math.nan)
    if n < 6:
        return (s[0], s[-1])
    alpha = 1.0 - confidence
    if n > 1000:  # the exact binomial terms underflow; the normal approximation is tight here
        z = {0.95: 1.959963984540054, 0.99: 2.5758293035489}.get(confidence, 1.959963984540054)
        k = max(1, int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)))
        return (s[k - 1], s[n - k])
    # Largest k with P(X < k) <= alpha/2 for X ~ Binomial(n, 1/2): interval [s[k-1], s[n-k]].
    cdf, k, p = 0.0, 0, 0.5 ** n
    term = p
    while k < n // 2:
        if cdf + term > alpha / 2:
            break
        cdf += term
        k += 1
        term = term * (n - k + 1) / k
    k = max(k, 1)
    return (s[k - 1], s[n - k])


@dataclass
class LatencyStats:
    """Summary of raw latencies in milliseconds; `from_ns` keeps the derivation in one place."""

    n: int
    p50: float
    p90: float
    p99: float
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
            p99=float(np.percentile(ms, 99)),
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
