"""The adb target against stand-ins (tests/phone.py): a stand-in `adb` whose phone is a local folder, and a
stand-in `benchmark_model` that prints published benchmark_model logs. No phone can exist here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from phone import SERIAL, install, make_phone

from harness.cli import main
from harness.config.run import RunConfig, VariantConfig
from harness.config.targets_file import load_targets_file, make_target
from harness.measure.loop import measure_target
from harness.progress import Progress


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory, tiny_cnn) -> Path:
    """The conftest CNN as fp32 TFLite (batch 1, float32 (1, 3, 16, 16))."""
    import torch

    from exporters import EXPORTERS

    path = tmp_path_factory.mktemp("tflite") / "model.tflite"
    EXPORTERS["tflite"](tiny_cnn, (torch.randn(1, 3, 16, 16),), "fp32", path)
    return path


@pytest.fixture
def phone(tmp_path, monkeypatch):
    ph = make_phone(tmp_path / "phone")
    for k, v in ph.env.items():
        monkeypatch.setenv(k, v)
    return ph


def targets(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "targets.toml"
    p.write_text(text)
    return p


def test_bench_on_the_phone_reports_benchmark_model_figures_and_the_getprop_card(tmp_path, phone, cnn_tflite, capsys):
    tf = targets(tmp_path, phone.toml(affinity="big"))
    out = tmp_path / "out"
    assert main(["bench", str(cnn_tflite), "--target", "phone", "--targets", str(tf), "--runs", "30", "--warmup",
                 "4", "--out", str(out), "-q"]) == 0
    assert "no CI" in capsys.readouterr().out
    rep = json.loads((out / "phone" / "report.json").read_text())
    (m,) = rep["measurements"]
    assert m["status"] == "ok", m["error"]
    # The figures are benchmark_model's (the published TI log the stand-in prints), in ms.
    lat = m["latency_ms"]
    assert lat["n"] == 30 and lat["p50"] == pytest.approx(899.281) and lat["mean"] == pytest.approx(899.641)
    assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"] and lat["std"] == pytest.approx(1.549)
    assert lat["p50_ci"] is None and lat["p99"] is None and m["raw_latencies_ms"] is None  # no samples, no CI
    assert m["cold_start_ms"]["load"] == pytest.approx(614.333) and m["cold_start_ms"]["first_inference"] > 0
    assert m["memory_mb"]["peak_rss"] == pytest.approx(93.2383)
    s = m["settings"]
    assert s["runtime"] == "litert-benchmark_model" and s["threads"] == 4 and s["affinity"] == [4, 5, 6, 7]
    assert s["op_profile"][0]["node_type"] == "CONV_2D" and s["warmup"] == 1 and not m["accuracy"]
    assert any("accuracy: not measured" in n for n in s["not_measured"])
    # The device card is getprop's, the clusters the phone's cpufreq.
    dev = rep["target"]["device"]
    assert dev["android"]["model"] == "Pixel 7" and dev["android"]["soc"] == "GS201"
    assert dev["android"]["android"] == "14" and dev["android"]["abi"] == "arm64-v8a"
    assert dev["big_cores"] == [4, 5, 6, 7] and dev["temperature_c"]["battery"] == pytest.approx(31.2)
    # What the tool was asked: the cell's counts and threads, pinned to the big cores, profiling on.
    (call,) = [json.loads(c) for c in phone.calls()]
    f = call["flags"]
    assert (f["num_runs"], f["warmup_runs"], f["num_threads"]) == ("30", "4", "4")
    assert f["enable_op_profiling"] == "true" and f["report_peak_memory_footprint"] == "true"
    assert phone.masks() == ["f0"]
    # Pushed once: a second bench sends nothing again.
    assert rep["target"]["transfer"]["files_sent"] == 2
    assert main(["bench", str(cnn_tflite), "--target", "phone", "--targets", str(tf), "--out", str(tmp_path / "o2"),
                 "-q"]) == 0
    again = json.loads((tmp_path / "o2" / "phone" / "report.json").read_text())["target"]["transfer"]
    assert again["files_sent"] == 0 and again["files_reused"] == 2


def test_a_phone_lost_mid_run_fails_its_cell_in_one_line_and_the_run_goes_on(tmp_path, phone, cnn_tflite):
    from tiny import tiny_config

    from exporters.base import Artifact
    from harness.build.cells import Cell, Prepared

    prep = Prepared()
    for name in ("a", "b", "c"):
        prep.cells.append(Cell(VariantConfig(name=name, formats=["tflite"]), "tflite",
                               Artifact.from_file(cnn_tflite, "tflite"), status="ready"))
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    prep.timing_inputs = prep.eval_inputs = tmp_path / "x.npz"
    cfg = RunConfig.from_dict(tiny_config(measure={"runs": 10, "warmup": 1, "min_time_s": 0.0,
                                                   "strategy": "sequential"}))
    saves = []

    def save(report):  # after each cell: pull the cable after the first, plug it back after the second
        saves.append(len(report.measurements))
        phone.unplug() if len(saves) == 1 else phone.plug_in()

    specs = load_targets_file(targets(tmp_path, phone.toml()))
    with make_target("phone", specs) as target:
        report = measure_target(target, prep, cfg, save, Progress(quiet=True))
    by = {m.variant: m for m in report.measurements}
    assert by["a"].ok and by["c"].ok and by["c"].latency_ms["p50"] == pytest.approx(899.281)
    assert by["b"].status == "failed" and "\n" not in by["b"].error
    assert f"adb lost the phone {SERIAL}" in by["b"].error and "adb devices" in by["b"].error


def test_onnx_cells_use_onnxruntime_perf_test_or_are_skipped_with_a_reason(tmp_path, phone, cnn_onnx):
    tf = targets(tmp_path, phone.toml())
    with make_target("phone", load_targets_file(tf)) as t:
        from targets.base import Job

        raw = t.run(Job(artifact=t.deploy(cnn_onnx), format="onnx", runs=5))
    assert raw.status == "skipped" and "onnxruntime_perf_test" in raw.error
    perf = install("onnxruntime_perf_test", tmp_path / "host-bin/onnxruntime_perf_test")
    tf = targets(tmp_path, phone.toml(onnxruntime_perf_test=str(perf), threads=2))
    out = tmp_path / "out"
    assert main(["bench", str(cnn_onnx), "--target", "phone", "--targets", str(tf), "--runs", "7", "--out", str(out),
                 "-q"]) == 0
    m = json.loads((out / "phone" / "report.json").read_text())["measurements"][0]
    assert m["status"] == "ok" and m["latency_ms"]["n"] == 7 and m["latency_ms"]["p50"] == pytest.approx(60.3562)
    assert m["latency_ms"]["p99"] == pytest.approx(91.2857) and m["latency_ms"]["p50_ci"] is None
    assert m["settings"]["runtime"] == "onnxruntime_perf_test" and m["settings"]["threads"] == 2


def test_targets_check_shows_the_phone(tmp_path, phone, capsys):
    tf = targets(tmp_path, phone.toml())
    assert main(["targets", "check", "phone", "--targets", str(tf)]) == 0
    out = capsys.readouterr().out
    assert "Google Pixel 7" in out and "SoC GS201" in out and "Android 14 (SDK 34), arm64-v8a" in out
    assert "4x 1.80 GHz: 0-3" in out and "2x 2.85 GHz: 6-7" in out and "31 C" in out
    assert 'affinity = "big"' in out and "[4, 5, 6, 7]" in out
    assert main(["targets", "setup", "phone", "--targets", str(tf)]) != 0
    assert "needs no set-up" in capsys.readouterr().err
    phone.unplug()
    assert main(["targets", "check", "phone", "--targets", str(tf)]) == 1
    assert "adb lost the phone" in capsys.readouterr().out


def test_settings_are_checked(tmp_path, phone, capsys):
    tf = targets(tmp_path, phone.toml().replace(str(phone.benchmark_model), "/nowhere/benchmark_model"))
    assert main(["targets", "check", "phone", "--targets", str(tf)]) == 1
    assert "benchmark_model '/nowhere/benchmark_model' not found" in capsys.readouterr().out
    tf = targets(tmp_path, '[targets.p]\nkind = "adb"\nbenchmark_model = "x"\n')
    assert main(["targets", "check", "p", "--targets", str(tf)]) != 0
    assert "targets.p.serial is required for kind adb" in capsys.readouterr().err
