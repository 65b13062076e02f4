"""Self-contained HTML renderings (report.html per target, summary.html across targets) with inline SVG plots.

No network: styles, the table-sorting script and the plots are all inline; plots are SVG drawn here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from harness.measure.results import TargetReport, write_atomic
from harness.report.cells import (
    COLUMNS,
    FOOTNOTE,
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
    safe_name,
    sensitivity_rows,
    size_text,
    task_line,
    tie_lines,
)
from harness.report.decision_words import drop_text
from harness.report.plots import accuracy_scatter, cell_of, device_dots, esc, has_p50, latency_boxes, size_bars
from harness.report.profiles import op_profile_block
from harness.report.recommend import Recommendation, recommend
from harness.report.task_section import task_block


# ----------------------------------------------------------------------------------------------- pages
def cells_table(report: TargetReport, rec: Recommendation) -> str:
    numeric = {h for h, get, _ in COLUMNS if any(isinstance(get(m), (int, float)) and not isinstance(get(m), bool)
                                                  for m in report.measurements)}
    head = "".join(f'<th data-type="{"num" if h in numeric else "text"}" title="click to sort">{esc(h)}</th>'
                   for h, _, _ in COLUMNS)
    rows = []
    for m in report.measurements:
        tds = []
        for h, get, text in COLUMNS:
            v = get(m)
            inner = esc(text(m))
            if h == "status" and m.error:
                inner += f'<div class="err">{esc(m.error)}</div>'
            tds.append(f'<td data-v="{esc("" if v is None else v)}">{inner}</td>')
        cls = "picked" if rec.pick is m else ("failed" if not m.ok else "")
        rows.append(f'<tr class="{cls}" data-cell="{esc(m.key)}">{"".join(tds)}</tr>')
    return (f'<div class="scroll"><table id="cells" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def recommendation_block(rec: Recommendation) -> str:
    limits = ", ".join(rec.constraints.describe()) or "none"
    title = f"Ship {rec.pick.key}" if rec.pick else "No cell meets every limit"
    rows = "".join(
        f'<tr class="{"meets" if c.meets else ("failed" if c.status != "ok" else "misses")}'
        f'{" tied" if c.tied else ""}"><td>{esc(c.key)}'
        f'{" ★" if rec.pick and rec.pick.key == c.key else (" (tied)" if c.tied else "")}</td>'
        f'<td>{number(c.p50_ms, ".3f")}</td><td>{drop_text(c.top1_drop)}</td>'
        f'<td>{interval(c.drop_ci, ".1f", 100) or "–"}</td><td>{ratio_text(c.ratio_to_pick, c.ratio_to_pick_ci)}</td>'
        f'<td>{number(c.size_mb, ".2f")}</td><td>{number(c.peak_rss_mb, ".1f")}</td><td>{esc(c.verdict)}</td></tr>'
        for c in sorted(rec.checks, key=lambda c: (not c.meets, c.status != "ok", c.p50_ms or 0.0)))
    rules = "".join(f"<li>{esc(line)}</li>" for line in tie_lines(rec))
    return (f'<section class="card rec {"ok" if rec.pick else "none"}" id="recommendation"><h2>{esc(title)}</h2>'
            f'<p class="limits">Limits: {esc(limits)}</p><p class="reason">{esc(rec.reason)}.</p>'
            f'{f"<ul class=note>{rules}</ul>" if rules else ""}'
            f'<details open><summary>Reasoning per cell</summary><table class="checks"><thead><tr><th>cell</th>'
            f'<th>p50 ms</th><th>top-1 drop pt</th><th>drop 95% CI pt</th><th>vs pick (95% CI)</th><th>size MB</th>'
            f'<th>peak RSS MB</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table></details></section>')


def lineage_block(report: TargetReport) -> str:
    items = []
    for m in report.measurements:
        a = m.artifact or {}
        lin = a.get("lineage") or {}
        head = ", ".join(str(x) for x in (lin.get("recipe"), lin.get("precision") or a.get("precision")) if x)
        detail = {"lineage": lin, "artifact": {k: a.get(k) for k in ("path", "sha256", "size_bytes")},
                  "parity": a.get("parity"), "settings": m.settings}
        items.append(f'<details class="lineage"><summary><b>{esc(m.key)}</b> {esc(head)} '
                     f'<code>{esc(str(a.get("sha256") or "")[:12])}</code></summary>'
                     f'<pre>{esc(json.dumps(detail, indent=1, default=str))}</pre></details>')
    return "".join(items)


def sensitivity_block(report: TargetReport) -> str:
    """The per-layer int8 sensitivity table as a card, or "" when no variant measured it."""
    rows = sensitivity_rows(report)
    if not rows:
        return ""
    head = "".join(f"<th>{esc(c)}</th>" for c in SENSITIVITY_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in rows)
    return (f'<section class="card"><h2>Per-layer int8 sensitivity</h2><p class="note">{esc(SENSITIVITY_NOTE)}</p>'
            f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>')


def render_target_html(report: TargetReport, rec: Recommendation | None = None) -> str:
    """The per-target page: device card, recommendation, sortable table, plots, lineage."""
    rec = rec or recommend(report)
    name = str(report.target.get("name"))
    card = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in device_card(report))
    task = task_line(report)
    warning = (report.target.get("stability") or {}).get("warning")
    stab = f'<p style="color:#b45309"><b>Warning:</b> {esc(warning)}.</p>' if warning else ""
    chance = chance_warning(report)
    body = (f'<h1>edge-harness report: {esc(name)}</h1>'
            + (f'<p class="card" style="color:#b91c1c"><b>Warning:</b> {esc(chance)}.</p>' if chance else "")
            + f'<section class="card device"><h2>Device</h2>'
            f'<dl>{card}</dl>{f"<p>{esc(task)}</p>" if task else ""}{stab}</section>{recommendation_block(rec)}'
            f'<section class="card"><h2>Cells</h2><p class="note">Click a header to sort. Δ columns are '
            f'percentage points against the fp32 reference.</p>{cells_table(report, rec)}</section>'
            f'<section class="card"><h2>Accuracy against latency</h2><p class="note">Large dots form the Pareto front '
            f'(nothing is both faster and more accurate); the ring marks the recommendation.</p>'
            f'{accuracy_scatter(report, rec)}</section>'
            f'<section class="card"><h2>Latency distribution</h2>{latency_boxes(report.measurements)}</section>'
            f'{op_profile_block(report)}'
            f'<section class="card"><h2>Artifact size</h2>{size_bars(report, rec)}</section>'
            f'{sensitivity_block(report)}{task_block(report)}'
            f'<section class="card"><h2>Lineage</h2>{lineage_block(report)}</section>'
            f'<p class="note">{esc(FOOTNOTE)}</p>')
    return page(f"edge-harness: {name}", body)


def render_summary_html(reports: Iterable[TargetReport]) -> str:
    """The cross-device page: recommendation per device, a p50 matrix (device x cell) and a dot plot."""
    reports = list(reports)
    rows = []
    for r in reports:
        rec = recommend(r)
        b, n = rec.pick, str(r.target.get("name"))
        rows.append(f'<tr class="{"picked" if b else "none"}"><td><a href="{esc(safe_name(n))}/report.html">'
                    f'{esc(n)}</a></td><td>{esc(dig(r.target, "device", "cpu_model") or "?")}</td>'
                    f'<td><b>{esc(b.key) if b else "none"}</b></td>'
                    f'<td data-v="{dig(b.latency_ms, "p50") if b else ""}">'
                    f'{number(dig(b.latency_ms, "p50") if b else None, ".3f")}</td>'
                    f'<td>{esc(", ".join(m.key for m in rec.tied) or "–")}</td>'
                    f'<td>{percent_ci(dig(b.accuracy, "top1"), dig(b.accuracy, "top1_ci")) if b else "–"}</td>'
                    f'<td>{size_text(dig(b.artifact, "size_bytes") if b else None)}</td>'
                    f'<td>{esc(", ".join(rec.constraints.describe()) or "–")}</td><td>{esc(rec.reason)}</td></tr>')
    head = "".join(f'<th data-type="num">{esc(r.target.get("name"))}</th>' for r in reports)
    matrix = []
    for k in cell_keys(reports):
        tds = []
        for r in reports:
            m = cell_of(r, k)
            if m is not None and has_p50(r, k):
                v = m.latency_ms["p50"]  # type: ignore[index]
                best = min(x.latency_ms["p50"] for x in r.measurements if has_p50(r, x.key))  # type: ignore[index]
                shade = max(0.0, 1 - math.log(v / best) / math.log(8)) if best > 0 else 0
                tds.append(f'<td data-v="{v}" style="background: rgba(22,163,74,{0.05 + 0.35 * shade:.2f})">'
                           f'{v:.3f}</td>')
            else:
                tds.append(f'<td class="failed" data-v="">{esc(m.status if m else "–")}</td>')
        matrix.append(f'<tr><td data-v="{esc(k)}">{esc(k)}</td>{"".join(tds)}</tr>')
    body = (f'<h1>edge-harness summary</h1><section class="card"><h2>Recommendation per device</h2>'
            f'<div class="scroll"><table id="devices" class="sortable"><thead><tr><th>target</th><th>device</th>'
            f'<th>recommended</th><th data-type="num">p50 ms</th><th>tied with it</th><th>top-1 (95% CI)</th>'
            f'<th>size</th><th>limits</th><th>why</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div></section>'
            f'<section class="card"><h2>p50 latency (ms), device × cell</h2><p class="note">Greener is closer to '
            f'that device\'s fastest cell.</p><div class="scroll"><table id="matrix" class="sortable"><thead><tr>'
            f'<th>cell</th>{head}</tr></thead>'
            f'<tbody>{"".join(matrix)}</tbody></table></div></section><section class="card"><h2>p50 per cell, one dot '
            f'per device</h2>{device_dots(reports)}</section>'
            f'<p class="note">Every cell of every target: <a href="cells.csv">cells.csv</a>.</p>')
    return page("edge-harness summary", body)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body>{body}<script>{SORT_JS}</script></body></html>\n')


def write_target_html(report: TargetReport, folder: Path) -> Path:
    path = Path(folder) / "report.html"
    write_atomic(path, render_target_html(report))
    return path


def write_summary_html(reports: list[TargetReport], out: Path) -> Path:
    path = Path(out) / "summary.html"
    write_atomic(path, render_summary_html(reports))
    return path


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#0f172a;background:#f1f5f9;
margin:0;padding:20px 28px;max-width:1500px}h1{font-size:22px;margin:4px 0 14px}h2{font-size:16px;margin:0 0 8px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:14px 18px;margin:0 0 16px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}dt{color:#64748b}dd{margin:0}
.rec.ok{border-left:6px solid #16a34a}.rec.none{border-left:6px solid #d97706}.reason{font-size:15px}
.limits,.note{color:#64748b;font-size:12.5px}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;white-space:nowrap}
th,td{padding:4px 8px;border-bottom:1px solid #e2e8f0;text-align:right}
th:first-child,td:first-child,#cells th:nth-child(-n+3),#cells td:nth-child(-n+3),#devices th,#devices td
{text-align:left}
.checks th:last-child,.checks td:last-child,#devices td:last-child{text-align:left;white-space:normal}
th{background:#f8fafc;cursor:pointer;user-select:none;position:sticky;top:0}th[data-dir=asc]::after{content:" ▲"}
th[data-dir=desc]::after{content:" ▼"}tr.picked td{background:#dcfce7}tr.none td{background:#fef3c7}
tr.failed td{color:#94a3b8}
tr.misses td:last-child{color:#b45309}.err{color:#b91c1c;font-size:11.5px;white-space:normal;min-width:220px;
text-align:left}svg.plot{display:block;max-width:100%;height:auto;margin-top:6px}
.axis{stroke:#334155}.grid{stroke:#e2e8f0}.tick{font-size:11px;fill:#475569}.axis-label{font-size:12px;fill:#334155}
.label{font-size:12px;fill:#0f172a}.value{font-size:11px;fill:#334155}.whisker{stroke:#475569}
.median{stroke-width:2.5}.pareto{fill:none;stroke:#16a34a;stroke-width:2;stroke-dasharray:none;opacity:.8}
.point{stroke:#fff;stroke-width:1}.ci-bar{stroke:#94a3b8;stroke-width:1.5}.pick-ring{fill:none;stroke:#16a34a;stroke-width:2.5}
.point-label{font-size:11.5px;fill:#0f172a;paint-order:stroke;stroke:#fff;stroke-width:3px}
.limit{stroke:#d97706;stroke-dasharray:5 4}.limit-label{font-size:11px;fill:#b45309}
details.lineage{border-bottom:1px solid #e2e8f0;padding:3px 0}pre{background:#f8fafc;padding:8px;font-size:11.5px;
overflow-x:auto}a{color:#1d4ed8}
"""

SORT_JS = """
function key(td) { return td.dataset.v === undefined ? td.textContent.trim() : td.dataset.v; }
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
    var dir = th.dataset.dir === 'asc' ? 'desc' : 'asc', num = th.dataset.type === 'num';
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[i]), y = key(b.cells[i]);
      if (x === undefined || x === '') return (y === undefined || y === '') ? 0 : 1;
      if (y === undefined || y === '') return -1;  // empty values sort last either way
      var c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return dir === 'asc' ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.documentElement.setAttribute('data-rendered', 'ok');  // a headless check sees the script ran to the end
"""
