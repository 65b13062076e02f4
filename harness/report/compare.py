"""`edge-harness compare OLD NEW`: match cells between two runs and flag regressions a CI gate can trust.

A latency regression needs both statistical significance on the raw timings (one-sided Mann-Whitney U,
normal approximation with tie correction) and a practical size (median change above a threshold).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.measure.results import Measurement, TargetReport, load_report, write_atomic
from harness.measure.stats import mann_whitney
from harness.report.cells import dig, reference_cell
from harness.report.rerender import find_reports


@dataclass
class CellChange:
    """One matched cell: figures from both runs and the verdict with its reasons."""

    target: str
    cell: str
    verdict: str  # "regression" | "improvement" | "same" | "only in OLD" | "only in NEW"
    reasons: list[str] = field(default_factory=list)
    old_p50_ms: float | None = None
    new_p50_ms: float | None = None
    latency_change: float | None = None  # median NEW / median OLD - 1
    p_value: float | None = None  # one-sided, in the direction of the change
    detectable: float | None = None  # smallest change these two runs could detect (5% test, 80% power)
    old_top1: float | None = None
    new_top1: float | None = None


@dataclass
class Comparison:
    old: str
    new: str
    alpha: float
    min_change: float
    max_accuracy_drop: float
    # A cell's absolute speed (no control beside it) includes the whole machine's speed in that run,
    # which on a shared machine swings far more than a relative figure: it must change this much more.
    min_change_absolute: float = 0.25
    changes: list[CellChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CellChange]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def improvements(self) -> list[CellChange]:
        return [c for c in self.changes if c.verdict == "improvement"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_run(folder: Path) -> dict[str, TargetReport]:
    """The reports of one run folder, by target name."""
    return {str(r.target.get("name")): r for r in (load_report(p) for p in find_reports(Path(folder)))}


def compare_runs(old: Path, new: Path, alpha: float = 0.01, min_change: float = 0.05,
                 max_accuracy_drop: float = 0.01) -> Comparison:
    """Match cells by target + variant + format and judge each pair."""
    olds, news = load_run(old), load_run(new)
    comp = Comparison(str(old), str(new), alpha, min_change, max_accuracy_drop)
    for name in [n for n in olds if n not in news]:
        comp.notes.append(f"target {name} is only in OLD")
    for name in [n for n in news if n not in olds]:
        comp.notes.append(f"target {name} is only in NEW")
    shared = [n for n in olds if n in news]
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for name in shared:  # first every cell's round replicates: the test is made across all cells at once
        o, n = olds[name], news[name]
        controls = (control_cell(o), control_cell(n))
        if None in controls or controls[0].key != controls[1].key:  # type: ignore[union-attr]
            controls = (None, None)
        for m in o.measurements:
            other = n.cell(m.variant, m.format)
            if other is not None and m.ok and other.ok and (st := round_stats(m, other, controls)) is not None:
                stats[name, m.key] = st
    significant = holm({k: st["p"] for k, st in stats.items()}, alpha)
    for name in shared:
        o, n = olds[name], news[name]
        for m in o.measurements:
            other = n.cell(m.variant, m.format)
            if other is None:
                comp.changes.append(CellChange(name, m.key, "only in OLD"))
            else:
                rounds = (stats.get((name, m.key)), (name, m.key) in significant)
                comp.changes.append(compare_cells(name, m, other, comp, rounds))
        comp.changes += [CellChange(name, m.key, "only in NEW") for m in n.measurements
                         if o.cell(m.variant, m.format) is None]
    return comp


def control_cell(report: TargetReport) -> Measurement | None:
    """The run's control: the fp32 reference cell with interleaved rounds (every cell was timed beside it)."""
    m = reference_cell(report)
    return m if m is not None and m.block_p50_ms and sum(x is not None for x in m.block_p50_ms) >= MIN_ROUNDS \
        else None


def compare_cells(target: str, old: Measurement, new: Measurement, comp: Comparison,
                  rounds: tuple[dict[str, Any] | None, bool] = (None, False)) -> CellChange:
    """Status, latency (significance + practical size) and accuracy of one matched cell."""
    ch = CellChange(target, old.key, "same", old_p50_ms=dig(old.latency_ms, "p50"),
                    new_p50_ms=dig(new.latency_ms, "p50"), old_top1=dig(old.accuracy, "top1"),
                    new_top1=dig(new.accuracy, "top1"))
    worse: list[str] = []
    better: list[str] = []
    if old.ok and not new.ok:
        worse.append(f"now {new.status}: {new.error}")
    elif new.ok and not old.ok:
        better.append(f"now measured (was {old.status})")
    if old.ok and new.ok:
        _latency(old, new, ch, comp, worse, better, rounds)
        for key, label in (("top1", "top-1"), ("top1_shifted", "top-1 shifted")):
            a, b = dig(old.accuracy, key), dig(new.accuracy, key)
            if a is None or b is None:
                continue
            if a - b > comp.max_accuracy_drop + 1e-9:
                worse.append(f"{label} {100 * a:.1f}% → {100 * b:.1f}% ({100 * (b - a):+.1f} points)")
            elif b - a > comp.max_accuracy_drop + 1e-9:
                better.append(f"{label} {100 * a:.1f}% → {100 * b:.1f}% ({100 * (b - a):+.1f} points)")
    if not old.ok and not new.ok:
        ch.reasons.append(f"{new.status} in both runs")
    if worse or better:
        ch.verdict = "regression" if worse else "improvement"
        ch.reasons = worse + better
        for k in ("threads", "runtime_version"):  # the usual explanations, worth stating beside the verdict
            if old.settings.get(k) != new.settings.get(k) and old.settings.get(k) is not None:
                ch.reasons.append(f"{k} {old.settings.get(k)} → {new.settings.get(k)}")
        if dig(old.artifact, "sha256") != dig(new.artifact, "sha256"):
            ch.reasons.append("artifact changed")
    return ch


# z for a two-sided 5% test plus z for 80% power: the smallest change two runs can detect is about
# this many standard errors of the difference of their (log) replicate means.
DETECTABLE_Z = 1.96 + 0.84
MIN_ROUNDS = 4


def _replicates(m: Measurement, control: Measurement | None) -> list[float]:
    """Per-round log block medians of `m`, relative to `control`'s in the same round where there is one."""
    own = m.block_p50_ms or []
    if control is None or control is m:
        return [math.log(x) for x in own if x]
    ref = control.block_p50_ms or []
    return [math.log(a / b) for a, b in zip(own, ref) if a and b]


def round_stats(old: Measurement, new: Measurement, controls: tuple[Any, Any]) -> dict[str, Any] | None:
    """Replicates at the level that varies (interleaving rounds, not iterations), relative to the run's
    control where there is one, and their rank test; None when either run has too few rounds."""
    co, cn = controls
    # A control is one only if it ran the same way in both runs: a control that changed (threads, runtime,
    # artifact) would pass its own change on to every cell measured against it.
    relative = co is not None and cn is not None and old.key != co.key and _same_setup(co, cn)
    a = _replicates(old, co if relative else None)
    b = _replicates(new, cn if relative else None)
    if len(a) < MIN_ROUNDS or len(b) < MIN_ROUNDS:
        return None
    change = math.exp(float(np.median(b)) - float(np.median(a))) - 1
    mw = mann_whitney(a, b)
    se = math.sqrt(float(np.var(a, ddof=1)) / len(a) + float(np.var(b, ddof=1)) / len(b))
    return {"a": a, "b": b, "change": change, "mw": mw, "p": mw.p_slower if change >= 0 else mw.p_faster,
            "relative": relative, "control": co.key if relative else None,
            "is_control": co is not None and old.key == co.key,
            "detectable": math.exp(DETECTABLE_Z * se) - 1}


def _same_setup(old: Measurement, new: Measurement) -> bool:
    """The same artifact under the same threads, affinity and runtime version in both runs."""
    return all(old.settings.get(k) == new.settings.get(k) for k in ("threads", "runtime_version", "affinity")) \
        and dig(old.artifact, "sha256") == dig(new.artifact, "sha256")


def holm(p_values: dict[Any, float], alpha: float) -> set[Any]:
    """Holm's step-down: the keys whose p-values stay significant with the family-wise error at `alpha`.

    A run compares every cell at once; without it, 14 cells at p < 0.01 each would fail a CI gate
    from noise alone about one time in eight.
    """
    ranked = sorted(p_values.items(), key=lambda kv: kv[1])
    keep = set()
    for i, (key, p) in enumerate(ranked):
        if p >= alpha / (len(ranked) - i):
            break
        keep.add(key)
    return keep


def _rounds(old: Measurement, new: Measurement, ch: CellChange, comp: Comparison, st: dict[str, Any],
            significant: bool, worse: list[str], better: list[str]) -> None:
    """The verdict from round replicates (`st`, from round_stats); `significant`: it survived Holm's test."""
    ch.latency_change, ch.p_value, ch.detectable = st["change"], st["p"], st["detectable"]
    what = f"relative to {st['control']}" if st["relative"] else "absolute (the run's machine speed included)"
    text = (f"median {ch.old_p50_ms:.3f} → {ch.new_p50_ms:.3f} ms, {what} {100 * ch.latency_change:+.1f}% over "
            f"{len(st['a'])}/{len(st['b'])} rounds (p={ch.p_value:.1e}; detectable ≥ {100 * ch.detectable:.0f}%)")
    limit = comp.min_change if st["relative"] else max(comp.min_change, comp.min_change_absolute)
    same_setup = _same_setup(old, new)
    if not st["relative"] and same_setup:
        # The same artifact under the same settings: an absolute change between two runs is the machine's
        # speed in each run as much as the cell's, and nothing measured beside it can tell them apart.
        why = ("the other cells are compared relative to it" if st.get("is_control")
               else "the run's control changed its setup, so nothing unchanged was measured beside it")
        ch.reasons.append(f"no detectable change: {text}; same artifact and settings, so the change is the "
                          f"machine's speed between runs ({why})")
        return
    if significant and ch.latency_change > limit:
        worse.append(f"slower: {text}")
    elif significant and ch.latency_change < -limit:
        better.append(f"faster: {text}")
    else:
        ch.reasons.append(f"no detectable change: {text}")


def _latency(old: Measurement, new: Measurement, ch: CellChange, comp: Comparison,
             worse: list[str], better: list[str], rounds: tuple[dict[str, Any] | None, bool] = (None, False)) -> None:
    st, significant = rounds
    if st is not None:
        _rounds(old, new, ch, comp, st, significant, worse, better)
        return
    # Single-process cells (bench, sequential runs): raw iterations of one process each, which ignores the
    # variation between processes; such a verdict is weaker, and said so.
    ra, rb = old.raw_latencies_ms or [], new.raw_latencies_ms or []
    if len(ra) >= 5 and len(rb) >= 5:
        ma, mb = float(np.median(ra)), float(np.median(rb))
        ch.latency_change = mb / ma - 1
        mw = mann_whitney(ra, rb)
        ch.p_value = mw.p_slower if ch.latency_change >= 0 else mw.p_faster
        text = f"median {ma:.3f} → {mb:.3f} ms ({100 * ch.latency_change:+.1f}%, p={ch.p_value:.1e})"
        if mw.p_slower < comp.alpha and ch.latency_change > comp.min_change:
            worse.append(f"slower: {text} (iterations of one process per run)")
        elif mw.p_faster < comp.alpha and ch.latency_change < -comp.min_change:
            better.append(f"faster: {text} (iterations of one process per run)")
        return
    # Older reports without raw timings: the p50 confidence intervals must not overlap.
    ca, cb = dig(old.latency_ms, "p50_ci"), dig(new.latency_ms, "p50_ci")
    if ch.old_p50_ms and ch.new_p50_ms and ca and cb:
        ch.latency_change = ch.new_p50_ms / ch.old_p50_ms - 1
        text = f"p50 {ch.old_p50_ms:.3f} → {ch.new_p50_ms:.3f} ms ({100 * ch.latency_change:+.1f}%, CIs disjoint)"
        if cb[0] > ca[1] and ch.latency_change > comp.min_change:
            worse.append(f"slower: {text}")
        elif cb[1] < ca[0] and ch.latency_change < -comp.min_change:
            better.append(f"faster: {text}")


def _row(c: CellChange) -> list[str]:
    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    top = "–" if c.old_top1 is None or c.new_top1 is None else f"{100 * (c.new_top1 - c.old_top1):+.1f}"
    return [c.target, c.cell, ms(c.old_p50_ms), ms(c.new_p50_ms),
            "–" if c.latency_change is None else f"{100 * c.latency_change:+.1f}%",
            "–" if c.p_value is None else f"{c.p_value:.1e}", top, c.verdict.upper() if c.verdict == "regression"
            else c.verdict, "; ".join(c.reasons)]


HEADERS = ["target", "cell", "old p50 ms", "new p50 ms", "change", "p", "Δ top-1 pt", "verdict", "why"]


def headline(comp: Comparison) -> str:
    r, i = len(comp.regressions), len(comp.improvements)
    matched = sum(1 for c in comp.changes if not c.verdict.startswith("only"))
    detect = [c.detectable for c in comp.changes if c.detectable is not None]
    if not r and not i:
        floor = f"; the smallest latency change these runs could detect: {100 * min(detect):.0f}-" \
                f"{100 * max(detect):.0f}% by cell" if detect else ""
        return (f"0 regressions, 0 improvements in {matched} matched cells: no detectable change (latency compared "
                f"over interleaving rounds, relative to the run's fp32 reference where there is one, Holm-corrected "
                f"across cells at {comp.alpha:g}{floor})")
    return (f"{r} regression{'s' * (r != 1)}, {i} improvement{'s' * (i != 1)} in {matched} matched cells "
            f"(latency: one-sided Mann-Whitney p < {comp.alpha:g} and median change > {100 * comp.min_change:g}%; "
            f"accuracy: more than {100 * comp.max_accuracy_drop:.1f} points)")


def render_text(comp: Comparison) -> str:
    """A fixed-width table for the terminal, regressions first."""
    rows = [HEADERS] + [_row(c) for c in _ordered(comp)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    return "\n".join(lines + [""] + [f"note: {n}" for n in comp.notes] + [headline(comp)])


def render_markdown(comp: Comparison) -> str:
    """compare.md: the headline, then one table row per matched cell."""
    lines = ["# edge-harness compare", "", f"- OLD: `{comp.old}`", f"- NEW: `{comp.new}`", "", headline(comp) + ".",
             "", "| " + " | ".join(HEADERS) + " |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join(x.replace("|", "/") for x in _row(c)) + " |" for c in _ordered(comp)]
    lines += [""] + [f"- note: {n}" for n in comp.notes] + [""]
    return "\n".join(lines)


def _ordered(comp: Comparison) -> list[CellChange]:
    rank = {"regression": 0, "improvement": 1, "same": 2}
    return sorted(comp.changes, key=lambda c: rank.get(c.verdict, 3))


def write_comparison(comp: Comparison, out: Path) -> Path:
    """Write compare.md (and compare.json beside it); `out` is a folder or a .md path."""
    out = Path(out)
    path = out if out.suffix == ".md" else out / "compare.md"
    write_atomic(path, render_markdown(comp))
    write_atomic(path.with_suffix(".json"), json.dumps(comp.to_dict(), indent=1))
    return path
