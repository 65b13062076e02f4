"""One job per device across processes, on this machine: a second run waits (saying who holds the device)
or, with --no-wait, fails in one line; two concurrent `bench` runs on local-cpu never measure at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from targets import device_lock

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

HOLD = ("import sys,time; from targets.device_lock import LocalDeviceLock; l=LocalDeviceLock(sys.argv[1]); "
        "l.acquire('test'); print('held', flush=True); time.sleep(float(sys.argv[2]))")


@pytest.fixture
def runtime(tmp_path, monkeypatch) -> dict[str, str]:
    """A private runtime folder for the lock files, so other test sessions on this machine do not interfere."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    return {**os.environ, "XDG_RUNTIME_DIR": str(d), "PYTHONPATH": str(ROOT)}


def _holder(env: dict[str, str], seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([PY, "-c", HOLD, "local", str(seconds)], stdout=subprocess.PIPE, text=True, env=env,
                         cwd=ROOT)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_no_wait_fails_in_one_line_naming_the_holder(tmp_path, runtime, cnn_onnx, capsys):
    holder = _holder(runtime, 30)
    try:
        code = main(["bench", str(cnn_onnx), "--runs", "3", "--warmup", "0", "--min-time", "0", "--out",
                     str(tmp_path / "o"), "-q", "--no-wait"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0, err
        assert err.startswith("edge-harness: error: target local-cpu is busy: held by ")
        assert f":{holder.pid} since " in err and "--no-wait" in err
    finally:
        holder.kill()
        holder.wait()


def test_a_second_run_waits_and_says_who_holds_the_device(tmp_path, runtime, cnn_onnx, capsys):
    holder = _holder(runtime, 3)
    t0 = time.monotonic()
    try:
        code = main(["bench", str(cnn_onnx), "--runs", "3", "--warmup", "0", "--min-time", "0", "--out",
                     str(tmp_path / "o"), "-q"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 0
    assert time.monotonic() - t0 >= 2.0  # it waited for the holder to let go
    assert f"edge-harness: waiting for local-cpu: held by {os.uname().nodename}:{holder.pid} since " in err


def test_lock_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "shared"
    (d / "edge-harness").mkdir(parents=True, mode=0o777)
    os.chmod(d / "edge-harness", 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    with pytest.raises(device_lock.TargetError, match="not private to this user"):
        device_lock.runtime_dir()


def _window(out: Path, target: str) -> tuple[float, float]:
    rep = json.loads((out / target / "report.json").read_text())
    m = rep["measurements"][0]
    assert m["status"] == "ok", m["error"]
    return rep["target"]["device"]["time"], m["device_state"]["after"]["time"]


def concurrent_benches(tmp_path: Path, model: Path, target: str, env: dict[str, str],
                       extra: tuple[str, ...] = ()) -> list[tuple[float, float]]:
    """Start two `bench` runs at once against `target`; both must succeed; returns their measuring windows."""
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    procs = [subprocess.Popen([PY, "-m", "harness.cli", "bench", str(model), "--target", target, "--inputs",
                               str(inputs), "--runs", "20", "--warmup", "1", "--min-time", "1.5", "--threads", "1",
                               "--out", str(tmp_path / f"o{i}"), "-q", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    # At least the later one waits for the device; the earlier may wait in turn for its output check on this
    # machine (the host reference run takes the same machine lock) while the later one measures.
    assert sum("waiting for " in err for _, err in outs) >= 1, [err for _, err in outs]
    return [_window(tmp_path / f"o{i}", target) for i in range(2)]


def test_two_concurrent_benches_on_local_cpu_are_serialized(tmp_path, runtime, cnn_onnx):
    (a0, a1), (b0, b1) = concurrent_benches(tmp_path, cnn_onnx, "local-cpu", runtime)
    assert a1 - a0 >= 1.5 and b1 - b0 >= 1.5
    assert a1 <= b0 or b1 <= a0, ((a0, a1), (b0, b1))  # the measuring windows do not overlap
