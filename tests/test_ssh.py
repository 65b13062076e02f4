"""The SSH target against a real sshd: on loopback, and inside network namespaces for link faults.

Runs as root (CI installs openssh-server, iproute2 and nftables); elsewhere the module is
skipped with the reason. Every connection goes to 127.0.0.1 or to a namespace made here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sshd import Netns, Sshd, free_port, keygen, pids_matching, skip_reason

REASON = skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from harness.cli import main  # noqa: E402
from harness.config.targets_file import load_targets_file, make_target  # noqa: E402
from harness.errors import TargetError  # noqa: E402
from targets.base import Job  # noqa: E402
from targets.ssh import GRACE_S, SSHTarget  # noqa: E402

pytestmark = pytest.mark.ssh
PY = sys.executable  # the device runs the harness's own interpreter (same machine, same files)
CELL_KEYS = {"variant", "format", "status", "error", "artifact", "latency_ms", "cold_start_ms", "memory_mb",
             "accuracy", "settings"}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ssh")


@pytest.fixture(scope="module")
def known_hosts(tmp: Path, server: Sshd) -> Path:
    p = tmp / "known_hosts"
    p.write_text(server.known_hosts_line())
    return p


@pytest.fixture(scope="module")
def workdir():
    # Spaces and a quote in the device's workdir: every remote command must quote it.
    d = Path(f"/tmp/edge harness 'test' {os.getpid()}")
    yield str(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def targets_file(tmp: Path, server: Sshd, known_hosts: Path, workdir: str) -> Path:
    p = tmp / "targets.toml"
    p.write_text(server.target_toml("dev", known_hosts, python=PY, workdir=workdir, threads=1))
    return p


@pytest.fixture(scope="module")
def bare_python(tmp: Path) -> str:
    """A Python without numpy or runtimes, like a fresh board's (a venv of the base interpreter)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "bare")], check=True)
    return str(tmp / "bare" / "bin" / "python")


@pytest.fixture(scope="module")
def inputs(tmp: Path) -> Path:
    p = tmp / "inputs.npz"
    np.savez(p, x=np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    return p


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p



def _bench(model: Path, tf: Path, out: Path, target: str = "dev", *extra: str) -> int:
    return main(["bench", str(model), "--target", target, "--targets", str(tf), "--runs", "20", "--warmup", "2",
                 "--min-time", "0", "--out", str(out), "-q", *extra])


# ------------------------------------------------------------------ end to end


def test_bench_over_ssh_matches_the_local_report_and_resends_nothing(tmp, server, targets_file, cnn_onnx, inputs):
    assert _bench(cnn_onnx, targets_file, tmp / "b1", "dev", "--inputs", str(inputs)) == 0
    assert _bench(cnn_onnx, targets_file, tmp / "loc", "local-cpu", "--inputs", str(inputs)) == 0
    rep = json.loads((tmp / "b1" / "dev" / "report.json").read_text())
    local = json.loads((tmp / "loc" / "local-cpu" / "report.json").read_text())
    assert set(rep) == set(local) and rep["schema_version"] == 1
    m, lm = rep["measurements"][0], local["measurements"][0]
    assert CELL_KEYS <= set(m) and set(m) == set(lm)
    assert m["status"] == "ok", m["error"]
    assert set(m["latency_ms"]) == set(lm["latency_ms"]) and set(m["cold_start_ms"]) == set(lm["cold_start_ms"])
    lat = m["latency_ms"]
    assert lat["n"] >= 20 and lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert m["cold_start_ms"]["load"] > 0 and m["memory_mb"]["peak_rss"] > 10
    assert m["settings"]["runtime"] == "onnxruntime" and m["settings"]["threads"] == 1
    assert m["artifact"]["sha256"] == lm["artifact"]["sha256"]
    t = rep["target"]
    assert t["kind"] == "ssh" and t["name"] == "dev" and t["host"] == f"root@127.0.0.1:{server.port}"
    assert t["device"]["runtimes"]["onnxruntime"] and t["device"]["cores"] >= 1
    first = t["transfer"]
    assert first["bytes_sent"] >= cnn_onnx.stat().st_size + inputs.stat().st_size
    assert first["files_sent"] == 4  # runner, watchdog, model, inputs
    # A second run of the same files: a new connection, nothing re-sent.
    assert _bench(cnn_onnx, targets_file, tmp / "b2", "dev", "--inputs", str(inputs)) == 0
    again = json.loads((tmp / "b2" / "dev" / "report.json").read_text())["target"]["transfer"]
    assert again["bytes_sent"] == 0 and again["files_sent"] == 0 and again["files_reused"] == 4


def test_small_run_config_over_ssh(tmp, targets_file):
    from harness.api import run_config
    from harness.config.run import RunConfig

    cfg = RunConfig.from_dict({
        "name": "ssh-run", "model": {"builtin": "tiny_cnn", "pretrained": False},
        "data": {"source": "textures", "patch": 32, "per_class": 8},
        "finetune": {"epochs": 1, "unfreeze_epochs": 0, "baselines": False},
        "variants": [{"name": "fp32", "recipe": "reference", "precision": "fp32", "formats": ["onnx"]}],
        "measure": {"runs": 5, "warmup": 1, "min_time_s": 0.0},
    })
    result = run_config(cfg, out=tmp / "run", targets_file=targets_file, target_names=["dev"],
                        cache_dir=tmp / "cache")
    rep = result.reports["dev"]
    assert rep.target["kind"] == "ssh" and rep.target["device"]["runtimes"]
    (m,) = rep.measurements
    assert m.status == "ok", m.error
    assert m.latency_ms["n"] >= 5 and m.accuracy and 0.0 <= m.accuracy["top1"] <= 1.0
    assert m.accuracy["agreement"] > 0.99  # the device's fp32 outputs match the host's torch reference
    written = json.loads((tmp / "run" / "dev" / "report.json").read_text())["target"]
    assert written["kind"] == "ssh" and written["transfer"]["bytes_sent"] >= Path(m.artifact["path"]).stat().st_size


def test_several_targets_on_one_device_never_overlap(server, known_hosts, tmp, cnn_onnx, inputs, workdir):
    specs = {n: {"kind": "ssh", "host": server.host, "port": server.port, "user": "root", "python": PY,
                 "key": str(server.client_key), "known_hosts": str(known_hosts), "ssh_config": None,
                 "workdir": workdir} for n in ("dev-a", "dev-b")}
    spans: dict[str, tuple[float, float]] = {}
    errors: list[str] = []

    def measure(name: str) -> None:
        with make_target(name, specs) as t:
            job = Job(artifact=t.deploy(cnn_onnx), format="onnx", timing_inputs=t.deploy(inputs), runs=5,
                      warmup=1, min_time_s=1.0, threads=1)
            raw = t.run(job)
            if not raw.ok:
                errors.append(f"{name}: {raw.error}")
                return
            spans[name] = (raw.data["device"]["time"], raw.data["device_after"]["time"])

    threads = [threading.Thread(target=measure, args=(n,)) for n in specs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and len(spans) == 2, errors
    (a0, a1), (b0, b1) = spans["dev-a"], spans["dev-b"]
    assert a1 <= b0 or b1 <= a0, spans  # one measurement at a time on a device


# --------------------------------------------------------------- trust and auth


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("edge-harness: error:"), err
    return err


def test_unknown_host_key_is_refused_until_trusted(tmp, server, cnn_onnx, workdir, capsys):
    kh = tmp / "kh-unknown"
    tf = _write(tmp, "t-unknown.toml", server.target_toml("fresh", kh, python=PY, workdir=workdir))
    assert _bench(cnn_onnx, tf, tmp / "o-unknown", "fresh") != 0
    err = _one_line_error(capsys)
    assert "unknown host key" in err and "SHA256:" in err and "edge-harness targets trust fresh" in err
    assert not kh.exists()  # never written silently
    # `trust` is the explicit step: it shows the fingerprint and records the key.
    assert main(["targets", "trust", "fresh", "--targets", str(tf), "--expect", "SHA256:wrong"]) != 0
    assert not kh.exists()
    capsys.readouterr()
    assert main(["targets", "trust", "fresh", "--targets", str(tf)]) != 0  # not confirmed (no answer on stdin)
    assert "not confirmed" in _one_line_error(capsys) and not kh.exists()
    assert main(["targets", "trust", "fresh", "--targets", str(tf), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "SHA256:" in out and kh.read_text() == server.known_hosts_line()
    with make_target("fresh", load_targets_file(tf)) as t:
        assert t.probe()["python"]


def test_changed_host_key_is_refused(tmp, server, workdir):
    other = keygen(tmp / "other_host_key")
    kh = _write(tmp, "kh-changed", f"[{server.host}]:{server.port} ssh-ed25519 "
                f"{Path(str(other) + '.pub').read_text().split()[1]}\n")
    tf = _write(tmp, "t-changed.toml", server.target_toml("moved", kh, python=PY, workdir=workdir))
    with make_target("moved", load_targets_file(tf)) as t, \
            pytest.raises(TargetError, match="CHANGED.*trust moved --replace") as e:
        t.probe()
    assert "\n" not in str(e.value)
    assert main(["targets", "trust", "moved", "--targets", str(tf)]) != 0  # no silent replacement
    assert main(["targets", "trust", "moved", "--targets", str(tf), "--replace"]) != 0  # asks; no answer: no
    assert main(["targets", "trust", "moved", "--targets", str(tf), "--replace", "--yes"]) == 0
    assert kh.read_text() == server.known_hosts_line()


def test_wrong_key_is_a_one_line_authentication_error(tmp, server, known_hosts, cnn_onnx, workdir, capsys):
    stranger = keygen(tmp / "stranger")
    tf = _write(tmp, "t-wrongkey.toml", server.target_toml("dev", known_hosts, python=PY, workdir=workdir).replace(
        str(server.client_key), str(stranger)))
    assert _bench(cnn_onnx, tf, tmp / "o-wrong", "dev") != 0
    err = _one_line_error(capsys)
    assert "authentication failed" in err and "root@127.0.0.1" in err and str(stranger) in err


def test_ssh_config_alias_is_honoured(tmp, server, known_hosts, workdir):
    cfg = _write(tmp, "ssh_config", f"Host board-alias\n  HostName {server.host}\n  Port {server.port}\n"
                 f"  User root\n  IdentityFile {server.client_key}\n  UserKnownHostsFile {known_hosts}\n")
    tf = _write(tmp, "t-alias.toml", f'[targets.aliased]\nkind = "ssh"\nhost = "board-alias"\npython = "{PY}"\n'
                f'ssh_config = "{cfg}"\nworkdir = {json.dumps(workdir)}\n')
    with make_target("aliased", load_targets_file(tf)) as t:
        assert isinstance(t, SSHTarget) and t.host == f"root@{server.host}:{server.port}"
        assert t.probe()["runtimes"]["numpy"]


# ------------------------------------------------------------------ reachability


def test_closed_port_fails_fast(tmp, known_hosts):
    tf = _write(tmp, "t-closed.toml", f'[targets.closed]\nhost = "127.0.0.1"\nport = {free_port()}\n'
                f'user = "root"\nknown_hosts = "{known_hosts}"\nssh_config = ""\nconnect_timeout_s = 3\n')
    t0 = time.monotonic()
    with make_target("closed", load_targets_file(tf)) as t, pytest.raises(TargetError, match="connection refused"):
        t.probe()
    assert time.monotonic() - t0 < 3


@pytest.fixture
def blackholed():
    ns = Netns.create("x")
    try:
        ns.blackhole()
        yield ns
    finally:
        ns.delete()


def test_blackholed_host_fails_within_the_connect_timeout(tmp, server, known_hosts, blackholed, capsys):
    tf = _write(tmp, "t-hole.toml", f'[targets.hole]\nhost = "{blackholed.addr}"\nport = 22\nuser = "root"\n'
                f'key = "{server.client_key}"\nknown_hosts = "{known_hosts}"\nssh_config = ""\n'
                "connect_timeout_s = 1.5\n")
    t0 = time.monotonic()
    assert main(["targets", "check", "hole", "--targets", str(tf)]) == 1
    took = time.monotonic() - t0
    assert 1.4 < took < 4.0, took
    out = capsys.readouterr().out
    assert "NO" in out and "no answer within 1.5 s" in out


# ------------------------------------------------------------- faults in a run


@pytest.fixture(scope="module")
def board(tmp, server):
    """A device in its own network namespace, reached over a veth link the test can cut."""
    ns = Netns.create("b")
    try:
        yield ns, ns.start_sshd(tmp / "sshd-ns", client_key=server.client_key)
    finally:
        ns.delete()


def test_cut_link_fails_the_cell_and_leaves_no_runner(tmp, board, cnn_onnx, inputs):
    ns, srv = board
    kh = _write(tmp, "kh-board", srv.known_hosts_line())
    workdir = f"/tmp/eh-board-{os.getpid()}"
    tf = _write(tmp, "t-board.toml", srv.target_toml("board", kh, python=PY, workdir=workdir,
                                                     connect_timeout_s=2))
    target = make_target("board", load_targets_file(tf))
    try:
        job = Job(artifact=target.deploy(cnn_onnx), format="onnx", timing_inputs=target.deploy(inputs), runs=10,
                  warmup=1, min_time_s=300.0, max_time_s=300.0, threads=1, timeout_s=600)
        result: list = []

        def work() -> None:
            try:
                result.append(target.run(job))
            except BaseException as e:  # run() must not raise: make that a visible failure
                result.append(e)

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 20
        while not pids_matching(f"{workdir}/jobs/") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_matching(f"{workdir}/jobs/"), "the slow job never started"
        time.sleep(1.0)  # measuring now
        ns.cut()
        t0 = time.monotonic()
        worker.join(20)
        detected = time.monotonic() - t0
        (raw,) = result
        assert not isinstance(raw, BaseException), repr(raw)
        assert not raw.ok and "lost the link" in raw.error
        assert detected < 15, detected
        while pids_matching(f"{workdir}/jobs/") and time.monotonic() - t0 < 15:
            time.sleep(0.2)
        assert not pids_matching(f"{workdir}/jobs/"), "a runner survived the cut link"
        print(f"cut link: cell failed after {detected:.1f} s, runner gone after {time.monotonic() - t0:.1f} s "
              f"(watchdog grace {GRACE_S:g} s)")
        # The link comes back: the target reconnects, cleans the dead job's folder and measures again.
        ns.exec("ip", "link", "set", ns.veth_dev, "up")
        job.min_time_s = 0.0
        again = target.run(job)
        assert again.ok, again.error
        assert os.listdir(f"{workdir}/jobs") == []
    finally:
        target.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_timeout_kills_the_runner(tmp, targets_file, cnn_onnx, inputs, workdir):
    with make_target("dev", load_targets_file(targets_file)) as t:
        job = Job(artifact=t.deploy(cnn_onnx), format="onnx", timing_inputs=t.deploy(inputs), runs=10, warmup=1,
                  min_time_s=120.0, max_time_s=120.0, threads=1, timeout_s=2.0)
        t0 = time.monotonic()
        raw = t.run(job)
        assert not raw.ok and "timed out after 2 s" in raw.error
        assert time.monotonic() - t0 < 6
        assert not pids_matching(f"{workdir}/jobs/")


def test_a_command_that_never_reports_its_exit_status_times_out(targets_file):
    with make_target("dev", load_targets_file(targets_file)) as t:
        t0 = time.monotonic()
        # Output closes at once (EOF), but the exit status comes only when sleep ends, 30 s later.
        with pytest.raises(TargetError, match="timed out|no exit status"):
            t.exec("exec >/dev/null 2>&1 </dev/null; sleep 30", timeout=2.0)
        assert time.monotonic() - t0 < 10
        assert t.exec("echo again", timeout=10)[1].strip() == "again"  # the target reconnects afterwards


def test_half_uploaded_or_truncated_files_are_sent_again(targets_file, cnn_onnx, workdir):
    with make_target("dev", load_targets_file(targets_file)) as t:
        remote = t.deploy(cnn_onnx)
        with open(remote, "r+b") as f:  # the "device" is this machine: damage the stored copy
            f.truncate(100)
        sent = t.bytes_sent
        assert t.deploy(cnn_onnx) == remote
        assert t.bytes_sent - sent == cnn_onnx.stat().st_size
        assert not [p for p in os.listdir(f"{workdir}/blobs") if ".part-" in p]


# --------------------------------------------------------------------- quoting


def test_names_cannot_inject_shell_commands(tmp, server, known_hosts, cnn_onnx, inputs):
    # A file name cannot hold "/", so the injected commands touch names relative to the remote
    # shell's folder (root's home) or under /tmp; all of those places are checked.
    names = [f"pwned-{os.getpid()}-{i}" for i in range(3)]
    markers = [d / n for n in names for d in (Path("/tmp"), Path(os.path.expanduser("~root")), Path.cwd())]
    evil_model = tmp / f"a'; touch {names[0]}; '.onnx"
    shutil.copy(cnn_onnx, evil_model)
    evil_inputs = tmp / f'in "$(touch {names[1]})" ;.npz'
    shutil.copy(inputs, evil_inputs)
    # Unquoted, single-quoted and command-substitution forms, so no one quoting slip goes unseen.
    touch = f"touch /tmp/{names[2]}"
    evil_workdir = f"/tmp/eh $({touch}) `{touch}`; {touch}; ' ; {touch}; ' {os.getpid()}"
    name = f"dev'; touch /tmp/{names[0]}; \""
    tf = _write(tmp, "t-evil.toml", server.target_toml(name, known_hosts, python=PY, workdir=evil_workdir))
    try:
        code = _bench(evil_model, tf, tmp / "o-evil", name, "--inputs", str(evil_inputs))
        assert not [m for m in markers if m.exists()]
        assert code == 0
        assert Path(evil_workdir, "blobs").is_dir()  # the odd folder was used literally
    finally:
        shutil.rmtree("/tmp/" + evil_workdir.split("/")[2], ignore_errors=True)  # "/" inside $(...) nests it
        for m in markers:
            m.unlink(missing_ok=True)


# --------------------------------------------------------------- check and setup


def test_targets_check_prints_the_table_and_what_is_missing(tmp, server, known_hosts, targets_file, workdir,
                                                           bare_python, capsys):
    text = targets_file.read_text() + server.target_toml("bare", known_hosts, python=bare_python, workdir=workdir)
    tf = _write(tmp, "t-check.toml", text + f'[targets.gone]\nhost = "127.0.0.1"\nport = {free_port()}\n'
                f'known_hosts = "{known_hosts}"\nssh_config = ""\n')
    assert main(["targets", "check", "dev", "bare", "local-cpu", "--targets", str(tf)]) == 0
    out = capsys.readouterr().out
    for row in ("reachable", "arch", "OS", "Python", "runtimes", "CPU", "cores", "governor", "memory", "free disk",
                "temperature"):
        assert any(line.startswith(row) for line in out.splitlines()), row
    assert "onnxruntime 1." in out and ("x86_64" in out or "aarch64" in out)
    assert "bare: no numpy: run `edge-harness targets setup bare`" in out
    assert "no onnxruntime (ONNX models): run `edge-harness targets setup bare`" in out
    assert main(["targets", "check", "gone", "dev", "--targets", str(tf)]) == 1
    out = capsys.readouterr().out
    assert "gone: cannot reach 127.0.0.1" in out


def test_setup_from_host_downloaded_wheels(tmp, server, known_hosts, bare_python):
    from harness.doctor import setup_target
    from targets.ssh.setup import pip_download_command

    # The command for an aarch64 board, built without one.
    cmd = pip_download_command({"machine": "aarch64", "python": "3.11.2",
                                "os": "Linux-6.6.31+rpt-rpi-v8-aarch64-with-glibc2.36"}, ["numpy"], Path("w"))
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and "manylinux_2_36_aarch64" in cmd
    assert "manylinux_2_17_aarch64" in cmd and "--only-binary=:all:" in cmd and cmd[-1] == "numpy"
    # A real install on the loopback device: venv from its system Python, numpy from wheels sent over.
    workdir = f"/tmp/eh-setup-{os.getpid()}"
    tf = _write(tmp, "t-setup.toml", server.target_toml("fresh-board", known_hosts, python=bare_python,
                                                        workdir=workdir))
    lines: list[str] = []
    try:
        try:
            vpy = setup_target("fresh-board", tf, formats=[], wheels=tmp / "wheels", say=lines.append)
        except TargetError as e:
            if "pip download failed" in str(e):
                pytest.skip(f"no package index reachable for the wheels: {e}")
            raise
        assert vpy == f"{workdir}/venv/bin/python"
        assert any(w.name.startswith("numpy-") for w in (tmp / "wheels").glob("*.whl"))
        assert any("copied" in ln for ln in lines) and f'python = "{vpy}"' in lines[-1]
        done = subprocess.run([vpy, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.strip()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
