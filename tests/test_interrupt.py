"""Nothing lost, nothing left behind: SIGTERM half-way keeps every finished cell, `--resume` runs
only the rest, earlier reports are never overwritten unasked, no secret reaches a report or a log,
and a device keeps no job folders unless asked to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd import pids_matching, skip_reason
from tiny import tiny_config, to_toml

PY = sys.executable
SSH_REASON = skip_reason()
SECRET = "pw-Q7-do-not-log-me"
HOSTILE = "fp16 'q' \"$(touch pwned-{pid})\" ; x"  # a variant name with quotes, a command and spaces

CONFIG = tiny_config(
    name="interrupted",
    measure={"min_time_s": 1.0},
    variants=[{"name": "fp32", "formats": ["onnx"]},
              {"name": "int8-dynamic", "precision": "int8-dynamic", "formats": ["onnx"]}],
)



def _cells(path: Path) -> dict[str, dict]:
    return {m["variant"]: m for m in json.loads(path.read_text())["measurements"]}


def test_sigterm_keeps_finished_cells_and_resume_runs_only_the_rest(tmp_path, server):
    hostile = HOSTILE.format(pid=os.getpid())
    markers = [d / f"pwned-{os.getpid()}" for d in (Path.cwd(), Path("/tmp"), tmp_path, Path.home())]
    cfg = tmp_path / "run.toml"
    cfg.write_text(to_toml(dict(CONFIG, variants=CONFIG["variants"] + [
        {"name": hostile, "precision": "fp16", "formats": ["onnx"]}])))
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "EDGE_HARNESS_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp"),
           "EH_TEST_PASSWORD": SECRET}
    args = [PY, "-m", "harness.cli", "run", str(cfg), "--out", str(out), "--target", "local-cpu"]
    workdir = tmp_path / "device workdir"
    if server is not None:
        kh = tmp_path / "known_hosts"
        kh.write_text(server.known_hosts_line())
        tf = tmp_path / "targets.toml"
        tf.write_text(server.target_toml("dev", kh, python=PY, workdir=str(workdir), threads=1,
                                         password_env="EH_TEST_PASSWORD"))
        args += ["--target", "dev", "--targets", str(tf)]
    targets = ["local-cpu"] + (["dev"] if server is not None else [])

    # 1. Start the run; when the first cell is on disk, SIGTERM it while the next one is measured.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    report = out / "local-cpu" / "report.json"
    deadline = time.monotonic() + 150
    while not (report.is_file() and _cells(report)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    stopped_in = time.monotonic() - t0
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("edge-harness: interrupted; finished cells are on disk "
                                               "(use --resume to complete)")
    assert stopped_in < 15, stopped_in  # the running jobs were killed, not waited for
    logs = stdout + stderr

    # 2. Finished cells are intact, every report is valid JSON, nothing is running or half-written.
    kept = {}
    for t in targets:
        path = out / t / "report.json"
        cells = _cells(path) if path.is_file() else {}
        assert len(cells) < 3 and all(m["status"] == "ok" and m["latency_ms"]["n"] >= 5 for m in cells.values())
        kept[t] = cells
    assert kept["local-cpu"], "the first local cell was on disk before the signal"
    time.sleep(0.5)
    assert not pids_matching(str(tmp_path)), "a runner outlived the interrupted run"
    lock_dir = f"edge-harness-{os.geteuid()}"  # the device-lock folder (no XDG_RUNTIME_DIR here), not a job's
    assert not list(out.rglob("*.tmp")) and not [p for p in (tmp_path / "tmp").glob("edge-harness-*")
                                                 if p.name != lock_dir]
    if server is not None:
        assert os.listdir(workdir / "jobs") == []  # the device's job folder went with its runner

    # 3. --resume measures only the missing cells and keeps the finished ones as they were.
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    logs += done.stdout + done.stderr
    for t in targets:
        cells = _cells(out / t / "report.json")
        assert set(cells) == {"fp32", "int8-dynamic", hostile}
        assert all(m["status"] == "ok" for m in cells.values()), {k: m["error"] for k, m in cells.items()}
        for variant, old in kept[t].items():
            # Same numbers: not measured again (the ratio to the pick is re-derived as the pick may change).
            measured = {k: v for k, v in cells[variant]["latency_ms"].items() if not k.startswith("ratio_to_pick")}
            assert measured == {k: v for k, v in old["latency_ms"].items() if not k.startswith("ratio_to_pick")}
            assert cells[variant]["artifact"]["sha256"] == old["artifact"]["sha256"]
            assert f"{t}: {variant}/onnx: p50" not in done.stderr
        for variant in set(cells) - set(kept[t]):
            assert f"{t}: {variant}/onnx: p50" in done.stderr
    assert (out / "summary.md").is_file()

    # 4. A third run into the same folder, without --resume or --overwrite, is refused in one line.
    before = {p: p.read_bytes() for p in out.glob("*/report.*")}
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already holds reports" in again.stderr and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert {p: p.read_bytes() for p in out.glob("*/report.*")} == before

    # 5. Hygiene: the password is in no log, report or device file; the hostile name ran nothing.
    assert SECRET not in logs
    leaked = [p for root in (out, workdir) if root.exists() for p in root.rglob("*")
              if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert not [m for m in markers if m.exists()]
    if server is not None:
        assert os.listdir(workdir / "jobs") == []


@pytest.mark.parametrize("command", ["demo", "run"])
def test_earlier_reports_are_not_overwritten_unasked(tmp_path, command):
    out = tmp_path / "out"
    (out / "pi4").mkdir(parents=True)
    (out / "pi4" / "report.json").write_text('{"schema_version": 1}')
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "c"\n[model]\nbuiltin = "tiny_cnn"\n[[variants]]\nname = "fp32"\n')
    args = ["demo", "--quick"] if command == "demo" else ["run", str(cfg)]
    r = subprocess.run([PY, "-m", "harness.cli", *args, "--out", str(out), "-q"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"{out} already holds reports (pi4/report.json)" in r.stderr
    assert (out / "pi4" / "report.json").read_text() == '{"schema_version": 1}'
    assert sorted(p.name for p in out.iterdir()) == ["pi4"]


@pytest.mark.skipif(SSH_REASON is not None, reason=SSH_REASON or "")
@pytest.mark.parametrize("keep_files", [False, True])
def test_device_job_folders_are_removed_unless_kept(tmp_path, server, cnn_onnx, keep_files):
    from harness.cli import main

    kh = tmp_path / "known_hosts"
    kh.write_text(server.known_hosts_line())
    workdir = tmp_path / "wd"
    tf = tmp_path / "targets.toml"
    tf.write_text(server.target_toml("dev", kh, python=PY, workdir=str(workdir), keep_files=keep_files))
    for _ in range(2):
        assert main(["bench", str(cnn_onnx), "--target", "dev", "--targets", str(tf), "--runs", "3",
                     "--min-time", "0", "--out", str(tmp_path / "o"), "--overwrite", "-q"]) == 0
    jobs = sorted((workdir / "jobs").iterdir())
    if keep_files:
        assert len(jobs) == 2 and all((j / "out" / "result.json").is_file() for j in jobs)
    else:
        assert jobs == []
    # Only the content-addressed blobs stay (runner, watchdog, model, inputs), each sent once.
    assert len(list((workdir / "blobs").iterdir())) == 4
