"""The runner on real ONNX models, in a fresh subprocess, through the local target."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from targets import RUNNER_PATH, Job, LocalTarget


@pytest.fixture()
def local():
    t = LocalTarget("local-cpu", threads=1)
    yield t
    t.close()


def test_probe_describes_the_device():
    out = subprocess.run([sys.executable, str(RUNNER_PATH), "--probe"], capture_output=True, text=True, check=True)
    p = json.loads(out.stdout)
    assert p["cores"] >= 1 and p["python"].count(".") == 2
    assert "onnxruntime" in p["runtimes"] and p["machine"]
    assert p["cpu_model"]


def test_runner_times_and_evaluates_onnx(tmp_path, cnn_onnx, local):
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ev = np.random.default_rng(1).standard_normal((7, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "t.npz", input=x)
    np.savez(tmp_path / "e.npz", input=ev)
    raw = local.run(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "t.npz"),
                        eval_inputs=str(tmp_path / "e.npz"), runs=30, warmup=3, min_time_s=0.0, threads=1))
    assert raw.ok, raw.error
    d = raw.data
    assert len(d["latencies_ns"]) >= 30 and all(v > 0 for v in d["latencies_ns"])
    assert len(d["warmup_ns"]) == 3
    assert d["load_ns"] > 0 and d["first_inference_ns"] > 0
    assert d["runtime"] == "onnxruntime" and d["runtime_version"] == ort.__version__
    assert d["threads"] == 1
    mem = d["memory_mb"]
    assert 0 < mem["rss_before_load"] <= mem["peak_rss"] and mem["rss_after_load"] <= mem["peak_rss"]
    # Evaluation outputs match onnxruntime run in this process.
    sess = ort.InferenceSession(str(cnn_onnx))
    want = sess.run(None, {sess.get_inputs()[0].name: ev})[0]
    assert raw.outputs is not None and raw.outputs[0].shape == (7, 3)
    np.testing.assert_allclose(raw.outputs[0], want, rtol=1e-5, atol=1e-6)


def test_fixed_mode_honours_min_time(tmp_path, cnn_onnx, local):
    np.savez(tmp_path / "t.npz", input=np.zeros((1, 3, 16, 16), np.float32))
    raw = local.run(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "t.npz"),
                        runs=5, warmup=0, min_time_s=0.3))
    assert raw.ok
    assert sum(raw.data["latencies_ns"]) >= 0.25e9 * 0.5  # loop time mostly inference
    assert raw.data["stopped_by"] == "count"


@pytest.mark.parametrize("arr, expect", [
    (np.zeros((1, 3, 8, 8), np.float32), "expects shape [?, 3, 16, 16]"),
    (np.zeros((1, 3, 16, 16), np.int64), "expects float32"),
    (np.full((1, 3, 16, 16), np.nan, np.float32), "NaN or inf"),
])
def test_bad_inputs_fail_the_job_with_a_reason(tmp_path, cnn_onnx, local, arr, expect):
    np.savez(tmp_path / "t.npz", input=arr)
    raw = local.run(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "t.npz"), runs=1))
    assert not raw.ok and raw.exit_code == 2
    assert expect in raw.error and "\n" not in raw.error


def test_corrupt_model_fails_the_job(tmp_path, cnn_onnx, local):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(cnn_onnx.read_bytes()[:300])
    np.savez(tmp_path / "t.npz", input=np.zeros((1, 3, 16, 16), np.float32))
    raw = local.run(Job(artifact=str(bad), format="onnx", timing_inputs=str(tmp_path / "t.npz")))
    assert not raw.ok and "cannot load bad.onnx with onnxruntime" in raw.error


def test_a_crashing_runner_fails_only_its_job(tmp_path, cnn_onnx, monkeypatch):
    """A runner killed by a signal (here: a Python that segfaults) becomes a failed cell."""
    crash = tmp_path / "crashpy"
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(0o755)
    t = LocalTarget("crashy", python=str(crash))
    try:
        raw = t.run(Job(artifact=str(cnn_onnx), format="onnx"))
    finally:
        t.close()
    assert not raw.ok and "SIGSEGV" in raw.error


def test_a_hanging_runner_is_killed_at_the_timeout(tmp_path, cnn_onnx):
    hang = tmp_path / "hangpy"
    hang.write_text("#!/bin/sh\nsleep 30\n")
    hang.chmod(0o755)
    t = LocalTarget("hangs", python=str(hang))
    try:
        raw = t.run(Job(artifact=str(cnn_onnx), format="onnx", timeout_s=1.0))
    finally:
        t.close()
    assert not raw.ok and "timed out after 1 s" in raw.error


@pytest.mark.parametrize("dynamic_int8", [False, True])
def test_evaluation_runs_in_batches_only_where_outputs_do_not_depend_on_the_batch(tmp_path, cnn_onnx, local,
                                                                                 dynamic_int8):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = cnn_onnx
    if dynamic_int8:  # one activation scale over the whole batch: a sample's output depends on its batch-mates
        model = tmp_path / "cnn-int8.onnx"
        quantize_dynamic(str(cnn_onnx), str(model), weight_type=QuantType.QUInt8)
    rng = np.random.default_rng(3)
    ev = (rng.standard_normal((40, 3, 16, 16)) * rng.uniform(0.1, 10, (40, 1, 1, 1))).astype(np.float32)
    np.savez(tmp_path / "e.npz", input=ev)
    raw = local.run(Job(artifact=str(model), format="onnx", eval_inputs=str(tmp_path / "e.npz"), runs=0,
                        eval_batch=16, threads=1))
    assert raw.ok, raw.error
    assert raw.data["eval_batch"] == (1 if dynamic_int8 else 16)
    sess = ort.InferenceSession(str(model))
    one_by_one = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: ev[i:i + 1]})[0] for i in range(40)])
    np.testing.assert_allclose(raw.outputs[0], one_by_one, rtol=1e-5, atol=1e-5)
