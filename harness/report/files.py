"""Writing a run's files: OUT/<target>/report.json with its renderings, and the summary across targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.measure.results import SCHEMA_VERSION, TargetReport, save_report, write_atomic
from harness.report.cells import dig, safe_name
from harness.report.cells_csv import write_cells_csv
from harness.report.html import write_summary_html, write_target_html
from harness.report.markdown import render_markdown, render_summary
from harness.report.recommend import recommend, record_decision


def guard_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output folder that already holds reports, unless resuming or overwriting them."""
    existing = list(out.glob("*/report.json")) if out.is_dir() else []
    if existing and not (resume or overwrite):
        raise HarnessError(f"{out} already holds reports ({existing[0].parent.name}/report.json); pass --resume "
                           f"to complete them, --overwrite to replace them, or --out for a new folder")


def render_into(report: TargetReport, folder: Path, save_json: bool = True) -> Path:
    """Record the decision in the report, then write report.json (unless told not to) and its renderings."""
    folder = Path(folder)
    rec = record_decision(report)
    if save_json:
        save_report(report, folder / "report.json")
    write_atomic(folder / "report.md", render_markdown(report, rec))
    write_target_html(report, folder)
    return folder


def write_target_report(report: TargetReport, out: Path) -> Path:
    """Write OUT/<target>/report.json and its renderings; returns the folder."""
    return render_into(report, Path(out) / safe_name(str(report.target.get("name"))))


def summary_json(reports: list[TargetReport]) -> dict[str, Any]:
    """The decisions across targets: summary.json, for a CI job to gate on without reading every report."""
    targets = []
    for r in reports:
        rec = recommend(r)
        decision = {k: v for k, v in rec.to_dict().items() if k != "cells"}
        b = rec.pick
        name = str(r.target.get("name"))
        targets.append({
            "name": name, "kind": r.target.get("kind"), "host": r.target.get("host"),
            "cpu_model": dig(r.target, "device", "cpu_model"), "report": f"{safe_name(name)}/report.json",
            "recommendation": decision,
            "pick": None if b is None else {
                "cell": b.key, "p50_ms": dig(b.latency_ms, "p50"), "p50_ci_ms": dig(b.latency_ms, "p50_ci"),
                "top1": dig(b.accuracy, "top1"), "top1_ci": dig(b.accuracy, "top1_ci"),
                "top1_shifted": dig(b.accuracy, "top1_shifted"), "top1_shifted_ci": dig(b.accuracy, "top1_shifted_ci"),
                "size_bytes": dig(b.artifact, "size_bytes"), "peak_rss_mb": dig(b.memory_mb, "peak_rss")},
        })
    return {"schema_version": SCHEMA_VERSION, "targets": targets}


def write_summary(reports: list[TargetReport], out: Path) -> Path:
    """Write OUT/summary.md and the other cross-target files (summary.json, summary.html, cells.csv)."""
    path = Path(out) / "summary.md"
    write_atomic(path, render_summary(reports))
    write_atomic(Path(out) / "summary.json", json.dumps(summary_json(reports), indent=1))
    write_summary_html(reports, Path(out))
    write_cells_csv(reports, Path(out) / "cells.csv")
    return path
