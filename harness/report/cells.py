"""What every rendering of a report shares: the cell columns, number formats, the device card.

Markdown, HTML and CSV all read these, so the three always show the same figures.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

from harness.measure.results import Measurement, TargetReport
from harness.report.recommend import ACCURACY_RULE, TIE_BREAK, Constraints, Recommendation, recommend


def dig(d: Any, *path: str) -> Any:
    """d[path[0]][path[1]]..., or None where a level is missing."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def number(v: Any, spec: str = ".2f", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def size_text(nbytes: int | None) -> str:
    if nbytes is None:
        return "–"
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def percent(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def points(change: float | None) -> str:
    """An accuracy change (fraction) as signed percentage points."""
    return "–" if change is None else f"{100 * change:+.1f}"


def count(v: int | None) -> str:
    if not v:
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return str(v)


def times(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def interval(ci: Any, spec: str = ".2f", scale: float = 1.0) -> str:
    """A [lo, hi] interval as "lo–hi" ("lo to hi" when lo is negative), or "" when there is none."""
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    lo, hi = format(scale * ci[0] + 0.0, spec), format(scale * ci[1] + 0.0, spec)
    return f"{lo} to {hi}" if lo.startswith("-") else f"{lo}–{hi}"


def percent_ci(v: float | None, ci: Any) -> str:
    """A fraction as a percentage with its 95% CI: "88.9% (81.0–93.8)"."""
    if v is None:
        return "–"
    return percent(v) + (f" ({interval(ci, '.1f', 100)})" if interval(ci) else "")


def speedup_text(m: Measurement) -> str:
    """The speed-up with its CI; one whose CI contains 1.0 is shown as tied, not as a speed-up."""
    v = m.derived.get("speedup")
    if v is None:
        return "–"
    if m.derived.get("speedup_vs") == m.key:
        return "reference"
    ci = interval(m.derived.get("speedup_ci"))
    if m.derived.get("speedup_tied"):
        return f"≈1 (tied, {ci})" if ci else f"{v:.2f}× (tied)"
    return f"{v:.2f}×" + (f" ({ci})" if ci else "")


def ratio_text(r: float | None, ci: Any) -> str:
    """A latency ratio with its CI: "1.42× (1.38–1.47)"; "pick" for the pick against itself."""
    if r is None:
        return "–"
    if ci and ci[0] == ci[1] == r == 1.0:
        return "pick"
    return f"{r:.2f}×" + (f" ({interval(ci)})" if interval(ci) else "")


def ratio_to_pick_text(m: Measurement) -> str:
    """p50 over the pick's p50 with its CI, as stored in report.json by the report stage."""
    return ratio_text(dig(m.latency_ms, "ratio_to_pick"), dig(m.latency_ms, "ratio_to_pick_ci"))


def tie_lines(rec: Recommendation) -> list[str]:
    """The tie and the rules, in sentences: what Markdown and HTML print under the pick."""
    if rec.pick is None:
        return []
    lines = []
    if rec.tied:
        lines.append(f"Tied with {rec.pick.key} on latency (p50 ratio CI contains 1): "
                     f"{', '.join(m.key for m in rec.tied)}.")
    else:
        lines.append(f"No other cell that meets the limits is tied with {rec.pick.key} on latency.")
    lines.append(f"Tie rule: {TIE_BREAK}" + (f"; this tie was broken by {rec.tie_broken_by}." if rec.tie_broken_by
                                             else "."))
    lines.append(f"Accuracy rule: {ACCURACY_RULE}.")
    return lines


def _parity(m: Measurement) -> tuple[Any, str]:
    par = dig(m.artifact, "parity")
    if not par:
        return None, "–"
    mad = par.get("max_abs_diff")
    return mad, ("ok" if par.get("passed", True) else "FAILED") + (f" ({mad:.1e})" if mad is not None else "")


# (header, value for sorting/CSV, text); value None sorts last. One list for Markdown, HTML and CSV.
Column = tuple[str, Callable[[Measurement], Any], Callable[[Measurement], str]]
COLUMNS: list[Column] = [
    ("variant", lambda m: m.variant, lambda m: m.variant),
    ("format", lambda m: m.format, lambda m: m.format),
    ("status", lambda m: m.status, lambda m: m.status),
    ("size", lambda m: dig(m.artifact, "size_bytes"), lambda m: size_text(dig(m.artifact, "size_bytes"))),
    ("params", lambda m: dig(m.artifact, "params"), lambda m: count(dig(m.artifact, "params"))),
    ("MACs", lambda m: dig(m.artifact, "macs"), lambda m: count(dig(m.artifact, "macs"))),
    ("sparsity", lambda m: dig(m.artifact, "sparsity"), lambda m: percent(dig(m.artifact, "sparsity"))),
    ("compression", lambda m: m.derived.get("compression_ratio"), lambda m: times(m.derived.get("compression_ratio"))),
    ("p50 ms", lambda m: dig(m.latency_ms, "p50"), lambda m: number(dig(m.latency_ms, "p50"), ".3f")),
    ("p99 ms", lambda m: dig(m.latency_ms, "p99"), lambda m: number(dig(m.latency_ms, "p99"), ".3f")),
    ("vs pick (95% CI)", lambda m: dig(m.latency_ms, "ratio_to_pick"), ratio_to_pick_text),
    ("speed-up (95% CI)", lambda m: m.derived.get("speedup"), speedup_text),
    ("cold start ms", lambda m: dig(m.cold_start_ms, "total"), lambda m: number(dig(m.cold_start_ms, "total"), ".1f")),
    ("peak RSS MB", lambda m: dig(m.memory_mb, "peak_rss"), lambda m: number(dig(m.memory_mb, "peak_rss"), ".1f")),
    ("top-1 (95% CI)", lambda m: dig(m.accuracy, "top1"),
     lambda m: percent_ci(dig(m.accuracy, "top1"), dig(m.accuracy, "top1_ci"))),
    ("Δ top-1 pt", lambda m: m.derived.get("top1_change"), lambda m: points(m.derived.get("top1_change"))),
    ("top-1 shifted (95% CI)", lambda m: dig(m.accuracy, "top1_shifted"),
     lambda m: percent_ci(dig(m.accuracy, "top1_shifted"), dig(m.accuracy, "top1_shifted_ci"))),
    ("Δ shifted pt", lambda m: m.derived.get("top1_change_shifted"),
     lambda m: points(m.derived.get("top1_change_shifted"))),
    ("agreement (95% CI)", lambda m: dig(m.accuracy, "agreement"),
     lambda m: percent_ci(dig(m.accuracy, "agreement"), dig(m.accuracy, "agreement_ci"))),
    ("parity", lambda m: _parity(m)[0], lambda m: _parity(m)[1]),
    ("flags", lambda m: "; ".join(m.flags), lambda m: "; ".join(m.flags)),
]
MARKDOWN_COLUMNS = [c for c in COLUMNS if c[0] not in ("flags", "parity")]  # listed under the table instead


def reference_cell(report: TargetReport) -> Measurement | None:
    """The fp32 reference cell the others are compared with (ONNX fp32 first)."""
    ref_variant = report.task.get("reference_variant", "fp32")
    for fmt in ("onnx", "tflite", "torch"):
        m = report.cell(ref_variant, fmt)
        if m is not None and m.ok:
            return m
    return None


def pick(report: TargetReport, constraints: Constraints | dict[str, Any] | float | None = None
         ) -> tuple[Measurement | None, str]:
    """The recommended cell under the report's constraints (a float overrides max_accuracy_drop), and why."""
    if isinstance(constraints, (int, float)):
        constraints = {"max_accuracy_drop": float(constraints)}
    rec = recommend(report, constraints)
    return rec.pick, rec.reason


def temperatures(report: TargetReport) -> tuple[dict[str, float], dict[str, float]]:
    """Thermal zones before the first measured cell and after the last one: throttling shows here."""
    states = [m.device_state for m in report.measurements if m.device_state]
    before = next((s["before"]["temperature_c"] for s in states if dig(s, "before", "temperature_c")), None)
    after = next((s["after"]["temperature_c"] for s in reversed(states) if dig(s, "after", "temperature_c")), None)
    return before or {}, after or {}


def device_card(report: TargetReport) -> list[tuple[str, str]]:
    """The device card as (label, text) pairs: CPU, cores, governor, runtimes, temperatures."""
    t = report.target
    dev = t.get("device") or {}
    before, after = temperatures(report)
    zones = sorted(set(before) | set(after))
    temp = ", ".join(f"{z} {number(before.get(z), '.1f')} → {number(after.get(z), '.1f')} °C" for z in zones)
    card = [("target", f"{t.get('name')} ({t.get('kind')} on {t.get('host')})"),
            ("CPU", f"{dev.get('cpu_model', '?')} ({dev.get('machine', '?')})"),
            ("cores", f"{dev.get('cores', '?')}" + (f", {len(dev['affinity'])} usable" if dev.get("affinity") else "")),
            ("memory", f"{dev['mem_total_mb']:.0f} MB" if dev.get("mem_total_mb") else "?"),
            ("governor", str(dev.get("governor") or "n/a")),
            ("OS", str(dev.get("os", "?"))),
            ("Python", str(dev.get("python", "?"))),
            ("runtimes", ", ".join(f"{k} {v}" for k, v in (dev.get("runtimes") or {}).items()) or "?"),
            ("temperature before → after", temp or "not readable"),
            ("created", f"{report.created} (edge-harness {report.harness_version})")]
    if dev.get("throttled"):
        card.insert(-1, ("throttled (vcgencmd)", str(dev["throttled"])))
    if t.get("error"):
        card.insert(1, ("probe error", str(t["error"])))
    return card


def task_line(report: TargetReport) -> str | None:
    task = report.task
    if not task.get("dataset"):
        return None
    line = (f"Task: {task['dataset']} ({task.get('classes', '?')} classes, {task.get('n_test', '?')} test samples); "
            f"fp32 reference top-1 {percent(task.get('reference_top1'))}")
    if task.get("reference_top1_shifted") is not None:
        line += f", on shifted data {percent(task['reference_top1_shifted'])}"
    if "finetuned_top1" in task:
        base = ", ".join(f"{k} {percent(v)}" for k, v in (task.get("baselines") or {}).items())
        pretrained = (task.get("training") or {}).get("pretrained", True)
        line += f". {'Fine-tuned from pretrained weights' if pretrained else 'Trained from random weights'}: " \
                f"{percent(task['finetuned_top1'])}"
        line += f"; without transfer: {base}" if base and pretrained else ""
    if (task.get("training") or {}).get("text"):
        line += f". Training: {task['training']['text']}"
    return line + "."


def chance_warning(report: TargetReport) -> str | None:
    """The warning that the reference is not clearly above chance (binomial test), or None."""
    return (report.task.get("chance") or {}).get("warning")


SENSITIVITY_COLUMNS = ("layer", "kind", "weights", "SQNR dB", "agreement", "Δ top-1 pt", "kept float")


def sensitivity_rows(report: TargetReport) -> list[tuple[str, ...]]:
    """Per-layer int8 sensitivity (each layer quantized alone), most sensitive first, as display strings."""
    rows = (report.task.get("sensitivity") or {}).get("rows") or []
    return [(r["layer"], r["kind"], count(r.get("params")), f"{r['sqnr_db']:.1f}", f"{r['agreement']:.3f}",
             points(0.0 - r["top1_drop"]), "yes" if r.get("kept_float") else "") for r in rows]


SENSITIVITY_NOTE = ("Each conv/linear layer quantized alone (int8 weights per channel, uint8 input per tensor over "
                    "the calibration range), all others float, on validation samples; SQNR of the logits against "
                    "fp32 (lower: int8 hurts more). The mixed-precision variant keeps the layers marked float.")


FOOTNOTE = ("Latency: batch 1, after warm-up, per-iteration `perf_counter_ns` on the device; p50 CI is the "
            "distribution-free 95% interval from order statistics. *vs pick* and *speed-up* are p50 ratios whose "
            "95% CI comes from the paired interleaved blocks (else from the two p50 CIs); a speed-up whose CI "
            "contains 1 is shown as tied. Cold start: runtime import + model load + first inference in a fresh "
            "process. Memory: whole-process peak RSS (VmHWM). Top-1 and agreement CIs are Wilson 95% intervals. "
            "Δ top-1: percentage points against the fp32 reference; a cell is refused by the accuracy limit only "
            "when the 95% CI of its paired drop (same samples) lies above the limit. Compression and speed-up are "
            "against the fp32 reference in the same format.")


def cell_keys(reports: list[TargetReport]) -> list[str]:
    """Every variant/format key across reports, in first-seen order."""
    keys: list[str] = []
    for r in reports:
        keys += [m.key for m in r.measurements if m.key not in keys]
    return keys


def safe_name(name: str) -> str:
    """A file-system-safe folder name for a target name (no separators, no dot-dot, at most 80 characters).

    A name that had to be changed gets a short hash of the original, so two names that differ only in the
    changed characters ("pi 4" and "pi/4") never share a folder.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")[:80]
    if cleaned == name and cleaned:
        return cleaned
    return f"{cleaned or 'target'}-{hashlib.sha256(name.encode(errors='surrogatepass')).hexdigest()[:8]}"


