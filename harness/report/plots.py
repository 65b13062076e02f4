"""SVG plots for the HTML reports, drawn here (no plotting library, no network): box plots of the raw
timings, accuracy against latency with the Pareto front, size bars, and p50 per cell and device."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from harness.measure.results import Measurement, TargetReport
from harness.report.cells import cell_keys, dig, reference_cell
from harness.report.recommend import Recommendation

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
    """Top-1 (with its Wilson 95% interval) against p50 per cell, the Pareto front as a staircase, and the
    limits as dashed lines."""
    cells = [m for m in report.measurements
             if m.ok and dig(m.latency_ms, "p50") and dig(m.accuracy, "top1") is not None]
    if not cells:
        return '<p class="note">No cell has both latency and accuracy to plot.</p>'
    pts = [(m.latency_ms["p50"], m.accuracy["top1"] * 100, m.key) for m in cells]  # type: ignore[index]
    front = pareto_front(pts)
    on_front = {k for _, _, k in front}
    left, right, top, bottom = 60, 900, 26, 340
    xs = scale_for([p[0] for p in pts], left, right)
    cis = {m.key: [100 * v for v in m.accuracy["top1_ci"]] for m in cells  # type: ignore[index]
           if dig(m.accuracy, "top1_ci")}
    ys_vals = [p[1] for p in pts] + [v for ci in cis.values() for v in ci]
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
                    f'accuracy limit ({100 * c.max_accuracy_drop:.1f} pt below fp32)</text>')  # type: ignore[operator]
    if c.max_latency_ms is not None and xs.lo <= c.max_latency_ms <= xs.hi:
        x = xs(c.max_latency_ms)
        body.append(f'<line class="limit" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>'
                    f'<text class="limit-label" x="{x + 4:.1f}" y="{top + 10}">p50 limit</text>')
    path = f"M{xs(front[0][0]):.1f},{ys(front[0][1]):.1f}" + "".join(
        f" H{xs(x):.1f} V{ys(y):.1f}" for x, y, _ in front[1:])
    body.append(f'<path class="pareto" d="{path}"><title>Pareto front: {esc(", ".join(on_front))}</title></path>')
    pick = rec.pick.key if rec.pick else None
    placed: list[tuple[float, float, float, float]] = []
    for x, _, key in pts:  # Wilson 95% intervals behind the points
        if key in cis:
            lo, hi = cis[key]
            body.append(f'<line class="ci-bar" data-cell="{esc(key)}" x1="{xs(x):.1f}" x2="{xs(x):.1f}" '
                        f'y1="{ys(lo):.1f}" y2="{ys(hi):.1f}"/>')
    for (x, y, key), m in sorted(zip(pts, cells, strict=True), key=lambda pm: (-pm[0][1], pm[0][0])):
        ci = f" (95% CI {cis[key][0]:.1f}–{cis[key][1]:.1f})" if key in cis else ""
        cls = "point" + (" pareto-point" if key in on_front else "") + (" picked" if key == pick else "")
        body.append(f'<circle class="{cls}" data-cell="{esc(key)}" cx="{xs(x):.1f}" cy="{ys(y):.1f}" '
                    f'r="{6 if key in on_front else 4.5}" fill="{color(m.format)}">'
                    f'<title>{esc(key)}: p50 {x:.3f} ms, top-1 {y:.1f}%{ci}</title></circle>')
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
    keys = [k for k in cell_keys(reports) if any(has_p50(r, k) for r in reports)]
    vals = [dig(cell_of(r, k).latency_ms, "p50") for r in reports for k in keys if has_p50(r, k)]  # type: ignore[union-attr]
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
            if has_p50(r, k):
                v = cell_of(r, k).latency_ms["p50"]  # type: ignore[union-attr, index]
                body.append(f'<circle class="device-dot" cx="{s(v):.1f}" cy="{y:.1f}" r="5" '
                            f'fill="{DEVICE_COLORS[j % len(DEVICE_COLORS)]}"><title>{esc(r.target.get("name"))} '
                            f'{esc(k)}: {v:.3f} ms</title></circle>')
    legend = "".join(f'<circle cx="{right + 20}" cy="{top + 8 + 18 * j}" r="5" fill="{DEVICE_COLORS[j % 8]}"/>'
                     f'<text class="tick" x="{right + 30}" y="{top + 12 + 18 * j}">{esc(r.target.get("name"))}</text>'
                     for j, r in enumerate(reports))
    return svg("device-dots", right + 160, axis_y + 40, "".join(body) + legend, "p50 per cell and device")


def cell_of(r: TargetReport, key: str) -> Measurement | None:
    return next((m for m in r.measurements if m.key == key), None)


def has_p50(r: TargetReport, key: str) -> bool:
    m = cell_of(r, key)
    return bool(m and m.ok and dig(m.latency_ms, "p50"))
