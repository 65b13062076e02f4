"""Self-contained HTML renderings (report.html per target, summary.html across targets) with inline SVG plots.

No network: styles, the table-sorting script and the plots are all inline; plots are SVG drawn here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.recommend import Recommendation, drop_text, recommend
from harness.report import (
    COLUMNS,
    FOOTNOTE,
    cell_keys,
    device_card,
    dig,
    number,
    percent,
    reference_cell,
    safe_name,
    size_text,
    task_line,
)
from harness.results import Measurement, TargetReport, write_atomic

FORMAT_COLORS = {"onnx": "#2563eb", "tflite": "#ea580c", "torch": "#7c3aed"}
DEVICE_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#475569"]


def esc(v: Any) -> str:
    return (str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def color(fmt: str) -> str:
    return FORMAT_COLORS.get(fmt, "#64748b")


# ----------------------------------------------------------------------------------------------- scales
class Scale:
    """Maps data [lo, hi] to pixels [a, b], linear or log10, with readable tick values."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False) -> None:
        if hi <= lo:
            lo, hi = (lo - 1, hi + 1) if not log else (lo / 2, hi * 2)
        self.lo, self.hi, self.a, self.b, self.log = lo, hi, a, b, log

    def __call__(self, v: float) -> float:
        f = (lambda x: math.log10(max(x, 1e-12))) if self.log else float
        t = (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo))
        return self.a + min(max(t, -0.02), 1.02) * (self.b - self.a)

    def ticks(self, n: int = 6) -> list[float]:
        if self.log:
            out = [m * 10.0 ** e for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
                   for m in (1, 2, 5)]
            return [t for t in out if self.lo <= t <= self.hi]
        raw = (self.hi - self.lo) / n
        mag = 10 ** math.floor(math.log10(raw))
        step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
        first = math.ceil(self.lo / step) * step
        return [round(first + i * step, 10) for i in range(int((self.hi - first) / step) + 1)]


def scale_for(values: Sequence[float], a: float, b: float, zero: bool = False) -> Scale:
    """A scale covering `values` with a margin; log10 when they span more than 30×."""
    lo, hi = min(values), max(values)
    if not zero and lo > 0 and hi / lo > 30:
        return Scale(lo / 1.3, hi * 1.3, a, b, log=True)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return Scale(0.0 if zero else max(0.0, lo - pad), hi + pad, a, b)


def x_axis(s: Scale, y: float, top: float, label: str) -> str:
    parts = [f'<line class="axis" x1="{s.a:.1f}" x2="{s.b:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>']
    for t in s.ticks():
        x = s(t)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text class="axis-label" x="{(s.a + s.b) / 2:.1f}" y="{y + 30:.1f}" '
                 f'text-anchor="middle">{esc(label)}</text>')
    return "".join(parts)


def svg(id_: str, width: float, height: float, body: str, title: str) -> str:
    return (f'<svg id="{id_}" class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{esc(title)}">'
            f'<title>{esc(title)}</title>{body}</svg>')


# ----------------------------------------------------------------------------------------------- plots
def box_stats(raw: Sequence[float]) -> dict[str, Any]:
    """Quartiles, Tukey whiskers (1.5 IQR, clipped to data) and the outliers beyond them."""
    a = np.asarray(raw, dtype=float)
    q1, med, q3, p99 = (float(v) for v in np.percentile(a, [25, 50, 75, 99]))
    lo_f, hi_f = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    inside = a[(a >= lo_f) & (a <= hi_f)]
    return {"q1": q1, "median": med, "q3": q3, "p99": p99, "n": int(a.size),
            "lo": float(inside.min()) if inside.size else q1, "hi": float(inside.max()) if inside.size else q3,
            "outliers": np.sort(a[(a < lo_f) | (a > hi_f)])}


def latency_boxes(cells: list[Measurement]) -> str:
    """One horizontal box plot per measured cell from its raw timings, on a shared ms axis."""
    rows = [(m, box_stats(m.raw_latencies_ms)) for m in cells if m.ok and m.raw_latencies_ms]
    if not rows:
        return '<p class="note">No raw timings to plot.</p>'
    left, right, row_h, top = 190, 900, 26, 12
    width, height = right + 90, top + row_h * len(rows) + 46
    # The axis stops at the largest p99 / whisker: a single stall would otherwise squash every box.
    s = scale_for([b["lo"] for _, b in rows] + [max(b["hi"], b["p99"]) for _, b in rows], left, right)
    axis_y = top + row_h * len(rows) + 4
    body = [x_axis(s, axis_y, top, "latency per inference (ms), batch 1; box = quartiles, whiskers = 1.5 IQR, "
                   "dots = outliers")]
    for i, (m, b) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        c = color(m.format)
        tip = (f"{m.key}: n={b['n']}, median {b['median']:.3f} ms, IQR {b['q1']:.3f}–{b['q3']:.3f} ms, "
               f"p99 {b['p99']:.3f} ms, {len(b['outliers'])} outliers")
        body.append(f'<g class="box-plot" data-cell="{esc(m.key)}"><title>{esc(tip)}</title>'
                    f'<text class="label" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{esc(m.key)}</text>'
                    f'<line class="whisker" x1="{s(b["lo"]):.1f}" x2="{s(b["hi"]):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
                    f'<rect class="box" x="{s(b["q1"]):.1f}" y="{y - 8:.1f}" '
                    f'width="{max(1.0, s(b["q3"]) - s(b["q1"])):.1f}" height="16" fill="{c}" fill-opacity="0.25" '
                    f'stroke="{c}"/><line class="median" x1="{s(b["median"]):.1f}" x2="{s(b["median"]):.1f}" '
                    f'y1="{y - 8:.1f}" y2="{y + 8:.1f}" stroke="{c}"/>')
        outl = b["outliers"]
        for v in outl if len(outl) <= 40 else outl[np.linspace(0, len(outl) - 1, 40).astype(int)]:
            body.append(f'<circle class="outlier" cx="{s(float(v)):.1f}" cy="{y:.1f}" r="2" fill="{c}"/>')
        body.append(f'<text class="value" x="{right + 26}" y="{y + 4:.1f}">{b["median"]:.3f}</text></g>')
    return svg("latency-boxes", width, height, "".join(body), "latency distribution per cell")


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Cells no other cell beats on both latency (lower) and top-1 (higher), fastest first."""
    front: list[tuple[float, float, str]] = []
    for x, y, key in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y, key))
    return front


def accuracy_scatter(report: TargetReport, rec: Recommendation) -> str:
    """Top-1 against p50 per cell, the Pareto front as a staircase, and the limits as dashed lines."""
    cells = [m for m in report.measurements
             if m.ok and dig(m.latency_ms, "p50") and dig(m.accuracy, "top1") is not None]
    if not cells:
        return '<p class="note">No cell has both latency and accuracy to plot.</p>'
    pts = [(m.latency_ms["p50"], m.accuracy["top1"] * 100, m.key) for m in cells]  # type: ignore[index]
    front = pareto_front(pts)
    on_front = {k for _, _, k in front}
    left, right, top, bottom = 60, 900, 26, 340
    xs = scale_for([p[0] for p in pts], left, right)
    ys_vals = [p[1] for p in pts]
    c = rec.constraints
    ref = report.task.get("reference_top1")
    floor = (ref - c.max_accuracy_drop) * 100 if ref is not None and c.max_accuracy_drop is not None else None
    ys = Scale(max(0.0, min(ys_vals + ([floor] if floor else [])) - 2), min(100.0, max(ys_vals) + 2), bottom, top)
    body = [x_axis(xs, bottom, top, "p50 latency (ms)")]
    for t in ys.ticks(5):
        body.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{ys(t):.1f}" y2="{ys(t):.1f}"/>'
                    f'<text class="tick" x="{left - 6}" y="{ys(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    body.append(f'<text class="axis-label" transform="translate(16 {(top + bottom) / 2:.0f}) rotate(-90)" '
                f'text-anchor="middle">top-1 (%)</text>')
    if floor is not None:
        body.append(f'<line class="limit" x1="{left}" x2="{right}" y1="{ys(floor):.1f}" y2="{ys(floor):.1f}"/>'
                    f'<text class="limit-label" x="{right}" y="{ys(floor) - 4:.1f}" text-anchor="end">'
                    f'accuracy floor ({100 * c.max_accuracy_drop:.1f} pt below fp32)</text>')  # type: ignore[operator]
    if c.max_latency_ms is not None and xs.lo <= c.max_latency_ms <= xs.hi:
        x = xs(c.max_latency_ms)
        body.append(f'<line class="limit" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>'
                    f'<text class="limit-label" x="{x + 4:.1f}" y="{top + 10}">p50 limit</text>')
    path = f"M{xs(front[0][0]):.1f},{ys(front[0][1]):.1f}" + "".join(
        f" H{xs(x):.1f} V{ys(y):.1f}" for x, y, _ in front[1:])
    body.append(f'<path class="pareto" d="{path}"><title>Pareto front: {esc(", ".join(on_front))}</title></path>')
    pick = rec.pick.key if rec.pick else None
    placed: list[tuple[float, float, float, float]] = []
    for (x, y, key), m in sorted(zip(pts, cells, strict=True), key=lambda pm: (-pm[0][1], pm[0][0])):
        cls = "point" + (" pareto-point" if key in on_front else "") + (" picked" if key == pick else "")
        body.append(f'<circle class="{cls}" data-cell="{esc(key)}" cx="{xs(x):.1f}" cy="{ys(y):.1f}" '
                    f'r="{6 if key in on_front else 4.5}" fill="{color(m.format)}">'
                    f'<title>{esc(key)}: p50 {x:.3f} ms, top-1 {y:.1f}%</title></circle>')
        if key == pick:
            body.append(f'<circle class="pick-ring" cx="{xs(x):.1f}" cy="{ys(y):.1f}" r="11"/>')
        if key in on_front or key == pick:
            body.append(point_label(key, xs(x), ys(y), placed))
    legend = "".join(f'<circle cx="{right - 150 + 60 * i}" cy="8" r="5" fill="{col}"/><text class="tick" '
                     f'x="{right - 142 + 60 * i}" y="12">{f}</text>' for i, (f, col) in
                     enumerate(FORMAT_COLORS.items()))
    return svg("accuracy-latency", right + 30, bottom + 44, "".join(body) + legend, "top-1 against p50 latency")


def point_label(key: str, x: float, y: float, placed: list[tuple[float, float, float, float]]) -> str:
    """A label beside a point, in the first corner that overlaps no label placed before (nearby cells crowd)."""
    w, h = 6.6 * len(key), 12.0
    spots = [(x + 9, y - 6), (x + 9, y + 14), (x - 9 - w, y - 6), (x - 9 - w, y + 14), (x + 9, y - 19), (x + 9, y + 27)]
    for lx, ly in spots:
        if not any(lx < px + pw and px < lx + w and ly - h < py and py - ph < ly for px, py, pw, ph in placed):
            break
    placed.append((lx, ly, w, h))
    return f'<text class="point-label" x="{lx:.1f}" y="{ly:.1f}">{esc(key)}</text>'


def size_bars(report: TargetReport, rec: Recommendation) -> str:
    """Artifact size per cell as horizontal bars, the fp32 reference and the size limit marked."""
    cells = [m for m in report.measurements if dig(m.artifact, "size_bytes")]
    if not cells:
        return '<p class="note">No artifact sizes recorded.</p>'
    left, right, row_h, top = 190, 760, 22, 10
    mb = [m.artifact["size_bytes"] / 1e6 for m in cells]  # type: ignore[index]
    limit = rec.constraints.max_size_mb
    s = scale_for(mb + ([limit] if limit else []), left, right, zero=True)
    axis_y = top + row_h * len(cells) + 4
    body = [x_axis(s, axis_y, top, "artifact size (MB)")]
    ref = reference_cell(report)
    for i, (m, v) in enumerate(zip(cells, mb, strict=True)):
        y = top + i * row_h
        ratio = m.derived.get("compression_ratio")
        note = " (reference)" if ref is not None and m.key == ref.key else (f" ({ratio:.1f}× smaller)" if ratio and
                                                                              ratio > 1.05 else "")
        body.append(f'<g class="size-row"><text class="label" x="{left - 8}" y="{y + 15:.1f}" text-anchor="end">'
                    f'{esc(m.key)}</text><rect class="size-bar" data-cell="{esc(m.key)}" x="{left}" y="{y + 3:.1f}" '
                    f'width="{max(1.0, s(v) - left):.1f}" height="{row_h - 6}" fill="{color(m.format)}" '
                    f'fill-opacity="{0.85 if m.ok else 0.3}"><title>{esc(m.key)}: {v:.3f} MB</title></rect>'
                    f'<text class="value" x="{s(v) + 6:.1f}" y="{y + 15:.1f}">{v:.2f} MB{esc(note)}</text></g>')
    if limit:
        body.append(f'<line class="limit" x1="{s(limit):.1f}" x2="{s(limit):.1f}" y1="{top}" y2="{axis_y}"/>')
    return svg("size-bars", right + 170, axis_y + 40, "".join(body), "artifact size per cell")


def device_dots(reports: list[TargetReport]) -> str:
    """p50 per cell (rows) with one dot per device: how the same artifact ranks across devices."""
    keys = [k for k in cell_keys(reports) if any(_ok(r, k) for r in reports)]
    vals = [dig(_cell(r, k).latency_ms, "p50") for r in reports for k in keys if _ok(r, k)]  # type: ignore[union-attr]
    if not vals:
        return '<p class="note">No measured cells.</p>'
    left, right, row_h, top = 190, 840, 22, 10
    s = scale_for(vals, left, right)
    axis_y = top + row_h * len(keys) + 4
    body = [x_axis(s, axis_y, top, "p50 latency (ms)")]
    for i, k in enumerate(keys):
        y = top + i * row_h + row_h / 2
        body.append(f'<text class="label" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{esc(k)}</text>')
        for j, r in enumerate(reports):
            if _ok(r, k):
                v = _cell(r, k).latency_ms["p50"]  # type: ignore[union-attr, index]
                body.append(f'<circle class="device-dot" cx="{s(v):.1f}" cy="{y:.1f}" r="5" '
                            f'fill="{DEVICE_COLORS[j % len(DEVICE_COLORS)]}"><title>{esc(r.target.get("name"))} '
                            f'{esc(k)}: {v:.3f} ms</title></circle>')
    legend = "".join(f'<circle cx="{right + 20}" cy="{top + 8 + 18 * j}" r="5" fill="{DEVICE_COLORS[j % 8]}"/>'
                     f'<text class="tick" x="{right + 30}" y="{top + 12 + 18 * j}">{esc(r.target.get("name"))}</text>'
                     for j, r in enumerate(reports))
    return svg("device-dots", right + 160, axis_y + 40, "".join(body) + legend, "p50 per cell and device")


def _cell(r: TargetReport, key: str) -> Measurement | None:
    return next((m for m in r.measurements if m.key == key), None)


def _ok(r: TargetReport, key: str) -> bool:
    m = _cell(r, key)
    return bool(m and m.ok and dig(m.latency_ms, "p50"))


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
        f'<tr class="{"meets" if c.meets else ("failed" if c.status != "ok" else "misses")}"><td>{esc(c.key)}'
        f'{" ★" if rec.pick and rec.pick.key == c.key else ""}</td><td>{number(c.p50_ms, ".3f")}</td>'
        f'<td>{drop_text(c.top1_drop)}</td><td>{number(c.size_mb, ".2f")}</td>'
        f'<td>{number(c.peak_rss_mb, ".1f")}</td><td>{esc(c.verdict)}</td></tr>'
        for c in sorted(rec.checks, key=lambda c: (not c.meets, c.status != "ok", c.p50_ms or 0.0)))
    return (f'<section class="card rec {"ok" if rec.pick else "none"}" id="recommendation"><h2>{esc(title)}</h2>'
            f'<p class="limits">Limits: {esc(limits)}</p><p class="reason">{esc(rec.reason)}.</p>'
            f'<details open><summary>Reasoning per cell</summary><table class="checks"><thead><tr><th>cell</th>'
            f'<th>p50 ms</th><th>top-1 drop pt</th><th>size MB</th><th>peak RSS MB</th><th>verdict</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></details></section>')


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


def render_target_html(report: TargetReport, rec: Recommendation | None = None) -> str:
    """The per-target page: device card, recommendation, sortable table, plots, lineage."""
    rec = rec or recommend(report)
    name = str(report.target.get("name"))
    card = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in device_card(report))
    task = task_line(report)
    warning = (report.target.get("stability") or {}).get("warning")
    stab = f'<p style="color:#b45309"><b>Warning:</b> {esc(warning)}.</p>' if warning else ""
    body = (f'<h1>edge-harness report: {esc(name)}</h1><section class="card device"><h2>Device</h2>'
            f'<dl>{card}</dl>{f"<p>{esc(task)}</p>" if task else ""}{stab}</section>{recommendation_block(rec)}'
            f'<section class="card"><h2>Cells</h2><p class="note">Click a header to sort. Δ columns are '
            f'percentage points against the fp32 reference.</p>{cells_table(report, rec)}</section>'
            f'<section class="card"><h2>Accuracy against latency</h2><p class="note">Large dots form the Pareto front '
            f'(nothing is both faster and more accurate); the ring marks the recommendation.</p>'
            f'{accuracy_scatter(report, rec)}</section>'
            f'<section class="card"><h2>Latency distribution</h2>{latency_boxes(report.measurements)}</section>'
            f'<section class="card"><h2>Artifact size</h2>{size_bars(report, rec)}</section>'
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
                    f'<td>{percent(dig(b.accuracy, "top1") if b else None)}</td>'
                    f'<td>{size_text(dig(b.artifact, "size_bytes") if b else None)}</td>'
                    f'<td>{esc(", ".join(rec.constraints.describe()) or "–")}</td><td>{esc(rec.reason)}</td></tr>')
    head = "".join(f'<th data-type="num">{esc(r.target.get("name"))}</th>' for r in reports)
    matrix = []
    for k in cell_keys(reports):
        tds = []
        for r in reports:
            m = _cell(r, k)
            if m is not None and _ok(r, k):
                v = m.latency_ms["p50"]  # type: ignore[index]
                best = min(x.latency_ms["p50"] for x in r.measurements if _ok(r, x.key))  # type: ignore[index]
                shade = max(0.0, 1 - math.log(v / best) / math.log(8)) if best > 0 else 0
                tds.append(f'<td data-v="{v}" style="background: rgba(22,163,74,{0.05 + 0.35 * shade:.2f})">'
                           f'{v:.3f}</td>')
            else:
                tds.append(f'<td class="failed" data-v="">{esc(m.status if m else "–")}</td>')
        matrix.append(f'<tr><td data-v="{esc(k)}">{esc(k)}</td>{"".join(tds)}</tr>')
    body = (f'<h1>edge-harness summary</h1><section class="card"><h2>Recommendation per device</h2>'
            f'<div class="scroll"><table id="devices" class="sortable"><thead><tr><th>target</th><th>device</th>'
            f'<th>recommended</th><th data-type="num">p50 ms</th><th>top-1</th><th>size</th><th>limits</th><th>why</th>'
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
.point{stroke:#fff;stroke-width:1}.pick-ring{fill:none;stroke:#16a34a;stroke-width:2.5}
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
