"""The SSH device store and host keys, hardened, against the tests' real sshd (root on loopback):

a workdir another account prepared is refused by owner (stat), even for root whose chmod always works, on
every later connection too; a blob of the right size but other content is replaced, never run; `targets
clean` empties the store; `targets trust` confirms before writing, tells a key of another type from a
changed key and writes known_hosts atomically; two concurrent `bench` runs on one device are serialized.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sshd import Sshd, skip_reason

REASON = skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from test_device_lock import ROOT, concurrent_benches  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.config.targets_file import load_targets_file, make_target  # noqa: E402
from harness.errors import TargetError  # noqa: E402

pytestmark = pytest.mark.ssh
PY = sys.executable


@pytest.fixture
def kh(tmp_path: Path, server: Sshd) -> Path:
    p = tmp_path / "known_hosts"
    p.write_text(server.known_hosts_line())
    return p


@pytest.fixture
def workdir() -> Path:
    d = Path(f"/tmp/eh-hardening-{os.getpid()}")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _targets(tmp_path: Path, server: Sshd, kh: Path, workdir: Path, name: str = "dev") -> Path:
    p = tmp_path / "targets.toml"
    p.write_text(server.target_toml(name, kh, python=PY, workdir=str(workdir), threads=1))
    return p


def test_workdir_of_another_account_is_refused_even_for_root(tmp_path, server, kh, workdir, cnn_onnx):
    (workdir / "blobs").mkdir(parents=True)
    planted = workdir / "blobs" / "runner.py"
    planted.write_text("print('planted')\n")
    for p in (workdir, workdir / "blobs", planted):
        os.chown(p, 65534, 65534)  # "nobody" prepared it; root could chmod it, so chmod proves nothing
    os.chmod(workdir, 0o777)
    with make_target("dev", load_targets_file(_targets(tmp_path, server, kh, workdir))) as t:
        for _ in range(2):  # a second connection() is checked again, never handed out unchecked
            with pytest.raises(TargetError, match="belongs to uid 65534, not to the login's uid 0"):
                t.connection()
        with pytest.raises(TargetError, match="belongs to uid 65534"):
            t.deploy(cnn_onnx)
    assert workdir.stat().st_mode & 0o777 == 0o777  # not "fixed" behind the owner's back either
    assert planted.read_text() == "print('planted')\n"


def test_blob_of_the_right_size_but_other_content_is_replaced(tmp_path, server, kh, workdir, cnn_onnx):
    want = hashlib.sha256(cnn_onnx.read_bytes()).hexdigest()
    with make_target("dev", load_targets_file(_targets(tmp_path, server, kh, workdir))) as t:
        remote = t.deploy(cnn_onnx)
        Path(remote).write_bytes(b"\0" * cnn_onnx.stat().st_size)  # same size, other bytes
        sent = t.bytes_sent
        assert t.deploy(cnn_onnx) == remote
        assert t.bytes_sent - sent == cnn_onnx.stat().st_size
        assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == want
        reused = t.stats["files_reused"]
        t.deploy(cnn_onnx)  # now right: checked on the device and reused
        assert t.stats["files_reused"] == reused + 1


def test_targets_clean_removes_the_device_blobs(tmp_path, server, kh, workdir, cnn_onnx, capsys):
    tf = _targets(tmp_path, server, kh, workdir)
    with make_target("dev", load_targets_file(tf)) as t:
        t.deploy(cnn_onnx)
    assert os.listdir(workdir / "blobs")
    assert main(["targets", "clean", "dev", "--targets", str(tf)]) == 0
    assert "dev: removed 1 file(s)" in capsys.readouterr().out
    assert os.listdir(workdir / "blobs") == [] and os.listdir(workdir / "jobs") == []
    assert main(["targets", "clean", "local-cpu"]) == 0
    assert "nothing to clean" in capsys.readouterr().out


def test_trust_asks_and_writes_atomically(tmp_path, server, workdir, monkeypatch, capsys):
    kh = tmp_path / "kh"
    tf = _targets(tmp_path, server, kh, workdir)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["targets", "trust", "dev", "--targets", str(tf)]) != 0
    assert not kh.exists() and "not confirmed" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["targets", "trust", "dev", "--targets", str(tf)]) == 0
    out = capsys.readouterr().out
    assert "SHA256:" in out and "[y/N]" in out and kh.read_text() == server.known_hosts_line()
    assert kh.stat().st_mode & 0o777 == 0o600 and sorted(os.listdir(tmp_path)) == ["kh", "targets.toml"]


def test_key_of_another_type_is_not_called_different(tmp_path, server, workdir, capsys):
    rsa = tmp_path / "rsa_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    name = f"[{server.host}]:{server.port}"
    rsa_line = f"{name} ssh-rsa {Path(str(rsa) + '.pub').read_text().split()[1]}\n"
    kh = tmp_path / "kh"
    kh.write_text(rsa_line)
    tf = _targets(tmp_path, server, kh, workdir)
    assert main(["targets", "trust", "dev", "--targets", str(tf), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "holds only another type of key" in out and "ssh-rsa SHA256:" in out and "different" not in out
    assert kh.read_text() == rsa_line + server.known_hosts_line()  # added beside it, nothing lost


def test_changed_key_message_shows_the_fingerprint_and_asks_for_it(tmp_path, server, workdir, capsys):
    from sshd import keygen

    other = keygen(tmp_path / "other")
    kh = tmp_path / "kh"
    kh.write_text(f"[{server.host}]:{server.port} ssh-ed25519 {Path(str(other) + '.pub').read_text().split()[1]}\n")
    tf = _targets(tmp_path, server, kh, workdir)
    assert main(["targets", "trust", "dev", "--targets", str(tf)]) != 0
    err = capsys.readouterr().err
    presented = re.search(r"the device presents \((SHA256:\S+)\)", err)
    assert presented and "different ssh-ed25519 key" in err and f"--replace --expect {presented[1]}`" in err
    assert main(["targets", "trust", "dev", "--targets", str(tf), "--replace", "--expect", "SHA256:nope"]) != 0
    assert "SHA256:nope" in capsys.readouterr().err and server.known_hosts_line() != kh.read_text()


def test_malformed_known_hosts_is_one_line(tmp_path, server, workdir, cnn_onnx, capsys):
    kh = tmp_path / "kh"
    kh.write_text(f"[{server.host}]:{server.port} ssh-ed25519 !!!notbase64!!!\n")
    tf = _targets(tmp_path, server, kh, workdir)
    assert main(["bench", str(cnn_onnx), "--target", "dev", "--targets", str(tf), "--out", str(tmp_path / "o"),
                 "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-harness: error: ") and "\n" not in err


HOLD_SSH = ("import sys,time; from harness.config.targets_file import load_targets_file, make_target; "
            "t=make_target('dev', load_targets_file(sys.argv[1])); t.acquire(); print('held', flush=True); "
            "time.sleep(30)")


def test_no_wait_over_ssh_fails_in_one_line(tmp_path, server, kh, workdir, cnn_onnx, capsys):
    tf = _targets(tmp_path, server, kh, workdir)
    holder = subprocess.Popen([PY, "-c", HOLD_SSH, str(tf)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = main(["bench", str(cnn_onnx), "--target", "dev", "--targets", str(tf), "--out", str(tmp_path / "o"),
                     "-q", "--no-wait"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err, err
        assert f"target dev is busy: held by {os.uname().nodename}:{holder.pid} since " in err
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_benches_on_one_ssh_device_are_serialized(tmp_path, server, kh, workdir, cnn_onnx):
    tf = _targets(tmp_path, server, kh, workdir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (a0, a1), (b0, b1) = concurrent_benches(tmp_path, cnn_onnx, "dev", env, ("--targets", str(tf)))
    assert a1 - a0 >= 1.5 and b1 - b0 >= 1.5
    assert a1 <= b0 or b1 <= a0, ((a0, a1), (b0, b1))
    assert f"{os.uname().nodename}:" in (workdir / "device.lock").read_text()  # the lock lives in the workdir
