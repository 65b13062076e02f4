"""`edge-harness report DIR`: re-render Markdown, HTML, CSV and summaries from the report.json files under DIR."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.measure.metrics import annotate
from harness.measure.results import TargetReport, load_report
from harness.report.files import render_into, write_summary
from harness.report.recommend import CONSTRAINT_KEYS, record_decision


def find_reports(root: Path) -> list[Path]:
    """Every report.json under `root`, skipping hidden folders; a target folder yields just its own."""
    root = Path(root)
    if root.is_file() and root.name == "report.json":
        return [root]
    if not root.is_dir():
        raise HarnessError(f"{root}: no such folder")
    if (root / "report.json").is_file():
        return [root / "report.json"]
    found = sorted(p for p in root.rglob("report.json")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise HarnessError(f"{root}: no report.json found (expected {root}/<target>/report.json)")
    return found


def apply_constraints(report: TargetReport, constraints: dict[str, Any]) -> bool:
    """Store new limits in the report's task, so report.json says which limits its renderings used."""
    given = {k: v for k, v in constraints.items() if k in CONSTRAINT_KEYS and v is not None}
    if not given:
        return False
    report.task["constraints"] = {**(report.task.get("constraints") or {}), **given}
    if "max_accuracy_drop" in given:
        report.task["max_accuracy_drop"] = given["max_accuracy_drop"]
        annotate(report, given["max_accuracy_drop"])  # the accuracy flags name the limit
    return True


def rerender(root: Path, constraints: dict[str, Any] | None = None) -> list[Path]:
    """Rewrite each report's renderings beside its JSON, and each run folder's summary; returns the files written.

    With constraints, report.json is updated too (task["constraints"]) so JSON and renderings agree.
    """
    paths = find_reports(Path(root))
    single = len(paths) == 1 and paths[0].parent == (Path(root) if Path(root).is_dir() else Path(root).parent)
    runs: dict[Path, list[TargetReport]] = {}
    written: list[Path] = []
    for path in paths:
        report = load_report(path)
        changed = apply_constraints(report, constraints or {})
        before = _decision(report)
        record_decision(report)
        changed = changed or _decision(report) != before  # e.g. a report.json from before decisions were stored
        folder = render_into(report, path.parent, save_json=changed)
        written += ([folder / "report.json"] if changed else []) + [folder / "report.md", folder / "report.html"]
        runs.setdefault(path.parent.parent, []).append(report)
    if not single:  # a lone target folder's parent is not ours to write a summary into
        for run, reports in runs.items():
            write_summary(reports, run)
            written += [run / "summary.md", run / "summary.json", run / "summary.html", run / "cells.csv"]
    return [p for p in written if p.exists()]


def _decision(report: TargetReport) -> str:
    """What record_decision writes, as text, to tell whether report.json needs rewriting."""
    return json.dumps([report.recommendation, [m.latency_ms for m in report.measurements]], sort_keys=True)
