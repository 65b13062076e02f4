"""Per-operator profiles from the runtimes' own profilers: `bench --profile` on real ONNX and TFLite models.

The folded operator times must add up to the run: their sum per run against the measured mean latency is
checked in a generous band (a check of the folding, where a slip is a factor of the run count or a missing
op type, not a timing test on a shared machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from targets import runner

# Operator time per run against the run time. A folding slip is a factor of the run count or a missing op
# type; a shared 2-core machine moves a mean by up to 2x (other processes preempt some runs), a median much
# less (the median run's operator time against the p50 read 0.90-1.19 at one thread with a load of 8).
MEAN_BAND = (0.25, 4.0)
MEDIAN_BAND = (0.5, 2.0)


@pytest.fixture(scope="module")
def conv_models(tmp_path_factory) -> dict[str, Path]:
    """A CNN big enough that its kernels, not the runtime's per-run overhead, fill a run (64 px input),
    exported with the project's exporters: fp32 and int8-dynamic ONNX, fp32 TFLite."""
    import torch
    from torch import nn

    from exporters.onnx import export_onnx
    from exporters.tflite import export_tflite

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(32, 3)).eval()
    example = (torch.randn(1, 3, 64, 64),)
    d = tmp_path_factory.mktemp("profile-models")
    return {"onnx": export_onnx(model, example, "fp32", d / "conv.onnx"),
            "int8": export_onnx(model, example, "int8-dynamic", d / "conv-int8.onnx"),
            "tflite": export_tflite(model, example, "fp32", d / "conv.tflite")}


def _bench(model: Path, out: Path, *extra: str, target: str = "local-cpu") -> dict:
    code = main(["bench", str(model), "--profile", "--threads", "1", "--runs", "40", "--min-time", "0",
                 "--out", str(out), "-q", "--target", target, *extra])
    assert code == 0
    return json.loads((out / target / "report.json").read_text())["measurements"][0]


def _check_folding(p: dict, mean_ms: float) -> None:
    assert p["runs"] >= 20 and p["nodes"] >= 4
    types = p["by_op_type"]
    assert sum(t["ms"] for t in types) == pytest.approx(p["op_ms_per_run"], abs=1e-3)
    assert sum(t["share"] for t in types) == pytest.approx(1.0, abs=1e-2)
    assert sum(v["ms"] for v in p["precision"].values()) == pytest.approx(p["op_ms_per_run"], abs=1e-3)
    top = [o["ms"] for o in p["top_ops"]]
    assert top == sorted(top, reverse=True) and top[0] <= p["op_ms_per_run"]
    ratio = p["op_ms_per_run"] / mean_ms
    assert p["vs_mean_latency"] == pytest.approx(ratio, rel=1e-3)
    assert MEAN_BAND[0] <= ratio <= MEAN_BAND[1], f"operators {p['op_ms_per_run']:.3f} ms vs mean {mean_ms:.3f} ms"
    assert MEAN_BAND[0] <= p["vs_unprofiled"] <= MEAN_BAND[1]
    assert MEDIAN_BAND[0] <= p["median_vs_p50_latency"] <= MEDIAN_BAND[1], p


def test_onnx_profile_adds_up_to_the_mean_latency(tmp_path, conv_models):
    m = _bench(conv_models["onnx"], tmp_path)
    p = m["op_profile"]
    _check_folding(p, m["latency_ms"]["mean"])
    assert "onnxruntime" in p["source"]
    assert p["by_op_type"][0]["op_type"] == "Conv"  # three convolutions are nearly all of this model's time
    assert set(p["precision"]) == {"float"}
    assert p["providers_ms"].keys() == {"CPUExecutionProvider"}
    md = (tmp_path / "local-cpu" / "report.md").read_text()
    assert "## Operator profiles" in md and "| Conv | float |" in md
    html = (tmp_path / "local-cpu" / "report.html").read_text()
    assert 'id="op-profile"' in html and 'data-op="Conv"' in html and 'class="top-ops"' in html


def test_int8_onnx_profile_names_the_integer_kernels(tmp_path, conv_models):
    m = _bench(conv_models["int8"], tmp_path)
    p = m["op_profile"]
    _check_folding(p, m["latency_ms"]["mean"])
    kinds = {t["op_type"]: t["kind"] for t in p["by_op_type"]}
    assert kinds["ConvInteger"] == "int8" and kinds["DynamicQuantizeLinear"] == "convert"
    assert p["precision"]["int8"]["nodes"] >= 3 and p["precision"]["int8"]["share"] > 0.3


def test_tflite_profile_adds_up_to_the_mean_latency(tmp_path, conv_models):
    m = _bench(conv_models["tflite"], tmp_path)
    p = m["op_profile"]
    _check_folding(p, m["latency_ms"]["mean"])
    assert "LiteRT" in p["source"]
    assert any(t["op_type"].startswith("Convolution") for t in p["by_op_type"][:1])
    assert set(p["precision"]) <= {"float", "convert"}


def test_no_profile_unless_asked(tmp_path, conv_models):
    assert main(["bench", str(conv_models["onnx"]), "--runs", "5", "--min-time", "0", "--out", str(tmp_path),
                 "-q"]) == 0
    m = json.loads((tmp_path / "local-cpu" / "report.json").read_text())["measurements"][0]
    assert m["op_profile"] is None
    assert "Operator profiles" not in (tmp_path / "local-cpu" / "report.md").read_text()


def test_runner_deletes_the_trace_file_it_reads(tmp_path, conv_models):
    np.savez(tmp_path / "x.npz", x=np.ones((1, 3, 64, 64), np.float32))
    job = {"artifact": str(conv_models["onnx"]), "format": "onnx", "timing_inputs": str(tmp_path / "x.npz"),
           "runs": 5, "warmup": 1, "min_time_s": 0, "threads": 1, "profile": True, "profile_runs": 10,
           "out": str(tmp_path / "out")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, runner.__file__, str(tmp_path / "job.json")], check=True, timeout=120)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    p = result["op_profile"]
    assert 10 <= p["runs"] <= runner.PROFILE_MAX_RUNS  # at least profile_runs, and enough to last PROFILE_MIN_S
    assert p["op_ms_raw_per_run"] >= p["op_ms_per_run"] and p["profiler_floor_us"] >= 0
    assert sorted(os.listdir(tmp_path / "out")) == ["result.json"]  # the chrome trace is gone


def test_fold_ops_sums_per_run_and_splits_kinds():
    events = [("conv1", "Conv", "int8", 300.0, "CPU", 0), ("conv1", "Conv", "int8", 100.0, "CPU", 1),
              ("add", "Add", "float", 80.0, "CPU", 1), ("q", "QuantizeLinear", "convert", 20.0, "CPU", 1)]
    p = runner.fold_ops(events, 2, "test", [300_000, 300_000], [250_000])
    assert p["op_ms_per_run"] == pytest.approx(0.25)  # 500 us over 2 runs
    assert p["op_ms_median_run"] == pytest.approx(0.25)  # runs of 300 and 200 us
    assert p["top_ops"][0] == {"name": "conv1", "op_type": "Conv", "kind": "int8", "ms": 0.2, "share": 0.8}
    assert p["precision"]["convert"] == {"nodes": 1, "ms": 0.01, "share": 0.04}
    assert p["wall_ms_per_run"] == pytest.approx(0.3) and p["unprofiled_ms_per_run"] == pytest.approx(0.25)


def test_profiler_floor_is_the_cheapest_node_capped_by_the_extra_wall_time():
    # Two runs of three nodes: the cheapest node's median (a Reshape at 5 us) is the profiler's own cost...
    events = [(n, n, "float", us, "CPU", r) for r in (0, 1) for n, us in (("conv", 400.0), ("add", 40.0),
                                                                          ("reshape", 5.0))]
    assert runner.onnx_profiler_floor_us(events, [600_000, 600_000], [500_000]) == pytest.approx(5.0)
    # ...unless profiling added less than that per node to the whole run (a graph of only heavy nodes).
    assert runner.onnx_profiler_floor_us(events, [506_000, 506_000], [500_000]) == pytest.approx(2.0)
    # A profiled pass faster than the unprofiled one (the device sped up) removes nothing.
    assert runner.onnx_profiler_floor_us(events, [400_000], [500_000]) == 0.0


def test_a_profile_that_does_not_add_up_says_so():
    from harness.measure.fold import with_latency_ratio

    ok = with_latency_ratio({"op_ms_per_run": 1.1, "unprofiled_ms_per_run": 1.0, "source": "onnxruntime"},
                            {"mean": 1.0})
    assert "caveat" not in ok
    off = with_latency_ratio({"op_ms_per_run": 1.5, "unprofiled_ms_per_run": 1.0, "source": "onnxruntime session"},
                             {"mean": 1.0})
    assert "1.50x the unprofiled runs" in off["caveat"] and "--threads 1" in off["caveat"]


@pytest.mark.parametrize("tag, kind", [("Convolution (NHWC, QC8) IGEMM", "int8"), ("Convolution (NHWC, F32) IGEMM",
                                       "float"), ("Fully Connected (NC, QS8, QC8W) GEMM", "int8"),
                                       ("Convert (NC, F32, QD8)", "convert"), ("Transpose (ND, X8) Transpose", "int8"),
                                       ("CONV_2D/int8", "int8"), ("CONV_2D/float32", "float")])
def test_litert_kernel_names_tell_their_precision(tag, kind):
    assert runner.litert_op_kind(tag) == kind


def test_profile_over_ssh_is_folded_on_the_device(tmp_path, server, conv_models):
    if server is None:
        pytest.skip("no sshd here (tests/sshd.py skip_reason)")
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line())
    tf = tmp_path / "targets.toml"
    tf.write_text(server.target_toml("dev", known, python=sys.executable, workdir=str(tmp_path / "wd"), threads=1))
    m = _bench(conv_models["int8"], tmp_path / "o", "--targets", str(tf), target="dev")
    _check_folding(m["op_profile"], m["latency_ms"]["mean"])
    assert m["op_profile"]["precision"]["int8"]["nodes"] >= 3
    assert not list((tmp_path / "wd").rglob("ort-profile*.json"))  # the trace stayed on the device, then went
