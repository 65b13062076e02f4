"""The labgrid lab target against a real labgrid-coordinator and labgrid-exporter on loopback.

The exporter's NetworkService resources point at test sshds (the session's `server` and one more),
so a reserved place is measured through the real SSH target. Skipped with the reason where labgrid
or sshd cannot run; traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from labgrid_lab import Board, Lab, start_lab
from labgrid_lab import skip_reason as lab_skip_reason
from sshd import Sshd, free_port, pids_matching, skip_reason, start_sshd

REASON = skip_reason() or lab_skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from harness.cli import main  # noqa: E402
from harness.config.targets_file import load_targets_file, make_target  # noqa: E402
from harness.doctor import check_targets  # noqa: E402
from harness.errors import ConfigError, TargetError, TargetSettingError  # noqa: E402
from targets.base import Job  # noqa: E402
from targets.labgrid import LabgridTarget  # noqa: E402
from targets.labgrid.claims import ClaimBook  # noqa: E402

pytestmark = pytest.mark.ssh
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("labgrid")


@pytest.fixture(scope="module")
def server2(tmp: Path, server: Sshd):
    """A second board: another sshd that lets the same client key in."""
    s = start_sshd(tmp / "sshd2", client_key=server.client_key)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def lab(tmp: Path, server: Sshd, server2: Sshd):
    lab = start_lab(tmp / "lab", [Board("solo-1", server.host, server.port, {"board": "solo"}),
                                  Board("twin-a", server.host, server.port, {"board": "twin"}),
                                  Board("twin-b", server2.host, server2.port, {"board": "twin"})])
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def workdir():
    d = Path(f"/tmp/edge-harness-lab-{os.getpid()}")
    yield str(d)
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture(scope="module")
def targets_file(tmp: Path, lab: Lab, server: Sshd, server2: Sshd, workdir: str) -> Path:
    known = tmp / "known_hosts"
    known.write_text(server.known_hosts_line() + server2.known_hosts_line())
    common = (f'kind = "labgrid"\ncoordinator = "{lab.address}"\nkey = "{server.client_key}"\n'
              f'known_hosts = "{known}"\nssh_config = ""\npython = "{sys.executable}"\n'
              "threads = 1\nreserve_timeout_s = 60\n")
    p = tmp / "targets.toml"
    # The twins' sshds share this machine's disk, like boards with one NFS root: a workdir per place.
    p.write_text(f'[targets.solo]\n{common}workdir = "{workdir}"\ntags = {{ board = "solo" }}\n\n'
                 f'[targets.twins]\n{common}workdir = "{workdir}/{{place}}"\ntags = {{ board = "twin" }}\n'
                 f'count = 2\n\n[targets.pi1]\n{common}workdir = "{workdir}"\nplace = "solo-1"\n')
    return p


@pytest.fixture(scope="module")
def inputs(tmp: Path) -> Path:
    p = tmp / "inputs.npz"
    np.savez(p, x=np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    return p


def _bench_args(model: Path, tf: Path, out: Path, inputs: Path, target: str = "solo", min_time: float = 0) -> list[str]:
    return ["bench", str(model), "--target", target, "--targets", str(tf), "--runs", "20", "--warmup", "2",
            "--min-time", str(min_time), "--out", str(out), "--inputs", str(inputs), "-q"]


def _place(lab: Lab, name: str) -> str:
    return lab.client("-p", name, "show")


def _claims(lab: Lab) -> list[dict]:
    book = ClaimBook(lab.address)
    return [json.loads(p.read_text()) for p in book.folder.glob(f"{book.prefix}-*.json")]


def _window(report: dict) -> tuple[float, float]:
    """When the run held its board: from acquiring it to the end of its last timed cell (device clock)."""
    start = report["target"]["labgrid"]["reservation"]["acquired_at"]
    return start, max(m["device_state"]["after"]["time"] for m in report["measurements"])


def _free(lab: Lab, place: str) -> bool:
    text = _place(lab, place)
    return "acquired: None" in text and "reservation:" not in text


def test_bench_reserves_acquires_and_releases_a_place(tmp, lab, server, targets_file, cnn_onnx, inputs, capsys):
    t0 = time.monotonic()
    assert main(_bench_args(cnn_onnx, targets_file, tmp / "one", inputs)) == 0
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    rep = json.loads((tmp / "one" / "solo" / "report.json").read_text())
    t = rep["target"]
    assert t["kind"] == "labgrid" and t["host"] == f"root@127.0.0.1:{server.port}"
    assert t["labgrid"]["place"] == "solo-1" and t["labgrid"]["tags"] == {"board": "solo"}
    res = t["labgrid"]["reservation"]
    assert len(res["token"]) >= 8 and res["waited_s"] < 5 and 0 < res["reserve_acquire_s"] < took
    assert t["transfer"]["files_sent"] >= 3 and t["device"]["cores"] >= 1
    (m,) = rep["measurements"]
    assert m["status"] == "ok", m["error"]
    lat = m["latency_ms"]
    assert lat["n"] >= 20 and lat["min"] <= lat["p50"] <= lat["max"]
    assert "acquired place solo-1" in err
    # Released and the reservation cancelled: the place is free for the next run at once.
    assert _free(lab, "solo-1") and lab.client("reservations").strip() == ""
    assert _claims(lab) == []


def test_two_concurrent_runs_wanting_one_place_are_serialized(tmp, lab, targets_file, cnn_onnx, inputs):
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli",
                               *_bench_args(cnn_onnx, targets_file, tmp / f"con{i}", inputs, min_time=0.5)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reps = [json.loads((tmp / f"con{i}" / "solo" / "report.json").read_text()) for i in (0, 1)]
    assert {r["target"]["labgrid"]["place"] for r in reps} == {"solo-1"}
    assert all(r["measurements"][0]["status"] == "ok" for r in reps)
    (a0, a1), (b0, b1) = sorted(_window(r) for r in reps)
    assert a0 < a1 < b0 < b1  # the second run measured only after the first had released the board
    later = max(range(2), key=lambda i: reps[i]["target"]["labgrid"]["reservation"]["acquired_at"])
    assert reps[later]["target"]["labgrid"]["reservation"]["waited_s"] > 1.0
    assert "waiting for a place with board=solo, all 1 taken (solo-1: held by" in outs[later][1]
    assert _free(lab, "solo-1")


def test_a_run_killed_with_sigkill_leaves_a_place_the_next_run_takes(tmp, lab, targets_file, cnn_onnx, inputs,
                                                                      workdir):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli",
                             *_bench_args(cnn_onnx, targets_file, tmp / "killed", inputs, min_time=60)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(c["running"] and c["pid"] == proc.pid for c in _claims(lab)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
    time.sleep(0.5)  # the runner is timing on the board
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "acquired: " in _place(lab, "solo-1") and not _free(lab, "solo-1")  # labgrid alone never frees it
    said: list[str] = []
    with make_target("solo", load_targets_file(targets_file)) as target:
        assert isinstance(target, LabgridTarget)
        target.say = said.append
        target.board()  # the next run reserves and acquires the place the killed one left
        assert target.lab["place"] == "solo-1" and "acquired: " in _place(lab, "solo-1")
        assert pids_matching(f"{workdir}/jobs/") == []  # the killed run's runner was stopped on the board
    assert any(f"released place solo-1, left acquired by a run that was killed (pid {proc.pid})" in s for s in said)
    assert _free(lab, "solo-1") and _claims(lab) == []


def test_a_place_held_by_someone_else_times_out_naming_the_release_command(lab, targets_file):
    lab.client("-p", "solo-1", "acquire", user="alice")
    try:
        target = make_target("pi1", load_targets_file(targets_file))
        assert isinstance(target, LabgridTarget)
        target.reserve_timeout_s = 2.5
        said: list[str] = []
        target.say = said.append
        with target, pytest.raises(TargetError) as info:
            target.probe()
        msg = str(info.value)
        assert "\n" not in msg and "came free within 2.5 s" in msg and "held by alice@" in msg
        assert f"`labgrid-client -x {lab.address} -p solo-1 release --kick`" in msg
        assert any("waiting for a place with name=solo-1, all 1 taken (solo-1: held by alice@" in s for s in said)
        assert lab.client("reservations").strip() == ""  # the waiting reservation was cancelled
        # `targets check` lists the matching places and who holds them, and probes a free board only.
        out = io.StringIO()
        assert check_targets(["solo", "twins"], targets_file, stream=out) == 0
        text = out.getvalue()
        assert "solo-1: held by alice@" in text and "twin-a: free" in text and "twin-b: free" in text
        assert "solo: every matching place is taken" in text
        assert f"{sys.version_info.major}.{sys.version_info.minor}" in text  # the twin board's Python
        assert _free(lab, "twin-a") and _free(lab, "twin-b")
    finally:
        lab.client("-p", "solo-1", "release", user="alice", check=False)


def test_identical_boards_are_measured_in_parallel_and_kept_apart(tmp, lab, server, server2, targets_file):
    from harness.api import run_config
    from harness.config.run import RunConfig

    cfg = RunConfig.from_dict({
        "name": "lab-run", "model": {"builtin": "tiny_cnn", "pretrained": False},
        "data": {"source": "textures", "patch": 32, "per_class": 8},
        "finetune": {"epochs": 1, "unfreeze_epochs": 0, "baselines": False},
        "variants": [{"name": "fp32", "recipe": "reference", "precision": "fp32", "formats": ["onnx"]}],
        "measure": {"runs": 5, "warmup": 1, "min_time_s": 0.0},
    })
    result = run_config(cfg, out=tmp / "twins", targets_file=targets_file, target_names=["twins"],
                        cache_dir=tmp / "cache")
    assert sorted(result.reports) == ["twins-1", "twins-2"]
    reps = {n: json.loads((tmp / "twins" / n / "report.json").read_text()) for n in result.reports}
    labs = {n: r["target"]["labgrid"] for n, r in reps.items()}
    assert {v["place"] for v in labs.values()} == {"twin-a", "twin-b"}
    assert {v["board"] for v in labs.values()} == {"1 of 2", "2 of 2"}
    assert all(v["group"] == "twins" and v["combined"].startswith("kept apart") for v in labs.values())
    assert {r["target"]["host"] for r in reps.values()} == {f"root@127.0.0.1:{s.port}" for s in (server, server2)}
    for r in reps.values():
        assert r["measurement"]["strategy"] == "interleaved"  # resident runners on the boards, over SSH
        (m,) = r["measurements"]
        assert m["status"] == "ok", m["error"]
        assert m["settings"]["strategy"] == "interleaved" and m["settings"]["rounds_timed"] >= 1
        assert m["latency_ms"]["min"] <= m["latency_ms"]["p50"] <= m["latency_ms"]["max"]
    # In parallel: the later board was acquired before the earlier one's last cell ended; both released.
    (a0, a1), (b0, b1) = sorted(_window(r) for r in reps.values())
    assert a0 <= b0 < a1 and _free(lab, "twin-a") and _free(lab, "twin-b")


def test_settings_are_checked_before_anything_is_reserved(tmp):
    def load(body: str) -> dict:
        p = tmp / "bad.toml"
        p.write_text(f'[targets.x]\nkind = "labgrid"\n{body}\n')
        return load_targets_file(p)

    with pytest.raises(ConfigError, match="targets.x.coordinator is required"):
        load('tags = { board = "rpi4" }')
    with pytest.raises(ConfigError, match="targets.x.tags must be a table"):
        load('coordinator = "127.0.0.1:1"\ntags = "rpi4"')
    for body, needle in [('tags = { board = "rpi4" }\nplace = "p"', "either `place`"), ("", "either `place`"),
                         ('tags = { Board = "x" }', "not valid for labgrid"),
                         ('tags = { board = "a b" }', "not valid for labgrid"),
                         ('place = "p"\ncount = 2', "count must be")]:
        with pytest.raises(TargetSettingError, match=needle):
            make_target("x", load(f'coordinator = "127.0.0.1:1"\n{body}'))


def test_an_unreachable_coordinator_is_one_line(tmp):
    target = LabgridTarget("x", coordinator=f"127.0.0.1:{free_port()}", tags={"board": "rpi4"})
    t0 = time.monotonic()
    with target, pytest.raises(TargetError, match="is not reachable: start it") as info:
        target.probe()
    assert "\n" not in str(info.value) and time.monotonic() - t0 < 20
    assert "closed" in (target.run(Job(artifact="m.onnx", format="onnx")).error or "")  # no new reservation


def test_sigterm_stops_the_run_and_releases_the_place(tmp, lab, targets_file, cnn_onnx, inputs, workdir):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli",
                             *_bench_args(cnn_onnx, targets_file, tmp / "termed", inputs, min_time=60)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(c["running"] and c["pid"] == proc.pid for c in _claims(lab)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert time.monotonic() - t0 < 15
    assert _free(lab, "solo-1") and lab.client("reservations").strip() == "" and _claims(lab) == []
    assert pids_matching(f"{workdir}/jobs/") == []  # the runner on the board was killed, not left timing
