"""Per-operator profiles in the reports: where a cell's run time goes (op types as a stacked bar, the top
operators) and how much of it ran in int8 kernels, conversions or float."""

from __future__ import annotations

from typing import Any

from harness.measure.results import Measurement, TargetReport
from harness.report.plots import esc, scale_for, svg, x_axis

TYPE_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#db2777", "#0891b2", "#ca8a04"]
OTHER_COLOR = "#94a3b8"
KIND_COLORS = {"int8": "#16a34a", "convert": "#ca8a04", "float": "#2563eb"}
STACKED_TYPES = len(TYPE_COLORS)


def profiled(report: TargetReport) -> list[Measurement]:
    """The cells that carry an op profile (made or failed)."""
    return [m for m in report.measurements if m.op_profile]


def ratio_text(p: dict[str, Any]) -> str:
    """How much of a run the operators explain: mean against mean, and the median run against the p50."""
    r, med = p.get("vs_mean_latency"), p.get("median_vs_p50_latency")
    parts = ([f"{r:.2f}× the mean latency"] if r else []) + ([f"median run {med:.2f}× the p50"] if med else [])
    if p.get("profiler_floor_us"):
        parts.append(f"less the profiler's own {p['profiler_floor_us']:.0f} µs per operator")
    if p.get("caveat"):
        parts.append(p["caveat"])
    return "; ".join(parts) or "–"


def op_profile_markdown(report: TargetReport, top: int = 8) -> list[str]:
    """A section per profiled cell: operator time against the mean latency, int8/float split, top op types and
    operators."""
    cells = profiled(report)
    if not cells:
        return []
    lines = ["", "## Operator profiles", "",
             "From each runtime's own profiler, in a separate pass after the timed runs. *op time* is the sum of "
             "the operators' times per run; the rest of a run is the runtime's and the runner's own work.", ""]
    for m in cells:
        p = m.op_profile or {}
        if p.get("error"):
            lines += [f"### {m.key}", "", f"Not profiled: {p['error']}", ""]
            continue
        split = ", ".join(f"{k} {100 * v['share']:.0f}% ({v['nodes']} nodes)" for k, v in p["precision"].items())
        lines += [f"### {m.key}", "", f"{p['op_ms_per_run']:.3f} ms of operators per run over {p['runs']} profiled "
                  f"runs ({ratio_text(p)}); {split}. Source: {p['source']}.", "",
                  "| op type | kind | nodes | ms/run | share |", "|---|---|---:|---:|---:|"]
        lines += [f"| {t['op_type']} | {t['kind']} | {t['nodes']} | {t['ms']:.3f} | {100 * t['share']:.1f}% |"
                  for t in p["by_op_type"][:top]]
        lines += ["", "| top operator | op type | kind | ms/run | share |", "|---|---|---|---:|---:|"]
        lines += [f"| {o['name']} | {o['op_type']} | {o['kind']} | {o['ms']:.3f} | {100 * o['share']:.1f}% |"
                  for o in p["top_ops"][:top]]
        lines.append("")
    return lines


def op_profile_bars(report: TargetReport) -> str:
    """One stacked bar per profiled cell: its operator time per run split by op type (the largest types in
    colour, the rest grey), with a thin strip below for int8 kernels / conversions / float."""
    cells = [m for m in profiled(report) if not (m.op_profile or {}).get("error")]
    if not cells:
        return ""
    names: list[str] = []  # op types in colour: the largest ones over all cells, in order of total time
    totals: dict[str, float] = {}
    for m in cells:
        for t in m.op_profile["by_op_type"]:  # type: ignore[index]
            totals[t["op_type"]] = totals.get(t["op_type"], 0.0) + t["ms"]
    names = sorted(totals, key=lambda k: -totals[k])[:STACKED_TYPES]
    colors = dict(zip(names, TYPE_COLORS))
    left, right, row_h, top = 190, 760, 34, 10
    s = scale_for([m.op_profile["op_ms_per_run"] for m in cells], left, right, zero=True)  # type: ignore[index]
    axis_y = top + row_h * len(cells) + 4
    body = [x_axis(s, axis_y, top, "operator time per run (ms)")]
    for i, m in enumerate(cells):
        p = m.op_profile or {}
        y = top + i * row_h
        x = float(left)
        segs = [(t["op_type"], t["ms"], colors.get(t["op_type"], OTHER_COLOR)) for t in p["by_op_type"]]
        body.append(f'<g class="profile-row" data-cell="{esc(m.key)}"><text class="label" x="{left - 8}" '
                    f'y="{y + 15:.1f}" text-anchor="end">{esc(m.key)}</text>')
        for name, ms, col in segs:
            w = s(s.lo + ms) - left if ms > 0 else 0.0
            if w <= 0:
                continue
            body.append(f'<rect class="op-seg" data-op="{esc(name)}" x="{x:.2f}" y="{y + 3:.1f}" width="{w:.2f}" '
                        f'height="{row_h - 16}" fill="{col}"><title>{esc(m.key)}: {esc(name)} {ms:.3f} ms/run'
                        f'</title></rect>')
            x += w
        kx = float(left)
        for kind, v in (p.get("precision") or {}).items():
            w = s(s.lo + v["ms"]) - left
            if w > 0:
                body.append(f'<rect class="kind-seg" data-kind="{esc(kind)}" x="{kx:.2f}" y="{y + row_h - 11:.1f}" '
                            f'width="{w:.2f}" height="5" fill="{KIND_COLORS.get(kind, OTHER_COLOR)}"><title>'
                            f'{esc(kind)}: {v["ms"]:.3f} ms/run ({100 * v["share"]:.0f}%)</title></rect>')
                kx += w
        body.append(f'<text class="value" x="{x + 6:.1f}" y="{y + 15:.1f}">{p["op_ms_per_run"]:.3f} ms '
                    f'({esc(ratio_text(p))})</text></g>')
    legend_y = axis_y + 44
    items = [(n, colors[n]) for n in names] + [("other", OTHER_COLOR)] + \
        [(f"strip: {k}", c) for k, c in KIND_COLORS.items()]
    for j, (label, col) in enumerate(items):
        lx, ly = left + (j % 4) * 150, legend_y + (j // 4) * 16
        body.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{col}"/>'
                    f'<text class="tick" x="{lx + 14}" y="{ly}">{esc(label[:22])}</text>')
    height = legend_y + 16 * ((len(items) + 3) // 4) + 6
    return svg("op-profile", right + 200, height, "".join(body), "operator time per run, by op type")


def op_profile_block(report: TargetReport, top: int = 8) -> str:
    """The HTML section: the stacked bars, then each cell's top operators."""
    cells = profiled(report)
    if not cells:
        return ""
    parts = [f'<section class="card"><h2>Operator profiles</h2><p class="note">From each runtime\'s own profiler, '
             f'in a separate pass after the timed runs. The bar is the operators\' time per run by op type; the '
             f'strip below it splits that time into int8 kernels, conversions and float.</p>{op_profile_bars(report)}']
    for m in cells:
        p = m.op_profile or {}
        if p.get("error"):
            parts.append(f'<p><b>{esc(m.key)}</b>: not profiled: {esc(p["error"])}</p>')
            continue
        rows = "".join(f'<tr><td>{esc(o["name"])}</td><td>{esc(o["op_type"])}</td><td>{esc(o["kind"])}</td>'
                       f'<td>{o["ms"]:.3f}</td><td>{100 * o["share"]:.1f}%</td></tr>' for o in p["top_ops"][:top])
        parts.append(f'<h3>{esc(m.key)}</h3><p class="note">{p["op_ms_per_run"]:.3f} ms of operators per run '
                     f'({esc(ratio_text(p))}), {p["nodes"]} nodes; {esc(p["source"])}.</p>'
                     f'<table class="top-ops"><thead><tr><th>operator</th><th>op type</th><th>kind</th>'
                     f'<th>ms/run</th><th>share</th></tr></thead><tbody>{rows}</tbody></table>')
    parts.append("</section>")
    return "".join(parts)
