"""Recommendation under constraints, the Markdown and CSV renderings, and `edge-harness report DIR`."""

from __future__ import annotations

import csv
import json

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.measure.metrics import annotate
from harness.measure.results import Measurement, TargetReport, load_report
from harness.report.cells import pick
from harness.report.files import write_summary, write_target_report
from harness.report.markdown import render_markdown, render_summary
from harness.report.recommend import Constraints, recommend
from harness.report.rerender import rerender

# variant, format, p50 ms, size MB, top-1, peak RSS MB; None p50 = a failed cell
CELLS = [
    ("fp32", "onnx", 4.0, 13.0, 0.91, 90.0),
    ("fp16", "onnx", 3.6, 6.5, 0.91, 80.0),
    ("int8-dynamic", "onnx", 2.5, 3.4, 0.905, 60.0),
    ("int8-static", "onnx", 1.5, 3.4, 0.88, 55.0),
    ("distilled", "tflite", 0.8, 1.1, 0.85, 40.0),
    ("int8-static", "tflite", None, 3.3, None, None),
]


def make_report(name: str = "local-cpu", scale: float = 1.0, constraints: dict | None = None) -> TargetReport:
    r = TargetReport(target={"name": name, "kind": "local", "host": "localhost",
                             "device": {"cpu_model": "Test CPU", "cores": 4, "governor": "performance"}},
                     task={"dataset": "textures", "classes": 3, "n_test": 200, "reference_top1": 0.91,
                           "reference_variant": "fp32", "max_accuracy_drop": 0.01,
                           "constraints": constraints or {"max_accuracy_drop": 0.01}})
    for variant, fmt, p50, size, top1, rss in CELLS:
        art = {"size_bytes": int(size * 1e6), "sha256": f"{variant}{fmt}", "lineage": {"recipe": "reference"}}
        if p50 is None:
            r.measurements.append(Measurement(variant, fmt, "failed", error="delegate rejected INT8 op",
                                              artifact=art))
            continue
        p50 *= scale
        raw = [p50 * (1 + 0.01 * ((i * 7) % 11 - 5)) for i in range(50)]
        r.measurements.append(Measurement(
            variant, fmt, "ok", artifact=art,
            latency_ms={"n": 50, "p50": p50, "p90": p50 * 1.04, "p99": p50 * 1.05, "mean": p50, "std": 0.01,
                        "min": min(raw), "max": max(raw), "p50_ci": [p50 * 0.99, p50 * 1.01]},
            cold_start_ms={"load": 20.0, "first_inference": 2 * p50, "total": 20.0 + 2 * p50},
            memory_mb={"peak_rss": rss}, accuracy={"top1": top1, "agreement": 0.97, "n": 200},
            raw_latencies_ms=raw, settings={"threads": 2}))
    annotate(r, 0.01)
    return r


def test_fastest_cell_within_accuracy_limit_is_picked():
    rec = recommend(make_report())
    # int8-static and distilled are faster but lose 3 and 6 points; int8-dynamic loses 0.5.
    assert rec.pick is not None and rec.pick.key == "int8-dynamic/onnx"
    assert "fastest (p50 2.500 ms) of the 3 of 5 measured cells" in rec.reason
    verdicts = {c.key: c.verdict for c in rec.checks}
    assert verdicts["distilled/tflite"] == "top-1 drops 6.0 points > 1.0"
    assert verdicts["int8-static/tflite"] == "not measured (failed)"
    assert verdicts["fp32/onnx"] == "meets all limits"


def test_every_limit_is_checked():
    r = make_report()
    rec = recommend(r, {"max_accuracy_drop": 0.1, "max_size_mb": 5, "max_memory_mb": 50, "max_latency_ms": 2})
    assert rec.pick is not None and rec.pick.key == "distilled/tflite"
    misses = {c.key: c.misses for c in rec.checks}
    assert misses["int8-static/onnx"] == ["peak RSS 55.0 MB > 50 MB"]
    assert misses["fp32/onnx"] == ["p50 4.00 ms > 2 ms", "size 13.00 MB > 5 MB", "peak RSS 90.0 MB > 50 MB"]


def test_a_limit_nothing_meets_is_explained_with_the_closest_cell():
    r = make_report(constraints={"max_accuracy_drop": 0.01, "max_latency_ms": 1.0})
    rec = recommend(r)
    assert rec.pick is None  # distilled meets the latency limit and fp32 the accuracy one, nothing both
    assert "each limit is met by some cell, but no cell meets them all together" in rec.reason
    r = make_report(constraints={"max_accuracy_drop": 0.01, "max_latency_ms": 0.5})
    rec = recommend(r)
    assert rec.pick is None and rec.closest is not None
    assert "no cell has p50 ≤ 0.5 ms (the fastest, distilled/tflite, takes 0.80 ms)" in rec.reason
    # Closest: fewest limits missed, then nearest: int8-dynamic misses only latency, by the least among those.
    assert rec.closest.key == "int8-dynamic/onnx"
    assert "Closest: int8-dynamic/onnx (p50 2.500 ms), which misses p50 2.50 ms > 0.5 ms" in rec.reason
    md = render_markdown(r)
    assert "**No recommendation.** Nothing meets all limits" in md
    assert "| distilled/tflite | 0.800 | 6.0 |" in md  # the reasoning table is there, not an empty table
    summary = render_summary([r])
    assert "| local-cpu | Test CPU | **none** |" in summary and "no cell has p50 ≤ 0.5 ms" in summary


def test_accuracy_limit_nothing_meets_names_the_smallest_drop():
    r = make_report()
    r.measurements = [m for m in r.measurements if m.variant in ("int8-static", "distilled")]
    rec = recommend(r)
    assert rec.pick is None
    assert "no cell keeps the top-1 drop within 1.0 points (the smallest drop, int8-static/onnx, is 3.0 points)" \
        in rec.reason


def test_pick_keeps_its_float_form_and_reads_task_constraints():
    r = make_report(constraints={"max_accuracy_drop": 0.01, "max_size_mb": 3.0})
    best, why = pick(r)
    assert best is None and "no cell meets them all together" in why  # distilled is 1.1 MB but drops 6 points
    assert "Closest: int8-dynamic/onnx (p50 2.500 ms), which misses size 3.40 MB > 3 MB" in why  # 13% over
    best, why = pick(r, 0.1)  # a float is the accuracy limit, as api.py passes it
    assert best is not None and best.key == "distilled/tflite"
    assert Constraints.of(r).describe() == ["top-1 drop ≤ 1.0 points, clean and shifted", "size ≤ 3 MB"]


def test_nothing_measured_says_so():
    r = make_report()
    r.measurements = [m for m in r.measurements if not m.ok]
    rec = recommend(r)
    assert rec.pick is None and "no cell was measured successfully" in rec.reason


def test_markdown_keeps_failed_cells_with_their_error():
    md = render_markdown(make_report())
    assert "| int8-static | tflite | failed |" in md
    assert "- int8-static/tflite: failed: delegate rejected INT8 op" in md
    assert "**Ship int8-dynamic/onnx.**" in md and "| int8-dynamic/onnx ★ | 2.500 | 0.5 |" in md


def test_csv_has_one_row_per_cell_of_every_target(tmp_path):
    reports = [make_report("local-cpu"), make_report("pi4", scale=3.0)]
    for r in reports:
        write_target_report(r, tmp_path)
    write_summary(reports, tmp_path)
    rows = list(csv.DictReader((tmp_path / "cells.csv").open()))
    assert len(rows) == 2 * len(CELLS)
    assert {(r["target"], r["variant"], r["format"]) for r in rows} == {
        (t, v, f) for t in ("local-cpu", "pi4") for v, f, *_ in CELLS}
    picked = [(r["target"], r["variant"], r["format"]) for r in rows if r["recommended"] == "True"]
    assert picked == [("local-cpu", "int8-dynamic", "onnx"), ("pi4", "int8-dynamic", "onnx")]
    pi_fp16 = next(r for r in rows if r["target"] == "pi4" and r["variant"] == "fp16")
    assert float(pi_fp16["latency_p50_ms"]) == pytest.approx(3.6 * 3.0)
    assert int(pi_fp16["size_bytes"]) == 6_500_000
    assert float(pi_fp16["compression_ratio"]) == pytest.approx(2.0)
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error"] == "delegate rejected INT8 op" and failed["latency_p50_ms"] == ""


def test_report_command_rerenders_with_new_limits(tmp_path, capsys):
    reports = [make_report("local-cpu"), make_report("pi4", scale=3.0)]
    for r in reports:
        write_target_report(r, tmp_path)
    write_summary(reports, tmp_path)
    for name in ("local-cpu/report.md", "local-cpu/report.html", "summary.md", "summary.html", "cells.csv"):
        (tmp_path / name).unlink()
    assert main(["report", str(tmp_path), "--max-latency-ms", "3", "--max-accuracy-drop", "0.1"]) == 0
    printed = capsys.readouterr().out.split()
    for name in ("local-cpu/report.md", "local-cpu/report.html", "local-cpu/report.json", "summary.md",
                 "summary.html", "cells.csv"):
        assert str(tmp_path / name) in printed and (tmp_path / name).is_file()
    # local-cpu: distilled (0.8 ms, -6 points) is within 10 points; on pi4 (x3) only distilled is under 3 ms.
    saved = json.loads((tmp_path / "local-cpu" / "report.json").read_text())
    assert saved["task"]["constraints"] == {"max_accuracy_drop": 0.1, "max_latency_ms": 3.0}
    assert "**Ship distilled/tflite.**" in (tmp_path / "local-cpu" / "report.md").read_text()
    assert "| pi4 | Test CPU | distilled/tflite | 2.400 |" in (tmp_path / "summary.md").read_text()
    assert load_report(tmp_path / "pi4" / "report.json").task["max_accuracy_drop"] == 0.1
    # A target folder alone: its renderings, no summary written into its parent.
    (tmp_path / "summary.md").unlink()
    written = rerender(tmp_path / "pi4")
    assert written == [tmp_path / "pi4" / "report.md", tmp_path / "pi4" / "report.html"]
    assert not (tmp_path / "summary.md").exists()


def test_report_command_on_a_folder_without_reports_is_a_user_error(tmp_path, capsys):
    with pytest.raises(HarnessError, match="no report.json found"):
        rerender(tmp_path)
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # 5 would mean 500 points: the option takes a fraction
        main(["report", str(tmp_path), "--max-accuracy-drop", "5"])
    assert e.value.code == 2
    assert "must be a fraction" in capsys.readouterr().err
