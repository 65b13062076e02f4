"""Recommendation under constraints: the fastest cell that meets every limit, with the reasoning per cell.

Both halves of the decision are tested, not read off point estimates. Accuracy: a cell is refused by
`max_accuracy_drop` only when the 95% CI of its paired top-1 drop against the fp32 reference (same
samples; Newcombe's interval for paired proportions) lies wholly above the limit; a drop above the limit
that the data cannot confirm is "inconclusive", not refused. Latency: cells whose p50 ratio CI to the
fastest (paired blocks, else the p50 CIs) reaches within `tie_margin` of 1.0 (contains 1.0 at the default
margin 0) are tied, and TIE_BREAK picks among them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.measure import task_metrics as tm
from harness.measure.metrics import latency_ratio, tied_within
from harness.measure.results import Measurement, TargetReport
from harness.report.decision_words import accuracy_words, nothing_meets, size_text

# The constraint names, as in the config's [report] section and task["constraints"].
CONSTRAINT_KEYS = ("max_latency_ms", "max_accuracy_drop", "max_size_mb", "max_memory_mb")

TIE_BREAK = ("cells whose p50 ratio CI to the fastest cell that meets the limits contains 1.0 (or reaches within "
             "tie_margin of it) are tied with it; "
             "among them the smaller artifact wins, then the lower peak RSS (whole MB), then the smaller top-1 "
             "drop (the larger of clean and shifted), then the lower p50")
ACCURACY_RULE = ("refused only when the 95% CI of the paired top-1 drop against the fp32 reference (same samples, "
                 "Newcombe hybrid score interval) lies wholly above max_accuracy_drop, on clean or shifted data; "
                 "an observed drop above the limit whose CI reaches down to it is inconclusive and not refused; "
                 "without paired counts the point estimate decides")


@dataclass
class Constraints:
    """Limits a cell must meet; None means no limit. max_accuracy_drop is a fraction (0.01 = 1 point)."""

    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = 0.01
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    metric: dict[str, Any] | None = None  # the configured metric when not top-1: the accuracy limit is on it

    @classmethod
    def of(cls, report: TargetReport, overrides: dict[str, Any] | None = None) -> Constraints:
        """The report's own constraints (task["constraints"]), with non-None overrides on top."""
        merged: dict[str, Any] = {}
        if "max_accuracy_drop" in report.task:
            merged["max_accuracy_drop"] = report.task["max_accuracy_drop"]
        merged.update({k: v for k, v in (report.task.get("constraints") or {}).items() if k in CONSTRAINT_KEYS})
        merged.update({k: v for k, v in (overrides or {}).items() if k in CONSTRAINT_KEYS and v is not None})
        return cls(**merged, metric=tm.task_metric(report))

    def describe(self) -> list[str]:
        """The active limits, in words: ["p50 ≤ 5 ms", "top-1 drop ≤ 1.0 points", ...]."""
        out = []
        if self.max_latency_ms is not None:
            out.append(f"p50 ≤ {self.max_latency_ms:g} ms")
        if self.max_accuracy_drop is not None:
            out.append(tm.limit_words(self.max_accuracy_drop, self.metric))
        if self.max_size_mb is not None:
            out.append(f"size ≤ {self.max_size_mb:g} MB")
        if self.max_memory_mb is not None:
            out.append(f"peak RSS ≤ {self.max_memory_mb:g} MB")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "metric"}


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
    notes: list[str] = field(default_factory=list)  # not misses: e.g. a drop above the limit the data cannot confirm
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)  # "clean"/"shifted" -> the judged drop
    accuracy_refused: bool = False
    ratio_to_pick: float | None = None  # p50 over the pick's p50
    ratio_to_pick_ci: list[float] | None = None
    tied: bool = False  # tied with the pick on latency (and meets all limits)
    ratio_basis: str | None = None  # "paired blocks", "p50 CIs", "p50 only"

    @property
    def meets(self) -> bool:
        return self.status == "ok" and not self.misses

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return f"not measured ({self.status})"
        if self.misses:
            return "; ".join(self.misses)
        return "; ".join(["meets all limits", *self.notes])

    @property
    def drop_ci(self) -> list[float] | None:
        """The paired 95% CI of the larger top-1 drop (clean or shifted); None without paired counts."""
        tested = [j for j in self.accuracy.values() if j.get("ci")]
        return max(tested, key=lambda j: j["drop"])["ci"] if tested else None

    def to_dict(self) -> dict[str, Any]:
        return {"cell": self.key, "status": self.status, "meets": self.meets, "misses": list(self.misses),
                "notes": list(self.notes), "accuracy": self.accuracy, "ratio_to_pick": self.ratio_to_pick,
                "ratio_to_pick_ci": self.ratio_to_pick_ci, "ratio_basis": self.ratio_basis, "tied": self.tied}


@dataclass
class Recommendation:
    """The pick for one target (or None), a plain statement of why, and every cell's check."""

    pick: Measurement | None
    reason: str
    constraints: Constraints
    checks: list[CellCheck] = field(default_factory=list)
    closest: Measurement | None = None  # when nothing meets all limits
    tied: list[Measurement] = field(default_factory=list)  # meet all limits, latency tied with the pick
    tie_broken_by: str | None = None  # the criterion of TIE_BREAK that chose the pick among tied cells
    runner_up: dict[str, Any] | None = None  # {cell, ratio, ci, basis, n, told_apart}
    tie_margin: float = 0.0  # latency ratios within this fraction of 1.0 tie (report.tie_margin)

    def to_dict(self) -> dict[str, Any]:
        """The decision as report.json's `recommendation` object (plain JSON types)."""
        return {"pick": self.pick.key if self.pick else None, "tied": [m.key for m in self.tied],
                "limits": self.constraints.to_dict(), "limits_text": self.constraints.describe(),
                "reason": self.reason, "tie_break": TIE_BREAK, "tie_broken_by": self.tie_broken_by,
                "tie_margin": self.tie_margin,
                "runner_up": self.runner_up, "accuracy_rule": ACCURACY_RULE,
                "closest": self.closest.key if self.closest else None,
                "cells": [c.to_dict() for c in self.checks]}


def _drops(report: TargetReport, m: Measurement) -> dict[str, float]:
    """Top-1 (or the configured metric, in its unit) lost against the fp32 reference per evaluation set (+ = worse)."""
    d = m.derived or {}
    acc = m.accuracy or {}
    out = {}
    if tm.task_metric(report) is not None:
        return tm.metric_drops(acc)
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
    mc = tm.task_metric(report)
    has_reference = report.task.get("reference_top1") is not None or mc is not None
    if chk.p50_ms is None:
        chk.misses.append("no latency measured")
        chk.excess += 1.0
    elif c.max_latency_ms is not None and chk.p50_ms > c.max_latency_ms:
        chk.misses.append(f"p50 {chk.p50_ms:.2f} ms > {c.max_latency_ms:g} ms")
        chk.excess += chk.p50_ms / c.max_latency_ms - 1
    if c.max_accuracy_drop is not None and has_reference:
        if chk.top1_drop is None:
            chk.misses.append(f"{tm.metric_name(mc)} not measured")
            chk.excess += 1.0
        else:
            _check_accuracy(report, m, chk, c.max_accuracy_drop)
    _upper_limit(chk, chk.size_mb, c.max_size_mb, "size unknown", "size {:.2f} MB > {:g} MB")
    _upper_limit(chk, chk.peak_rss_mb, c.max_memory_mb, "peak RSS not measured", "peak RSS {:.1f} MB > {:g} MB")
    return chk


def _check_accuracy(report: TargetReport, m: Measurement, chk: CellCheck, limit: float) -> None:
    """Test the drop on each evaluation set; the worst set that the data show above the limit refuses the cell."""
    drops = _drops(report, m)
    acc = m.accuracy or {}
    mc = tm.task_metric(report)
    for where, drop in drops.items():  # another metric than top-1: its paired bootstrap CI (task_metrics)
        chk.accuracy[where] = tm.judge(mc, acc, where, drop, limit)

    def words(where: str) -> str:
        return tm.words(mc, f" (on {where} data)" if len(drops) > 1 else "", chk.accuracy[where], limit)

    over = [w for w, j in chk.accuracy.items() if j["verdict"] == "exceeds"]
    if over:
        worst = max(over, key=lambda w: chk.accuracy[w]["drop"])
        chk.misses.append(words(worst))
        chk.accuracy_refused = True
        chk.excess += (chk.accuracy[worst]["drop"] - limit) / max(limit, 0.01)
    else:
        chk.notes += [words(w) for w, j in chk.accuracy.items() if j["verdict"] == "inconclusive"]


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
    margin = tie_margin_of(report, constraints if isinstance(constraints, dict) else None)
    ok = [k for k in checks if k.status == "ok" and k.p50_ms is not None]
    if not ok:
        return Recommendation(None, "no cell was measured successfully, so there is nothing to recommend", c, checks)
    meeting = [k for k in ok if k.meets]
    if not meeting:
        closest = min(ok, key=lambda k: (len(k.misses), k.excess, k.p50_ms))
        return Recommendation(None, nothing_meets(ok, c, closest), c, checks, closest=by_key[closest.key])
    fastest = min(meeting, key=lambda k: k.p50_ms)  # type: ignore[arg-type, return-value]
    tied_fastest = sorted((k for k in meeting if k is fastest or _tied(by_key[k.key], by_key[fastest.key], margin)),
                          key=lambda k: _tie_key(k, by_key[k.key]))
    # Ties are not transitive: a cell tied with the fastest only through a wide interval may still be told
    # apart as slower than another cell within the limits; such a cell is never the pick.
    beaten = {k.key: j for k in tied_fastest for j in meeting
              if j is not k and _slower(by_key[k.key], by_key[j.key], margin)}
    candidates = [k for k in tied_fastest if k.key not in beaten] or [fastest]
    best = candidates[0]
    m = by_key[best.key]
    for k in ok:
        r = latency_ratio(by_key[k.key], m) if k is not best else {"ratio": 1.0, "ci": [1.0, 1.0], "basis": "pick"}
        k.ratio_to_pick, k.ratio_to_pick_ci = (r["ratio"], r["ci"]) if r else (None, None)
        k.ratio_basis = r["basis"] if r else None
        k.tied = k is not best and k.meets and tied_within(k.ratio_to_pick_ci, k.ratio_to_pick, margin)
    rec = Recommendation(m, "", c, checks, tied=[by_key[k.key] for k in meeting if k.tied], tie_margin=margin)
    if len(ok) == 1:
        why = f"{best.key} (p50 {best.p50_ms:.3f} ms) is the only measured cell, and it meets all limits ({limits})"
    elif len(meeting) == 1:
        why = (f"{best.key} (p50 {best.p50_ms:.3f} ms) is the only one of the {len(ok)} measured cells that "
               f"meets all limits ({limits})")
    elif best is fastest:
        why = (f"{best.key} is the fastest (p50 {best.p50_ms:.3f} ms) of the {len(meeting)} of {len(ok)} "
               f"measured cells that meet all limits ({limits})")
    else:
        why = (f"{best.key} (p50 {best.p50_ms:.3f} ms) is picked from the {len(meeting)} of {len(ok)} measured "
               f"cells that meet all limits ({limits}), though {fastest.key} has the lowest p50 "
               f"({fastest.p50_ms:.3f} ms)")
    named = set()
    if len(candidates) > 1:
        rec.tie_broken_by, detail = _tie_broken_by(candidates[0], candidates[1], by_key)
        others = [k for k in candidates if k is not best]
        named = {k.key for k in others}
        within = f" (tie margin {100 * margin:g}%)" if margin else ""
        listed = ", ".join(f"{k.key} ({_ratio_words(k)})" for k in others)
        why += (f"; tied with it on latency{within}: {listed}; the tie goes to {best.key} by {rec.tie_broken_by} "
                f"({detail})")
    passed = [k for k in tied_fastest if k.key in beaten and tied_fastest.index(k) < tied_fastest.index(best)]
    if passed:
        why += "; " + "; ".join(f"{k.key} would win the tie-break but is told apart as slower than "
                                f"{beaten[k.key].key}" for k in passed)
    runner = min((k for k in meeting if k is not best), key=lambda k: k.p50_ms, default=None)  # type: ignore[arg-type, return-value]
    if runner is not None and runner.ratio_to_pick is not None:
        rec.runner_up = {"cell": runner.key, "ratio": runner.ratio_to_pick, "ci": runner.ratio_to_pick_ci,
                         "basis": runner.ratio_basis, "told_apart": not runner.tied}
        if runner.key not in named:
            why += (f"; the runner-up, {runner.key}, cannot be told apart from it ({_ratio_words(runner)})"
                    if runner.tied else f"; the runner-up, {runner.key}, is told apart: {_ratio_words(runner)}")
    if best.top1_drop is not None:
        why += f"; {tm.metric_change_words(best.top1_drop, c.metric) if c.metric else accuracy_words(best.top1_drop)}"
    if best.notes:
        why += "; " + "; ".join(best.notes)
    if c.max_accuracy_drop is not None and report.task.get("reference_top1") is None and c.metric is None:
        why += "; accuracy was not checked: this report has no fp32 reference top-1"
    rec.reason = why
    return rec


def record_decision(report: TargetReport, rec: Recommendation | None = None) -> Recommendation:
    """Store the decision in the report: `recommendation`, and each ok cell's latency ratio to the pick."""
    rec = rec or recommend(report)
    report.recommendation = rec.to_dict()
    checks = {k.key: k for k in rec.checks}
    for m in report.measurements:
        k = checks.get(m.key)
        if m.ok and m.latency_ms is not None and k is not None:
            m.latency_ms["ratio_to_pick"] = k.ratio_to_pick
            m.latency_ms["ratio_to_pick_ci"] = k.ratio_to_pick_ci
    return rec


def tie_margin_of(report: TargetReport, overrides: dict[str, Any] | None = None) -> float:
    """The latency equivalence margin in force: an override, else the run's report.tie_margin, else 0."""
    for source in (overrides or {}, report.task.get("constraints") or {}):
        if source.get("tie_margin") is not None:
            return float(source["tie_margin"])
    return 0.0


def _tied(a: Measurement, b: Measurement, margin: float) -> bool:
    r = latency_ratio(a, b)
    return r is not None and tied_within(r["ci"], r["ratio"], margin)


def _slower(a: Measurement, b: Measurement, margin: float) -> bool:
    """Whether `a` is told apart as slower than `b` by more than the margin (its ratio CI wholly beyond)."""
    r = latency_ratio(a, b)
    return r is not None and r["ci"] is not None and r["ci"][0] > 1.0 + margin


def _tie_key(k: CellCheck, m: Measurement) -> tuple[Any, ...]:
    size = (m.artifact or {}).get("size_bytes")
    rss = k.peak_rss_mb
    return (size if size is not None else math.inf, round(rss) if rss is not None else math.inf,
            k.top1_drop if k.top1_drop is not None else math.inf, k.p50_ms, k.key)


def _tie_broken_by(a: CellCheck, b: CellCheck, by_key: dict[str, Measurement]) -> tuple[str, str]:
    """The first TIE_BREAK criterion on which the pick `a` beats the next tied cell `b`, and the two values."""
    ka, kb = _tie_key(a, by_key[a.key]), _tie_key(b, by_key[b.key])
    names = ("smaller artifact", "lower peak RSS", "smaller top-1 drop", "lower p50", "name")  # TIE_BREAK
    texts = (size_text, lambda v: f"{v} MB", lambda v: f"{100 * v:.1f} points",
             lambda v: f"{v:.3f} ms", str)
    for name, text, va, vb in zip(names, texts, ka, kb):
        if va != vb:
            return name, f"{text(va)} vs {b.key}'s {text(vb)}"
    return "name", f"{a.key} before {b.key}"


def _ratio_words(k: CellCheck) -> str:
    """A cell's p50 ratio to the pick with its interval, in words."""
    if k.ratio_to_pick is None:
        return "no ratio"
    ci = k.ratio_to_pick_ci
    if not ci:
        return f"p50 ratio to the pick {k.ratio_to_pick:.2f}, no interval"
    what = "95% CI" if k.ratio_basis == "paired blocks" else "interval from the p50 CIs"
    return f"p50 ratio to the pick {k.ratio_to_pick:.2f}, {what} {ci[0]:.2f}–{ci[1]:.2f}"
