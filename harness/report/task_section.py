"""The report's task section: the metric that decides (per cell, against the fp32 reference, with its paired CI),
the confusion matrix where the metric keeps one, what input was timed, the resolution, and the test split's size.
"""

from __future__ import annotations

from html import escape
from typing import Any

from harness.measure.results import TargetReport
from harness.measure.task_metrics import drop_amount


def _value(v: Any) -> str:
    return "–" if v is None else f"{v:.4g}"


def task_markdown(report: TargetReport) -> list[str]:
    """Markdown lines (empty for reports from before configurable metrics)."""
    task = report.task
    mc = task.get("metric")
    if not mc:
        return []
    name = mc.get("key") or mc["name"]
    lines = ["", "## Task and metric", "",
             f"Metric: **{name}** ({mc['name']}; {'higher' if mc['higher_is_better'] else 'lower'} is better); it "
             f"decides the accuracy limit and the pick. Reference (fp32 torch): {_value(mc.get('reference'))}."]
    if timed := task.get("timed_input"):
        if "seq_len" in timed:
            lines.append(f"Timed input: the {timed['rule']}-length test sample, {timed['seq_len']} tokens (test "
                         f"lengths {timed['lengths']['min']}–{timed['lengths']['max']}; stored padded to "
                         f"{timed['padded_len']}: fixed-shape formats are timed at that length; MACs are counted "
                         f"at it).")
    if res := task.get("resolution"):
        h, w = res["image_size"]
        lines.append(f"Resolution: {h}x{w} ({res['from']}); trained, evaluated and timed at it."
                     + (f" Note: {res['note']}." if res.get("note") else ""))
    if (split := task.get("test_split")) and split.get("warning"):
        lines.append(f"**Test split:** {split['warning']}.")
    lines += ["", "| cell | " + name + " | drop vs fp32 | drop 95% CI | basis | agreement |",
              "|---|---:|---:|---:|---|---:|"]
    for m in report.measurements:
        met = (m.accuracy or {}).get("metric")
        if not m.ok or not met:
            continue
        ci = met.get("drop_ci")
        lines.append(f"| {m.key} | {_value(met.get('value'))} | "
                     f"{drop_amount(met['drop'], mc) if met.get('drop') is not None else '–'} | "
                     f"{f'{drop_amount(ci[0], mc)} to {drop_amount(ci[1], mc)}' if ci else '–'} | "
                     f"{met.get('basis') or '–'} | {_value((m.accuracy or {}).get('agreement'))} |")
    lines += confusion_markdown(report)
    return lines


def confusion_markdown(report: TargetReport) -> list[str]:
    """Per-class recall and the confusion matrix (rows: true class) of each cell whose metric keeps one."""
    names = report.task.get("class_names") or []
    out: list[str] = []
    for m in report.measurements:
        result = ((m.accuracy or {}).get("metric") or {}).get("result") or {}
        cm = result.get("confusion_matrix")
        if not m.ok or not cm:
            continue
        labels = [names[i] if i < len(names) else str(i) for i in range(len(cm))]
        out += ["", f"Confusion matrix, {m.key} (rows: true class; recall per class at the right):", "",
                "| true \\ predicted | " + " | ".join(labels) + " | recall |",
                "|---|" + "---:|" * (len(labels) + 1)]
        recalls = result.get("per_class_recall") or [None] * len(cm)
        for label, row, r in zip(labels, cm, recalls):
            out.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {_value(r)} |")
    return out


def task_block(report: TargetReport) -> str:
    """The same section as an HTML card: paragraphs, then the tables (Markdown tables turned into HTML)."""
    lines = task_markdown(report)
    if not lines:
        return ""
    parts, table = [], []  # type: ignore[var-annotated]
    for line in lines[3:] + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if table:
            head, *rows = table
            parts.append("<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                         + "</tbody></table>")
            table = []
        if line:
            parts.append(f"<p>{escape(line.replace('**', ''))}</p>")
    return f'<section class="card"><h2>Task and metric</h2>{"".join(parts)}</section>'
