"""Every cell of every target as one flat CSV row, for spreadsheets. Units are in the column names."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

from harness.measure.results import TargetReport, write_atomic
from harness.report.cells import dig
from harness.report.recommend import recommend


def _latency(key: str) -> Any:
    return lambda m: dig(m.latency_ms, key)


def _end(i: int, where: str, key: str) -> Any:
    """One end (0 = lo, 1 = hi) of the interval `key` in a cell's `where` dict (latency_ms, accuracy, derived)."""
    return lambda m: (dig(getattr(m, where), key) or [None, None])[i]


# (column, getter). Raw numbers, not display strings: fractions stay fractions, sizes stay bytes.
FIELDS: list[tuple[str, Any]] = [
    ("variant", lambda m: m.variant),
    ("format", lambda m: m.format),
    ("status", lambda m: m.status),
    ("error", lambda m: m.error),
    ("precision", lambda m: dig(m.artifact, "precision")),
    ("size_bytes", lambda m: dig(m.artifact, "size_bytes")),
    ("params", lambda m: dig(m.artifact, "params")),
    ("macs", lambda m: dig(m.artifact, "macs")),
    ("sparsity", lambda m: dig(m.artifact, "sparsity")),
    ("compression_ratio", lambda m: m.derived.get("compression_ratio")),
    *[(f"latency_{k}_ms", _latency(k)) for k in ("p50", "p90", "p95", "p99", "p999", "mean", "std", "min", "max")],
    ("latency_p50_ci_lo_ms", lambda m: (dig(m.latency_ms, "p50_ci") or [None, None])[0]),
    ("latency_p50_ci_hi_ms", lambda m: (dig(m.latency_ms, "p50_ci") or [None, None])[1]),
    ("latency_n", lambda m: dig(m.latency_ms, "n")),
    ("ratio_to_pick", lambda m: dig(m.latency_ms, "ratio_to_pick")),
    ("ratio_to_pick_ci_lo", _end(0, "latency_ms", "ratio_to_pick_ci")),
    ("ratio_to_pick_ci_hi", _end(1, "latency_ms", "ratio_to_pick_ci")),
    ("speedup", lambda m: m.derived.get("speedup")),
    ("speedup_ci_lo", _end(0, "derived", "speedup_ci")),
    ("speedup_ci_hi", _end(1, "derived", "speedup_ci")),
    ("speedup_tied", lambda m: m.derived.get("speedup_tied")),  # True: not a speed-up (its CI contains 1)
    ("speedup_vs", lambda m: m.derived.get("speedup_vs")),
    ("cold_start_load_ms", lambda m: dig(m.cold_start_ms, "load")),
    ("cold_start_first_inference_ms", lambda m: dig(m.cold_start_ms, "first_inference")),
    ("cold_start_total_ms", lambda m: dig(m.cold_start_ms, "total")),
    ("peak_rss_mb", lambda m: dig(m.memory_mb, "peak_rss")),
    ("rss_after_load_mb", lambda m: dig(m.memory_mb, "rss_after_load")),
    ("top1", lambda m: dig(m.accuracy, "top1")),
    ("top1_ci_lo", _end(0, "accuracy", "top1_ci")),
    ("top1_ci_hi", _end(1, "accuracy", "top1_ci")),
    ("top1_change", lambda m: m.derived.get("top1_change")),
    ("top1_drop_ci_lo", _end(0, "derived", "top1_drop_ci")),
    ("top1_drop_ci_hi", _end(1, "derived", "top1_drop_ci")),
    ("top1_mcnemar_p", lambda m: m.derived.get("top1_mcnemar_p")),
    ("top1_shifted", lambda m: dig(m.accuracy, "top1_shifted")),
    ("top1_shifted_ci_lo", _end(0, "accuracy", "top1_shifted_ci")),
    ("top1_shifted_ci_hi", _end(1, "accuracy", "top1_shifted_ci")),
    ("top1_change_shifted", lambda m: m.derived.get("top1_change_shifted")),
    ("top1_drop_ci_lo_shifted", _end(0, "derived", "top1_drop_ci_shifted")),
    ("top1_drop_ci_hi_shifted", _end(1, "derived", "top1_drop_ci_shifted")),
    ("top1_mcnemar_p_shifted", lambda m: m.derived.get("top1_mcnemar_p_shifted")),
    ("agreement", lambda m: dig(m.accuracy, "agreement")),
    ("agreement_ci_lo", _end(0, "accuracy", "agreement_ci")),
    ("agreement_ci_hi", _end(1, "accuracy", "agreement_ci")),
    ("agreement_shifted", lambda m: dig(m.accuracy, "agreement_shifted")),
    ("max_abs_diff", lambda m: dig(m.accuracy, "max_abs_diff")),
    ("accuracy_n", lambda m: dig(m.accuracy, "n")),
    ("parity_passed", lambda m: dig(m.artifact, "parity", "passed")),
    ("parity_max_abs_diff", lambda m: dig(m.artifact, "parity", "max_abs_diff")),
    ("runtime", lambda m: m.settings.get("runtime")),
    ("runtime_version", lambda m: m.settings.get("runtime_version")),
    ("threads", lambda m: m.settings.get("threads")),
    ("runs", lambda m: m.settings.get("runs")),
    ("warmup", lambda m: m.settings.get("warmup")),
    ("flags", lambda m: "; ".join(m.flags)),
    ("sha256", lambda m: dig(m.artifact, "sha256")),
]
HEADER = ["target", "target_kind", "cpu_model", "cores", *[name for name, _ in FIELDS], "meets_limits", "misses",
          "notes", "recommended", "tied_with_pick"]


def cell_rows(report: TargetReport) -> list[dict[str, Any]]:
    """One dict per cell of one target, keyed by HEADER."""
    rec = recommend(report)
    checks = {c.key: c for c in rec.checks}
    dev = report.target.get("device") or {}
    rows = []
    for m in report.measurements:
        row: dict[str, Any] = {"target": report.target.get("name"), "target_kind": report.target.get("kind"),
                               "cpu_model": dev.get("cpu_model"), "cores": dev.get("cores")}
        row.update({name: get(m) for name, get in FIELDS})
        chk = checks.get(m.key)
        row["meets_limits"] = chk.meets if chk else False
        row["misses"] = chk.verdict if chk and not chk.meets else ""
        row["notes"] = "; ".join(chk.notes) if chk else ""
        row["recommended"] = bool(rec.pick is not None and rec.pick is m)
        row["tied_with_pick"] = bool(chk and chk.tied)
        rows.append(row)
    return rows


def cells_csv(reports: Iterable[TargetReport]) -> str:
    """The CSV text: a header, then one row per cell of every target."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HEADER, lineterminator="\n")
    w.writeheader()
    for r in reports:
        for row in cell_rows(r):
            w.writerow({k: _plain(v) for k, v in row.items()})
    return buf.getvalue()


def write_cells_csv(reports: Iterable[TargetReport], path: Path) -> Path:
    write_atomic(Path(path), cells_csv(reports))
    return Path(path)


def _plain(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # full precision; spreadsheets parse it
    if isinstance(v, str) and v[:1] in FORMULA_STARTS:
        return "'" + v  # text from a device or a file name must never run as a spreadsheet formula
    return v


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

