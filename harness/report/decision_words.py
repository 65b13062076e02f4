"""The recommendation's sentences that need no decision logic: sizes, drops, and why nothing meets the limits.

`nothing_meets` takes recommend's CellCheck and Constraints (duck-typed here, so this module stays below
recommend in the import graph).
"""

from __future__ import annotations

from typing import Any

from harness.measure import task_metrics as tm


def size_text(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def nothing_meets(ok: list[Any], c: Any, closest: Any) -> str:
    """Name the limits no cell meets (with the best value reached), then the closest cell and what it misses."""
    parts = []
    for name, value, limit in (
        ("latency", lambda k: k.p50_ms, c.max_latency_ms),
        ("accuracy", lambda k: k.top1_drop, c.max_accuracy_drop),
        ("size", lambda k: k.size_mb, c.max_size_mb),
        ("memory", lambda k: k.peak_rss_mb, c.max_memory_mb),
    ):
        if limit is None:
            continue
        vals = [(value(k), k.key) for k in ok if value(k) is not None]
        # accuracy: refused by the test, not merely above the limit (an inconclusive drop is not a miss)
        if vals and all(k.accuracy_refused if name == "accuracy" else value(k) > limit + 1e-9  # type: ignore[operator]
                        for k in ok if value(k) is not None):
            best_v, best_key = min(vals)
            if name == "accuracy":
                parts.append(tm.nothing_keeps_words(limit, best_v, best_key, c.metric))
            elif name == "latency":
                parts.append(f"no cell has p50 ≤ {limit:g} ms (the fastest, {best_key}, takes {best_v:.2f} ms)")
            elif name == "size":
                parts.append(f"no artifact is ≤ {limit:g} MB (the smallest, {best_key}, is {best_v:.2f} MB)")
            else:
                parts.append(f"no cell's peak RSS is ≤ {limit:g} MB (the lowest, {best_key}, peaks at "
                             f"{best_v:.1f} MB)")
    head = "Nothing meets all limits: " + ("; ".join(parts) if parts else
                                           "each limit is met by some cell, but no cell meets them all together")
    return f"{head}. Closest: {closest.key} (p50 {closest.p50_ms:.3f} ms), which misses {'; '.join(closest.misses)}"


def accuracy_words(drop: float) -> str:
    pts = round(100 * drop, 1) + 0.0  # no "-0.0"
    if pts == 0:
        return "its top-1 matches the fp32 reference"
    return f"it {'loses' if pts > 0 else 'gains'} {abs(pts):.1f} points of top-1 against the fp32 reference"


def drop_text(drop: float | None) -> str:
    """A top-1 drop (fraction) as points, without a negative zero."""
    return "–" if drop is None else f"{round(100 * drop, 1) + 0.0:.1f}"
