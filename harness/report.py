"""Markdown renderings of report.json: one per target, and a summary across targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from harness.results import Measurement, TargetReport, save_report, write_atomic


def _fmt(v: Any, spec: str = ".2f", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "–"
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def reference_cell(report: TargetReport) -> Measurement | None:
    """The fp32 reference cell the others are compared with (ONNX fp32 first)."""
    ref_variant = report.task.get("reference_variant", "fp32")
    for fmt in ("onnx", "tflite", "torch"):
        m = report.cell(ref_variant, fmt)
        if m is not None and m.ok:
            return m
    return None


def pick(report: TargetReport, max_accuracy_drop: float = 0.01) -> tuple[Measurement | None, str]:
    """The fastest measured cell whose accuracy stays within the allowed drop, with the reason."""
    ok = [m for m in report.measurements if m.ok and m.latency_ms]
    if not ok:
        return None, "no cell was measured successfully"
    ref = reference_cell(report)
    ref_top1 = _get(ref.accuracy, "top1") if ref else None
    eligible = []
    for m in ok:
        top = _get(m.accuracy, "top1")
        if ref_top1 is not None and top is not None and ref_top1 - top > max_accuracy_drop:
            continue
        eligible.append(m)
    if not eligible:
        return None, f"every measured cell loses more than {100 * max_accuracy_drop:.1f} points of accuracy"
    best = min(eligible, key=lambda m: m.latency_ms["p50"])  # type: ignore[index]
    why = f"fastest p50 ({best.latency_ms['p50']:.2f} ms) among {len(eligible)} cells"  # type: ignore[index]
    if ref_top1 is not None:
        why += f" within {100 * max_accuracy_drop:.1f} points of the fp32 reference's top-1"
    return best, why


def render_markdown(report: TargetReport) -> str:
    """The per-target Markdown report: device card, the cell table, failures and flags."""
    t = report.target
    dev = t.get("device") or {}
    lines = [f"# edge-harness report: {t.get('name')}", ""]
    lines += [f"- target: {t.get('kind')} on {t.get('host')}",
              f"- device: {dev.get('cpu_model', '?')}, {dev.get('cores', '?')} cores, {dev.get('machine', '?')}, "
              f"governor {dev.get('governor') or 'n/a'}, Python {dev.get('python', '?')}",
              f"- runtimes: {', '.join(f'{k} {v}' for k, v in (dev.get('runtimes') or {}).items()) or '?'}",
              f"- created: {report.created} (edge-harness {report.harness_version})", ""]
    task = report.task
    if task.get("dataset"):
        lines.append(f"Task: {task['dataset']} ({task.get('classes', '?')} classes, {task.get('n_test', '?')} test "
                     f"samples).")
        if "finetuned_top1" in task:
            lines.append(f"Fine-tuned from pretrained weights: top-1 {_pct(task['finetuned_top1'])}; "
                         f"baselines without transfer: " + ", ".join(
                             f"{k} {_pct(v)}" for k, v in (task.get("baselines") or {}).items()) + ".")
        lines.append("")
    lines += ["| variant | format | status | size | params | sparsity | p50 ms | p99 ms | cold start ms "
              "| peak RSS MB | top-1 | agreement | max abs diff |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in report.measurements:
        a = m.artifact or {}
        lines.append("| " + " | ".join([
            m.variant, m.format, m.status, _size(a.get("size_bytes")),
            f"{a['params']:,}" if a.get("params") else "–", _pct(a.get("sparsity")),
            _fmt(_get(m.latency_ms, "p50"), ".3f"), _fmt(_get(m.latency_ms, "p99"), ".3f"),
            _fmt(_get(m.cold_start_ms, "total"), ".1f"), _fmt(_get(m.memory_mb, "peak_rss"), ".1f"),
            _pct(_get(m.accuracy, "top1")), _pct(_get(m.accuracy, "agreement")),
            _fmt(_get(m.accuracy, "max_abs_diff"), ".2e")]) + " |")
    failed = [m for m in report.measurements if m.status != "ok"]
    if failed:
        lines += ["", "## Failed or skipped cells", ""]
        lines += [f"- {m.variant}/{m.format}: {m.status}: {m.error}" for m in failed]
    flagged = [m for m in report.measurements if m.flags]
    if flagged:
        lines += ["", "## Flags", ""]
        lines += [f"- {m.variant}/{m.format}: {'; '.join(m.flags)}" for m in flagged]
    best, why = pick(report, task.get("max_accuracy_drop", 0.01))
    lines += ["", "## Pick", "", f"**{best.variant}/{best.format}**: {why}." if best else f"Nothing to pick: {why}."]
    lines += ["", "Latency: batch 1, after warm-up, per-iteration `perf_counter_ns` on the device; p50 CI is "
              "the distribution-free 95% interval from order statistics. Cold start: model load + first "
              "inference in a fresh process. Memory: whole-process RSS from /proc/self/status.", ""]
    return "\n".join(lines)


def render_summary(reports: Iterable[TargetReport]) -> str:
    """The cross-target summary: the pick per device and a matrix of p50 per device x cell."""
    reports = list(reports)
    lines = ["# edge-harness summary", "", "| target | device | pick | p50 ms | top-1 | why |",
             "|---|---|---|---:|---:|---|"]
    cells: list[str] = []
    for r in reports:
        dev = r.target.get("device") or {}
        best, why = pick(r, r.task.get("max_accuracy_drop", 0.01))
        lines.append(f"| {r.target.get('name')} | {dev.get('cpu_model', '?')} | "
                     f"{best.key if best else '–'} | {_fmt(_get(best.latency_ms, 'p50') if best else None, '.3f')} | "
                     f"{_pct(_get(best.accuracy, 'top1') if best else None)} | {why} |")
        for m in r.measurements:
            if m.key not in cells:
                cells.append(m.key)
    lines += ["", "## p50 latency (ms) per target", "", "| cell | " + " | ".join(
        str(r.target.get("name")) for r in reports) + " |", "|---|" + "---:|" * len(reports)]
    for key in cells:
        row = []
        for r in reports:
            m = next((m for m in r.measurements if m.key == key), None)
            row.append(_fmt(_get(m.latency_ms, "p50"), ".3f") if m and m.ok else (m.status if m else "–"))
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def write_target_report(report: TargetReport, out: Path) -> Path:
    """Write OUT/<target>/report.json and its renderings; returns the folder."""
    folder = Path(out) / safe_name(str(report.target.get("name")))
    save_report(report, folder / "report.json")
    write_atomic(folder / "report.md", render_markdown(report))
    for extra in RENDERERS:
        extra(report, folder)
    return folder


def write_summary(reports: list[TargetReport], out: Path) -> Path:
    path = Path(out) / "summary.md"
    write_atomic(path, render_summary(reports))
    for extra in SUMMARY_RENDERERS:
        extra(reports, Path(out))
    return path


def safe_name(name: str) -> str:
    """A file-system-safe folder name for a target name (no separators, no dot-dot)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "target"


# More renderers (HTML, CSV) plug in here: fn(report, folder) and fn(reports, out).
RENDERERS: list[Any] = []
SUMMARY_RENDERERS: list[Any] = []
