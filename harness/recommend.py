"""Recommendation under constraints: the fastest cell that meets every limit, with the reasoning per cell."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.results import Measurement, TargetReport

# The constraint names, as in the config's [report] section and task["constraints"].
CONSTRAINT_KEYS = ("max_latency_ms", "max_accuracy_drop", "max_size_mb", "max_memory_mb")


@dataclass
class Constraints:
    """Limits a cell must meet; None means no limit. max_accuracy_drop is a fraction (0.01 = 1 point)."""

    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = 0.01
    max_size_mb: float | None = None
    max_memory_mb: float | None = None

    @classmethod
    def of(cls, report: TargetReport, overrides: dict[str, Any] | None = None) -> Constraints:
        """The report's own constraints (task["constraints"]), with non-None overrides on top."""
        merged: dict[str, Any] = {}
        if "max_accuracy_drop" in report.task:
            merged["max_accuracy_drop"] = report.task["max_accuracy_drop"]
        merged.update({k: v for k, v in (report.task.get("constraints") or {}).items() if k in CONSTRAINT_KEYS})
        merged.update({k: v for k, v in (overrides or {}).items() if k in CONSTRAINT_KEYS and v is not None})
        return cls(**merged)

    def describe(self) -> list[str]:
        """The active limits, in words: ["p50 ≤ 5 ms", "top-1 drop ≤ 1.0 points", ...]."""
        out = []
        if self.max_latency_ms is not None:
            out.append(f"p50 ≤ {self.max_latency_ms:g} ms")
        if self.max_accuracy_drop is not None:
            out.append(f"top-1 drop ≤ {100 * self.max_accuracy_drop:.1f} points, clean and shifted")
        if self.max_size_mb is not None:
            out.append(f"size ≤ {self.max_size_mb:g} MB")
        if self.max_memory_mb is not None:
            out.append(f"peak RSS ≤ {self.max_memory_mb:g} MB")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class CellCheck:
    """One cell against the constraints: what it measures and which limits it misses."""

    key: str
    status: str
    p50_ms: float | None = None
    top1_drop: float | None = None  # fraction; negative is a gain
    size_mb: float | None = None
    peak_rss_mb: float | None = None
    misses: list[str] = field(default_factory=list)  # one phrase per missed limit
    excess: float = 0.0  # how far outside the limits, relative; orders the near misses

    @property
    def meets(self) -> bool:
        return self.status == "ok" and not self.misses

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return f"not measured ({self.status})"
        return "meets all limits" if not self.misses else "; ".join(self.misses)


@dataclass
class Recommendation:
    """The pick for one target (or None), a plain statement of why, and every cell's check."""

    pick: Measurement | None
    reason: str
    constraints: Constraints
    checks: list[CellCheck] = field(default_factory=list)
    closest: Measurement | None = None  # when nothing meets all limits


def _drops(report: TargetReport, m: Measurement) -> dict[str, float]:
    """Top-1 lost against the fp32 reference on each evaluation set, as fractions (positive = worse)."""
    d = m.derived or {}
    acc = m.accuracy or {}
    out = {}
    for where, change_key, acc_key, ref_key in (("clean", "top1_change", "top1", "reference_top1"),
                                                ("shifted", "top1_change_shifted", "top1_shifted",
                                                 "reference_top1_shifted")):
        if d.get(change_key) is not None:
            out[where] = -float(d[change_key])
        elif acc.get(acc_key) is not None and report.task.get(ref_key) is not None:
            out[where] = float(report.task[ref_key]) - float(acc[acc_key])
    return out


def top1_drop(report: TargetReport, m: Measurement) -> float | None:
    """The larger top-1 loss of clean and shifted data (fraction, positive = worse); None if unknown.

    Compression often costs more on shifted inputs than on clean ones, so a pick must hold on both.
    """
    drops = _drops(report, m)
    return max(drops.values()) if drops else None


def _drop_where(report: TargetReport, m: Measurement) -> str:
    drops = _drops(report, m)
    if len(drops) < 2:
        return ""
    return " (on shifted data)" if drops["shifted"] > drops["clean"] else " (on clean data)"


def check_cell(report: TargetReport, m: Measurement, c: Constraints) -> CellCheck:
    """Measure one cell against each limit; a limit that cannot be checked counts as missed."""
    size = (m.artifact or {}).get("size_bytes")
    chk = CellCheck(key=m.key, status=m.status, p50_ms=(m.latency_ms or {}).get("p50"),
                    top1_drop=top1_drop(report, m), size_mb=size / 1e6 if size else None,
                    peak_rss_mb=(m.memory_mb or {}).get("peak_rss"))
    if not m.ok:
        return chk
    has_reference = report.task.get("reference_top1") is not None
    if chk.p50_ms is None:
        chk.misses.append("no latency measured")
        chk.excess += 1.0
    elif c.max_latency_ms is not None and chk.p50_ms > c.max_latency_ms:
        chk.misses.append(f"p50 {chk.p50_ms:.2f} ms > {c.max_latency_ms:g} ms")
        chk.excess += chk.p50_ms / c.max_latency_ms - 1
    if c.max_accuracy_drop is not None and has_reference:
        if chk.top1_drop is None:
            chk.misses.append("top-1 not measured")
            chk.excess += 1.0
        elif chk.top1_drop > c.max_accuracy_drop + 1e-9:
            chk.misses.append(f"top-1 drops {100 * chk.top1_drop:.1f} points{_drop_where(report, m)} > "
                              f"{100 * c.max_accuracy_drop:.1f}")
            chk.excess += (chk.top1_drop - c.max_accuracy_drop) / max(c.max_accuracy_drop, 0.01)
    _upper_limit(chk, chk.size_mb, c.max_size_mb, "size unknown", "size {:.2f} MB > {:g} MB")
    _upper_limit(chk, chk.peak_rss_mb, c.max_memory_mb, "peak RSS not measured", "peak RSS {:.1f} MB > {:g} MB")
    return chk


def _upper_limit(chk: CellCheck, value: float | None, limit: float | None, unknown: str, over: str) -> None:
    """Record a miss when a figure is unknown or above its limit; excess is the relative overshoot."""
    if limit is None:
        return
    if value is None:
        chk.misses.append(unknown)
        chk.excess += 1.0
    elif value > limit:
        chk.misses.append(over.format(value, limit))
        chk.excess += value / limit - 1


def recommend(report: TargetReport, constraints: Constraints | dict[str, Any] | None = None) -> Recommendation:
    """The fastest ok cell that meets every limit; otherwise which limit nothing meets and what comes closest."""
    if constraints is None:
        c = Constraints.of(report)
    elif isinstance(constraints, dict):
        c = Constraints.of(report, constraints)
    else:
        c = constraints
    checks = [check_cell(report, m, c) for m in report.measurements]
    by_key = {m.key: m for m in report.measurements}
    limits = ", ".join(c.describe()) or "no limits set"
    ok = [k for k in checks if k.status == "ok" and k.p50_ms is not None]
    if not ok:
        return Recommendation(None, "no cell was measured successfully, so there is nothing to recommend", c, checks)
    meeting = [k for k in ok if k.meets]
    if meeting:
        best = min(meeting, key=lambda k: k.p50_ms)  # type: ignore[arg-type, return-value]
        m = by_key[best.key]
        if len(ok) == 1:
            why = f"{best.key} (p50 {best.p50_ms:.3f} ms) is the only measured cell, and it meets all limits ({limits})"
        elif len(meeting) == 1:
            why = (f"{best.key} (p50 {best.p50_ms:.3f} ms) is the only one of the {len(ok)} measured cells that "
                   f"meets all limits ({limits})")
        else:
            why = (f"{best.key} is the fastest (p50 {best.p50_ms:.3f} ms) of the {len(meeting)} of {len(ok)} "
                   f"measured cells that meet all limits ({limits})")
        if best.top1_drop is not None:
            why += f"; {_accuracy_words(best.top1_drop)}"
        if c.max_accuracy_drop is not None and report.task.get("reference_top1") is None:
            why += "; accuracy was not checked: this report has no fp32 reference top-1"
        return Recommendation(m, why, c, checks)
    closest = min(ok, key=lambda k: (len(k.misses), k.excess, k.p50_ms))
    return Recommendation(None, _nothing_meets(ok, c, closest), c, checks, closest=by_key[closest.key])


def _nothing_meets(ok: list[CellCheck], c: Constraints, closest: CellCheck) -> str:
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
        if vals and all(v > limit + 1e-9 for v, _ in vals):
            best_v, best_key = min(vals)
            if name == "accuracy":
                parts.append(f"no cell keeps the top-1 drop within {100 * limit:.1f} points (the smallest drop, "
                             f"{best_key}, is {100 * best_v:.1f} points)")
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


def _accuracy_words(drop: float) -> str:
    pts = round(100 * drop, 1) + 0.0  # no "-0.0"
    if pts == 0:
        return "its top-1 matches the fp32 reference"
    return f"it {'loses' if pts > 0 else 'gains'} {abs(pts):.1f} points of top-1 against the fp32 reference"


def drop_text(drop: float | None) -> str:
    """A top-1 drop (fraction) as points, without a negative zero."""
    return "–" if drop is None else f"{round(100 * drop, 1) + 0.0:.1f}"
