"""`edge-harness bench` end to end on real files, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from harness.cli import main
from harness.measure.inputs import concrete_shape, declared_inputs, generate, onnx_inputs

REPORT_KEYS = {"schema_version", "target", "measurements", "task", "created", "harness_version"}
CELL_KEYS = {"variant", "format", "status", "error", "artifact", "latency_ms", "cold_start_ms", "memory_mb",
             "accuracy", "settings"}


def test_generated_inputs_respect_int64_and_embedding_bounds(embedding_onnx):
    specs = onnx_inputs(embedding_onnx)
    assert len(specs) == 1
    s = specs[0]
    assert s.dtype == "int64" and s.shape == [None, None] and s.high == 50
    assert concrete_shape(s) == [1, 32]
    feeds = generate(specs, seed=3)
    ids = feeds[s.name]
    assert ids.dtype == np.int64 and ids.shape == (1, 32)
    assert ids.min() >= 0 and ids.max() < 50


def test_bench_an_int64_model_with_dynamic_dims(tmp_path, embedding_onnx, capsys):
    code = main(["bench", str(embedding_onnx), "--runs", "20", "--warmup", "2", "--threads", "1",
                 "--min-time", "0", "--out", str(tmp_path), "-q"])
    assert code == 0
    assert "p50" in capsys.readouterr().out
    rep = json.loads((tmp_path / "local-cpu" / "report.json").read_text())
    assert REPORT_KEYS <= set(rep) and rep["schema_version"] == 1
    m = rep["measurements"][0]
    assert CELL_KEYS <= set(m)
    assert m["status"] == "ok" and m["format"] == "onnx"
    lat = m["latency_ms"]
    assert lat["n"] >= 20 and lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert lat["p50_ci"][0] <= lat["p50"] <= lat["p50_ci"][1]
    assert m["settings"]["threads"] == 1 and m["settings"]["runtime"] == "onnxruntime"
    assert m["artifact"]["size_bytes"] == embedding_onnx.stat().st_size
    assert len(m["artifact"]["sha256"]) == 64
    assert (tmp_path / "local-cpu" / "report.md").is_file() and (tmp_path / "summary.md").is_file()


def test_bench_with_given_inputs(tmp_path, cnn_onnx):
    np.savez(tmp_path / "x.npz", anything=np.ones((1, 3, 16, 16), np.float32))
    assert main(["bench", str(cnn_onnx), "--inputs", str(tmp_path / "x.npz"), "--runs", "5", "--min-time", "0",
                 "--out", str(tmp_path / "o"), "-q"]) == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["missing", "corrupt", "bad-shape", "empty-npz", "bad-suffix"])
def test_bench_user_mistakes_print_one_line(tmp_path, cnn_onnx, case):
    model = cnn_onnx
    extra: list[str] = []
    if case == "missing":
        model = tmp_path / "nope.onnx"
    elif case == "corrupt":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(cnn_onnx.read_bytes()[:500])
    elif case == "bad-shape":
        np.savez(tmp_path / "x.npz", x=np.zeros((1, 3, 9, 9), np.float32))
        extra = ["--inputs", str(tmp_path / "x.npz")]
    elif case == "empty-npz":
        np.savez(tmp_path / "x.npz")
        extra = ["--inputs", str(tmp_path / "x.npz")]
    elif case == "bad-suffix":
        model = tmp_path / "model.bin"
        model.write_bytes(b"abc")
    out = _cli("bench", str(model), *extra, "--out", str(tmp_path / "o"), "-q")
    assert out.returncode == 2
    # Another run holding this machine makes ours wait first, and say so: not part of the error.
    lines = [ln for ln in out.stderr.strip().splitlines() if not ln.startswith("edge-harness: waiting for ")]
    assert len(lines) == 1 and lines[0].startswith("edge-harness: error: "), out.stderr
    assert "Traceback" not in out.stderr


def test_declared_inputs_of_a_corrupt_file_is_a_model_error(tmp_path):
    from harness.errors import ModelError

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError):
        declared_inputs(bad, "onnx")


def test_bench_never_overwrites_an_earlier_report_unasked(tmp_path, cnn_onnx, monkeypatch):
    args = ["bench", str(cnn_onnx), "--runs", "3", "--min-time", "0", "-q"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    first = (tmp_path / "o" / "local-cpu" / "report.json").read_text()
    out = _cli(*args, "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "already holds reports" in out.stderr and "--overwrite" in out.stderr
    assert (tmp_path / "o" / "local-cpu" / "report.json").read_text() == first
    assert main([*args, "--out", str(tmp_path / "o"), "--overwrite"]) == 0
    # Without --out every bench gets a folder of its own.
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    made = list((tmp_path / "reports" / "bench").glob("cnn-*/local-cpu/report.json"))
    assert len(made) == 1


@pytest.mark.parametrize("args, needle", [
    (["bench", "m.onnx", "--runs", "abc"], "'abc' is not an integer"),
    (["bench", "m.onnx", "--threads", "0"], "must be >= 1"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_mistakes_are_one_line_too(args, needle):
    out = _cli(*args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("edge-harness: error: ") and needle in out.stderr


def test_bench_checks_the_device_outputs_against_this_hosts_runtime(tmp_path, cnn_onnx):
    from harness.bench import BenchSettings, bench
    from harness.measure.output_check import compare_outputs

    reports, _ = bench(cnn_onnx, settings=BenchSettings(runs=5, warmup=1, min_time_s=0.0), out=tmp_path / "o")
    m = reports[0].measurements[0]
    check = m.settings["output_check"]
    assert check["passed"] is True and check["max_abs_diff"] == 0.0 and check["agreement"] == 1.0
    assert m.accuracy == {"n": 1, "agreement": 1.0, "max_abs_diff": 0.0}
    assert check["host_runtime"].startswith("onnxruntime ")
    # A broken runtime: outputs off by a lot, or of another shape, fail the check with the reason.
    ref = [np.array([[0.1, 2.0, -1.0]], dtype=np.float32)]
    bad = compare_outputs([ref[0] + np.array([[3.0, 0.0, 0.0]], dtype=np.float32)], ref)
    assert bad["passed"] is False and bad["agreement"] == 0.0 and "max abs diff 3" in bad["reason"]
    assert compare_outputs([np.zeros((2, 3), np.float32)], ref)["passed"] is False


def test_a_pt2_file_needs_trust_pickle(tmp_path):
    pt2 = tmp_path / "untrusted.pt2"
    pt2.write_bytes(b"PK\x03\x04 not really a program")
    r = _cli("bench", str(pt2), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "pickle" in r.stderr and "--trust-pickle" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list((tmp_path / "o").glob("*/report.json"))
    r = _cli("bench", str(pt2), "--trust-pickle", "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "not a readable torch.export file" in r.stderr


def test_bench_never_imports_torch(tmp_path, cnn_onnx):
    """A device-side user benches an ONNX file without the training stack: `edge-harness bench` must not load
    torch (about 2 s of start-up, and gigabytes where only onnxruntime is installed)."""
    code = ("import sys; from harness.cli import main; "
            f"rc = main(['bench', {str(cnn_onnx)!r}, '--runs', '5', '--min-time', '0', '--out', {str(tmp_path)!r}, "
            "'-q']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr[-2000:]
