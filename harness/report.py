"""Markdown renderings of report.json (one per target, a summary across targets) and the shared columns.

The column list and the device card here are shared with the HTML and CSV renderings, so the three
always show the same figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from harness.recommend import Constraints, Recommendation, drop_text, recommend
from harness.results import Measurement, TargetReport, save_report, write_atomic


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
    ("speed-up", lambda m: m.derived.get("speedup"), lambda m: times(m.derived.get("speedup"))),
    ("cold start ms", lambda m: dig(m.cold_start_ms, "total"), lambda m: number(dig(m.cold_start_ms, "total"), ".1f")),
    ("peak RSS MB", lambda m: dig(m.memory_mb, "peak_rss"), lambda m: number(dig(m.memory_mb, "peak_rss"), ".1f")),
    ("top-1", lambda m: dig(m.accuracy, "top1"), lambda m: percent(dig(m.accuracy, "top1"))),
    ("Δ top-1 pt", lambda m: m.derived.get("top1_change"), lambda m: points(m.derived.get("top1_change"))),
    ("top-1 shifted", lambda m: dig(m.accuracy, "top1_shifted"), lambda m: percent(dig(m.accuracy, "top1_shifted"))),
    ("Δ shifted pt", lambda m: m.derived.get("top1_change_shifted"),
     lambda m: points(m.derived.get("top1_change_shifted"))),
    ("agreement", lambda m: dig(m.accuracy, "agreement"), lambda m: percent(dig(m.accuracy, "agreement"))),
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
        line += f". Fine-tuned from pretrained weights: {percent(task['finetuned_top1'])}"
        line += f"; without transfer: {base}" if base else ""
    return line + "."


def recommendation_markdown(rec: Recommendation) -> list[str]:
    """The pick (or the plain statement that nothing fits) and every cell's check, as Markdown."""
    limits = ", ".join(rec.constraints.describe()) or "none"
    lines = ["## Recommendation", "", f"Limits: {limits}.", ""]
    lines.append(f"**Ship {rec.pick.key}.** {rec.reason}." if rec.pick else f"**No recommendation.** {rec.reason}.")
    lines += ["", "| cell | p50 ms | top-1 drop pt | size MB | peak RSS MB | verdict |",
              "|---|---:|---:|---:|---:|---|"]
    for c in sorted(rec.checks, key=lambda c: (not c.meets, c.status != "ok", c.p50_ms or 0.0)):
        mark = " ★" if rec.pick and c.key == rec.pick.key else ""
        lines.append(f"| {c.key}{mark} | {number(c.p50_ms, '.3f')} | {drop_text(c.top1_drop)} | "
                     f"{number(c.size_mb, '.2f')} | {number(c.peak_rss_mb, '.1f')} | {c.verdict} |")
    return lines


def render_markdown(report: TargetReport, rec: Recommendation | None = None) -> str:
    """The per-target Markdown report: device card, the cell table, the recommendation, failures and flags."""
    rec = rec or recommend(report)
    lines = [f"# edge-harness report: {report.target.get('name')}", ""]
    lines += [f"- {label}: {text}" for label, text in device_card(report)] + [""]
    if task := task_line(report):
        lines += [task, ""]
    lines += recommendation_markdown(rec) + ["", "## Cells", ""]
    lines += ["| " + " | ".join(c[0] for c in MARKDOWN_COLUMNS) + " |",
              "|" + "|".join("---" if i < 3 else "---:" for i in range(len(MARKDOWN_COLUMNS))) + "|"]
    for m in report.measurements:
        lines.append("| " + " | ".join(c[2](m).replace("|", "/") for c in MARKDOWN_COLUMNS) + " |")
    failed = [m for m in report.measurements if m.status != "ok"]
    if failed:
        lines += ["", "## Failed or skipped cells", ""]
        lines += [f"- {m.key}: {m.status}: {m.error}" for m in failed]
    flagged = [m for m in report.measurements if m.flags]
    if flagged:
        lines += ["", "## Flags", ""]
        lines += [f"- {m.key}: {'; '.join(m.flags)}" for m in flagged]
    stab = report.target.get("stability") or {}
    if stab.get("warning"):
        lines += ["", "## Device stability", "", f"**Warning:** {stab['warning']}."]
    elif stab.get("stable"):
        lines += ["", "## Device stability", "", f"{stab['cell']} timed again after all cells: p50 "
                  f"{stab['p50_first_ms']:.3f} -> {stab['p50_again_ms']:.3f} ms ({100 * stab['change']:+.1f}%), "
                  f"within ±{100 * 0.10:.0f}%: the device ran at the same speed throughout."]
    lines += rounds_markdown(report)
    lines += threads_sweep_markdown(report)
    lines += memory_markdown(report)
    lines += ["", FOOTNOTE, ""]
    return "\n".join(lines)


def rounds_markdown(report: TargetReport) -> list[str]:
    """p50 of each interleaved round, when the run timed every cell more than once."""
    rows = [m for m in report.measurements if len(m.settings.get("round_p50_ms") or []) > 1]
    if not rows:
        return []
    n = max(len(m.settings["round_p50_ms"]) for m in rows)
    lines = ["", "## p50 (ms) per round (cells re-timed in alternating order; the table above pools all rounds)",
             "", "| cell | " + " | ".join(f"round {i + 1}" for i in range(n)) + " | spread |",
             "|---|" + "---:|" * (n + 1)]
    for m in rows:
        r = m.settings["round_p50_ms"]
        spread = f"{100 * (max(r) / min(r) - 1):.0f}%" if min(r) > 0 else "–"
        lines.append(f"| {m.key} | " + " | ".join(f"{v:.3f}" for v in r) + " |" * (n - len(r)) + f" | {spread} |")
    return lines


def threads_sweep_markdown(report: TargetReport) -> list[str]:
    """p50 against thread count, one row per cell, when the run swept threads."""
    swept = [m for m in report.measurements if m.threads_sweep]
    if not swept:
        return []
    counts = sorted({r["threads"] for m in swept for r in m.threads_sweep or []})
    lines = ["", "## p50 (ms) against thread count", "", "| cell | " + " | ".join(f"{n} thr" for n in counts) + " |",
             "|---|" + "---:|" * len(counts)]
    for m in swept:
        by = {r["threads"]: r for r in m.threads_sweep or []}
        vals = [f"{by[n]['p50']:.3f}" if n in by and "p50" in by[n] else "failed" if n in by else "–" for n in counts]
        lines.append(f"| {m.key} | " + " | ".join(vals) + " |")
    return lines


def memory_markdown(report: TargetReport) -> list[str]:
    """The memory breakdown, measured the same way for every runtime."""
    rows = [m for m in report.measurements if m.ok and m.memory_mb]
    if not rows:
        return []
    lines = ["", "## Memory (MB)", "", "| cell | model file | RSS before load | after load | load adds | "
             "inference adds | peak RSS | runtime's own |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in rows:
        mem = m.memory_mb or {}
        own = ", ".join(f"{k} {v:.1f}" for k, v in mem.items() if k.startswith("gpu_") and isinstance(v, float))
        size = (m.artifact or {}).get("size_bytes")
        cells = [size / 2**20 if size else None, mem.get("rss_before_load"), mem.get("rss_after_load"),
                 mem.get("load_increase"), mem.get("inference_increase"), mem.get("peak_rss")]
        lines.append(f"| {m.key} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in cells)
                     + f" | {own or '–'} |")
    method = next((m.memory_mb.get("method") for m in rows if m.memory_mb and m.memory_mb.get("method")), None)
    if method:
        lines += ["", f"Method: {method}. *Load adds* is RSS after loading the model minus before; *inference "
                      "adds* is RSS after the first inference minus after load (the runtime's arena and buffers)."]
    return lines


FOOTNOTE = ("Latency: batch 1, after warm-up, per-iteration `perf_counter_ns` on the device; p50 CI is the "
            "distribution-free 95% interval from order statistics. Cold start: runtime import + model load + "
            "first inference in a fresh process. Memory: whole-process peak RSS (VmHWM). Δ top-1: percentage "
            "points against the fp32 reference; compression and speed-up are against the fp32 reference in the "
            "same format.")


def cell_keys(reports: list[TargetReport]) -> list[str]:
    """Every variant/format key across reports, in first-seen order."""
    keys: list[str] = []
    for r in reports:
        keys += [m.key for m in r.measurements if m.key not in keys]
    return keys


def render_summary(reports: Iterable[TargetReport]) -> str:
    """The cross-target summary: the recommendation per device and a matrix of p50 per device x cell."""
    reports = list(reports)
    lines = ["# edge-harness summary", "", "| target | device | recommended | p50 ms | top-1 | size | limits | why |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in reports:
        rec = recommend(r)
        b = rec.pick
        lines.append(f"| {r.target.get('name')} | {dig(r.target, 'device', 'cpu_model') or '?'} | "
                     f"{b.key if b else '**none**'} | {number(dig(b.latency_ms, 'p50') if b else None, '.3f')} | "
                     f"{percent(dig(b.accuracy, 'top1') if b else None)} | "
                     f"{size_text(dig(b.artifact, 'size_bytes') if b else None)} | "
                     f"{', '.join(rec.constraints.describe()) or '–'} | {rec.reason.replace('|', '/')} |")
    names = [str(r.target.get("name")) for r in reports]
    lines += ["", "## p50 latency (ms) per target", "", "| cell | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(reports)]
    for key in cell_keys(reports):
        row = []
        for r in reports:
            m = next((m for m in r.measurements if m.key == key), None)
            row.append(number(dig(m.latency_ms, "p50"), ".3f") if m and m.ok else (m.status if m else "–"))
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines += ["", "Every cell of every target, flattened: `cells.csv`. Per-target details: `<target>/report.html`.", ""]
    return "\n".join(lines)


def render_into(report: TargetReport, folder: Path, save_json: bool = True) -> Path:
    """Write report.json (unless told not to) and every rendering of it into `folder`."""
    folder = Path(folder)
    if save_json:
        save_report(report, folder / "report.json")
    write_atomic(folder / "report.md", render_markdown(report))
    for extra in RENDERERS:
        extra(report, folder)
    return folder


def write_target_report(report: TargetReport, out: Path) -> Path:
    """Write OUT/<target>/report.json and its renderings; returns the folder."""
    return render_into(report, Path(out) / safe_name(str(report.target.get("name"))))


def write_summary(reports: list[TargetReport], out: Path) -> Path:
    """Write OUT/summary.md and the other cross-target renderings (summary.html, cells.csv)."""
    path = Path(out) / "summary.md"
    write_atomic(path, render_summary(reports))
    for extra in SUMMARY_RENDERERS:
        extra(reports, Path(out))
    return path


def safe_name(name: str) -> str:
    """A file-system-safe folder name for a target name (no separators, no dot-dot)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "target"


def _html(report: TargetReport, folder: Path) -> None:
    from harness.html import write_target_html

    write_target_html(report, folder)


def _summary_html(reports: list[TargetReport], out: Path) -> None:
    from harness.html import write_summary_html

    write_summary_html(reports, out)


def _csv(reports: list[TargetReport], out: Path) -> None:
    from harness.csv_export import write_cells_csv

    write_cells_csv(reports, out / "cells.csv")


# Renderers beside report.md / summary.md: fn(report, folder) and fn(reports, out). Imported lazily (no cycles).
RENDERERS: list[Any] = [_html]
SUMMARY_RENDERERS: list[Any] = [_summary_html, _csv]
