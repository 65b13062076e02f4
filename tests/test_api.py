"""A small run end to end through the Python API: real training, exports, runner, reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_config

from harness.api import RunResult, run_config
from harness.config.run import RunConfig
from harness.errors import HarnessError

SMALL = tiny_config(
    name="small",
    data={"per_class": 12, "eval_samples": 16},
    finetune={"epochs": 3, "lr": 0.003},
    variants=[
        {"name": "fp32", "formats": ["onnx", "tflite", "torch"]},
        {"name": "int8-static", "precision": "int8-static", "formats": ["onnx", "tflite"]},
        {"name": "pruned-50", "recipe": "prune", "settings": {"sparsity": 0.5, "finetune_epochs": 1}},
    ],
    measure={"runs": 10, "warmup": 2, "threads": 1},
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> RunResult:
    out = tmp_path_factory.mktemp("run") / "out"
    cache = tmp_path_factory.mktemp("cache")
    return run_config(RunConfig.from_dict(SMALL), out=out, cache_dir=cache)


def test_every_cell_is_measured_with_parity_and_lineage(small_run):
    rep = small_run.reports["local-cpu"]
    keys = [m.key for m in rep.measurements]
    assert keys == ["fp32/onnx", "fp32/tflite", "fp32/torch", "int8-static/onnx", "int8-static/tflite",
                    "pruned-50/onnx"]
    for m in rep.measurements:
        assert m.status == "ok", (m.key, m.error)
        assert m.artifact["parity"]["passed"] and 0 < m.artifact["parity"]["n"] <= 8
        lin = m.artifact["lineage"]
        assert lin["base"]["checkpoint_sha256"] and lin["artifact_sha256"] == m.artifact["sha256"]
        assert lin["recipe"] in ("reference", "prune") and lin["precision"] == m.artifact["precision"]
        lat = m.latency_ms
        assert lat["n"] >= 10 and lat["min"] <= lat["p50"] <= lat["max"]
        assert m.settings["threads"] == 1
        assert 0.0 <= m.accuracy["top1"] <= 1.0 and "top1_shifted" in m.accuracy
        assert m.artifact["macs"] > 0 and m.artifact["params"] > 0
    by = {m.key: m for m in rep.measurements}
    assert by["fp32/onnx"].accuracy["agreement"] == 1.0
    assert by["fp32/tflite"].settings["runtime"] == "ai-edge-litert"
    assert by["fp32/torch"].settings["runtime"] == "torch"
    assert by["int8-static/tflite"].artifact["size_bytes"] < by["fp32/tflite"].artifact["size_bytes"]
    assert by["int8-static/onnx"].derived["compression_ratio"] > 1.5
    assert abs(by["pruned-50/onnx"].artifact["sparsity"] - 0.5) < 0.05
    assert by["pruned-50/onnx"].derived["speedup_vs"] == "fp32/onnx"


def test_reports_are_written_and_round_trip(small_run):
    folder = small_run.report_dirs["local-cpu"]
    doc = json.loads((folder / "report.json").read_text())
    assert doc["schema_version"] == 1 and doc["target"]["kind"] == "local"
    assert doc["target"]["device"]["cores"] >= 1
    for name in ("report.md", "report.html"):
        assert (folder / name).stat().st_size > 500
    assert (small_run.out / "summary.md").is_file() and (small_run.out / "summary.html").is_file()
    assert (small_run.out / "cells.csv").read_text().count("\n") == 7  # header + 6 cells
    stab = doc["target"]["stability"]  # the first cell timed again after all the others
    assert stab["cell"] == "fp32/onnx" and stab["p50_again_ms"] > 0 and isinstance(stab["stable"], bool)
    md = (folder / "report.md").read_text()
    assert "## Device stability" in md
    for col in ("MACs", "compression", "speed-up", "top-1 shifted", "cold start"):
        assert col in md


def test_outputs_land_in_a_new_folder_only(small_run):
    with pytest.raises(HarnessError, match="already holds reports"):
        run_config(RunConfig.from_dict(SMALL), out=small_run.out)


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed (apt-get install chromium)")
def test_real_report_html_renders_in_chromium(small_run):
    for page in (small_run.report_dirs["local-cpu"] / "report.html", small_run.out / "summary.html"):
        with tempfile.TemporaryDirectory() as profile:
            out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                  f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
                                  page.as_uri()], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0
        assert "<svg" in out.stdout
    dom = out.stdout
    assert "fp32/onnx" in dom


def test_tflite_bench_from_the_cli(tmp_path, small_run):
    from harness.cli import main

    tfl = Path(small_run.reports["local-cpu"].cell("fp32", "tflite").artifact["path"])
    assert main(["bench", str(tfl), "--runs", "5", "--min-time", "0", "--out", str(tmp_path), "-q"]) == 0
    rep = json.loads((tmp_path / "local-cpu" / "report.json").read_text())
    m = rep["measurements"][0]
    assert m["status"] == "ok" and m["format"] == "tflite" and m["settings"]["runtime"] == "ai-edge-litert"


def test_eval_outputs_match_host_torch(small_run):
    """The device's outputs on the evaluation set agree with the torch reference the host computed."""
    m = small_run.reports["local-cpu"].cell("fp32", "onnx")
    assert m.accuracy["max_abs_diff"] < 1e-3
    assert np.isfinite(m.accuracy["max_abs_diff_shifted"])


def test_threads_sweep_and_affinity_from_config(tmp_path):
    cfg = dict(SMALL, variants=[{"name": "fp32", "formats": ["onnx"]},
                                {"name": "fp32-2t", "formats": ["onnx"], "threads": 2, "affinity": [0, 1]}],
               measure=dict(SMALL["measure"], threads_sweep=[1, 2], affinity=[0], cooldown_s=0.1))
    res = run_config(RunConfig.from_dict(cfg), out=tmp_path / "o", cache_dir=tmp_path / "c")
    m = res.reports["local-cpu"].measurements[0]
    assert m.ok, m.error
    assert [r["threads"] for r in m.threads_sweep] == [1, 2]
    assert all(r["p50"] > 0 and r["p50_ci"][0] <= r["p50"] <= r["p50_ci"][1] for r in m.threads_sweep)
    assert m.device_state["before"]["affinity"] == [0]
    assert m.device_state["during"] is not None
    assert "thread count" in (res.report_dirs["local-cpu"] / "report.md").read_text()
    per_cell = res.reports["local-cpu"].measurements[1]  # the variant's own threads and CPUs win
    assert per_cell.settings["threads"] == 2
    if (os.cpu_count() or 1) >= 2:
        assert per_cell.device_state["before"]["affinity"] == [0, 1]


def test_resume_only_one_variant_keeps_the_others(tmp_path):
    cfg = RunConfig.from_dict(dict(SMALL, variants=[{"name": "fp32", "formats": ["onnx"]},
                                                    {"name": "pruned-50", "recipe": "prune",
                                                     "settings": {"sparsity": 0.5, "finetune_epochs": 1}}]))
    first = run_config(cfg, out=tmp_path / "o", cache_dir=tmp_path / "c")
    before = {m.key: m.latency_ms["p50"] for m in first.reports["local-cpu"].measurements}
    again = run_config(cfg, out=tmp_path / "o", cache_dir=tmp_path / "c", only=["pruned-50"], resume=True)
    after = {m.key: m.latency_ms["p50"] for m in again.reports["local-cpu"].measurements}
    assert set(after) == {"fp32/onnx", "pruned-50/onnx"}
    # Same artifacts (cached by content): both cells are kept as measured, numbers unchanged.
    assert after == before


def test_interleaved_rounds_pool_the_timings(tmp_path):
    cfg = dict(SMALL, variants=[{"name": "fp32", "formats": ["onnx"]},
                                {"name": "int8", "precision": "int8-dynamic", "formats": ["onnx"]}],
               measure=dict(SMALL["measure"], rounds=3))
    res = run_config(RunConfig.from_dict(cfg), out=tmp_path / "o", cache_dir=tmp_path / "c")
    for m in res.reports["local-cpu"].measurements:
        assert m.ok, m.error
        assert len(m.settings["round_p50_ms"]) == 3
        assert m.latency_ms["n"] == len(m.raw_latencies_ms) >= 30
        assert min(m.settings["round_p50_ms"]) <= m.latency_ms["max"]
    assert "per round" in (res.report_dirs["local-cpu"] / "report.md").read_text()
