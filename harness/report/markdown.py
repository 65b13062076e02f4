"""Markdown renderings of report.json: one per target, and a summary across targets."""

from __future__ import annotations

from typing import Iterable

from harness.measure.results import TargetReport
from harness.report.cells import (
    FOOTNOTE,
    MARKDOWN_COLUMNS,
    SENSITIVITY_COLUMNS,
    SENSITIVITY_NOTE,
    cell_keys,
    chance_warning,
    device_card,
    dig,
    interval,
    number,
    percent_ci,
    ratio_text,
    sensitivity_rows,
    size_text,
    task_line,
    tie_lines,
)
from harness.report.decision_words import drop_text
from harness.report.profiles import op_profile_markdown
from harness.report.recommend import Recommendation, recommend
from harness.report.task_section import task_markdown


def recommendation_markdown(rec: Recommendation) -> list[str]:
    """The pick (or the plain statement that nothing fits) and every cell's check, as Markdown."""
    limits = ", ".join(rec.constraints.describe()) or "none"
    lines = ["## Recommendation", "", f"Limits: {limits}.", ""]
    lines.append(f"**Ship {rec.pick.key}.** {rec.reason}." if rec.pick else f"**No recommendation.** {rec.reason}.")
    if rec.pick:
        lines += [""] + [f"- {line}" for line in tie_lines(rec)]
    lines += ["", "| cell | p50 ms | top-1 drop pt | drop 95% CI pt | vs pick (95% CI) | size MB | peak RSS MB "
              "| verdict |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in sorted(rec.checks, key=lambda c: (not c.meets, c.status != "ok", c.p50_ms or 0.0)):
        mark = " ★" if rec.pick and c.key == rec.pick.key else (" (tied)" if c.tied else "")
        lines.append(f"| {c.key}{mark} | {number(c.p50_ms, '.3f')} | {drop_text(c.top1_drop)} | "
                     f"{interval(c.drop_ci, '.1f', 100) or '–'} | {ratio_text(c.ratio_to_pick, c.ratio_to_pick_ci)} | "
                     f"{number(c.size_mb, '.2f')} | {number(c.peak_rss_mb, '.1f')} | {c.verdict} |")
    return lines


def render_markdown(report: TargetReport, rec: Recommendation | None = None) -> str:
    """The per-target Markdown report: device card, the cell table, the recommendation, failures and flags."""
    rec = rec or recommend(report)
    lines = [f"# edge-harness report: {report.target.get('name')}", ""]
    if warning := chance_warning(report):
        lines += [f"> **Warning:** {warning}.", ""]
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
        how = stab.get("basis") or "timed again after all cells"
        lines += ["", "## Device stability", "", f"{stab['cell']} ({how}): p50 "
                  f"{stab['p50_first_ms']:.3f} -> {stab['p50_again_ms']:.3f} ms ({100 * stab['change']:+.1f}%), "
                  f"within ±{100 * 0.10:.0f}%: the device ran at the same speed throughout."]
    lines += rounds_markdown(report)
    lines += threads_sweep_markdown(report)
    lines += batch_sweep_markdown(report)
    lines += runtime_settings_markdown(report)
    lines += op_profile_markdown(report)
    lines += memory_markdown(report)
    lines += sensitivity_markdown(report)
    lines += task_markdown(report)
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


def batch_sweep_markdown(report: TargetReport) -> list[str]:
    """p50 and throughput against batch size, one row per cell, when the run swept batch sizes."""
    swept = [m for m in report.measurements if m.batch_sweep]
    if not swept:
        return []
    sizes = sorted({r["batch"] for m in swept for r in m.batch_sweep or []})
    lines = ["", "## p50 (ms) and items/s against batch size", "",
             "| cell | " + " | ".join(f"batch {n}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for m in swept:
        by = {r["batch"]: r for r in m.batch_sweep or []}
        vals = [f"{by[n]['p50']:.3f} ms, {by[n]['items_per_s']:.1f}/s" if n in by and by[n].get("items_per_s")
                else "failed" if n in by else "–" for n in sizes]
        lines.append(f"| {m.key} | " + " | ".join(vals) + " |")
    return lines


RUNTIME_SETTING_KEYS = ("providers", "graph_optimization_level", "xnnpack", "delegate", "delegate_options", "batch")


def runtime_settings_markdown(report: TargetReport) -> list[str]:
    """The runtime and the options in force per cell, as the runner applied them."""
    rows = [m for m in report.measurements if m.ok and m.settings.get("runtime")]
    if not rows:
        return []
    lines = ["", "## Runtime settings", "", "| cell | runtime | threads | options |", "|---|---|---:|---|"]
    for m in rows:
        st = m.settings
        opts = "; ".join(f"{k} {', '.join(map(str, st[k])) if isinstance(st[k], list) else st[k]}"
                         for k in RUNTIME_SETTING_KEYS if st.get(k) is not None)
        lines.append(f"| {m.key} | {st.get('runtime')} {st.get('runtime_version') or ''} | {st.get('threads')} | "
                     f"{opts or '–'} |")
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


def sensitivity_markdown(report: TargetReport) -> list[str]:
    """The per-layer int8 sensitivity table, when a mixed-precision variant measured it."""
    rows = sensitivity_rows(report)
    if not rows:
        return []
    variant = (report.task.get("sensitivity") or {}).get("variant")
    lines = ["", f"## Per-layer int8 sensitivity (variant {variant})", "", SENSITIVITY_NOTE, "",
             "| " + " | ".join(SENSITIVITY_COLUMNS) + " |", "|---|---|" + "---:|" * 4 + "---|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def render_summary(reports: Iterable[TargetReport]) -> str:
    """The cross-target summary: the recommendation per device and a matrix of p50 per device x cell."""
    reports = list(reports)
    lines = ["# edge-harness summary", "", "| target | device | recommended | p50 ms | tied with it | top-1 (95% CI) | "
             "size | limits | why |", "|---|---|---|---:|---|---:|---:|---|---|"]
    for r in reports:
        rec = recommend(r)
        b = rec.pick
        lines.append(f"| {r.target.get('name')} | {dig(r.target, 'device', 'cpu_model') or '?'} | "
                     f"{b.key if b else '**none**'} | {number(dig(b.latency_ms, 'p50') if b else None, '.3f')} | "
                     f"{', '.join(m.key for m in rec.tied) or '–'} | "
                     f"{percent_ci(dig(b.accuracy, 'top1'), dig(b.accuracy, 'top1_ci')) if b else '–'} | "
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


