"""A phone in Termux over USB, against stand-ins behind the real sshd the tests start: the stand-in `adb`
forwards a local port to that sshd (the phone's port 8022), and the target's python is a Termux-like
prefix's (PREFIX set, `getprop` on PATH, `platform.system()` "Android"). No phone can exist here."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from phone import SERIAL, make_phone, make_termux
from sshd import free_port, skip_reason

REASON = skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from harness.cli import main  # noqa: E402

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("termux")


@pytest.fixture(scope="module")
def usb(tmp, server):
    """The stand-in phone, its Termux prefix, and the local port its forward uses."""
    phone = make_phone(tmp / "phone", ssh_port=server.port)
    prefix = make_termux(tmp / "phone" / "device")
    port = free_port()
    saved = {k: os.environ.get(k) for k in phone.env}
    os.environ.update(phone.env)
    yield phone, prefix, port
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    state = phone.folder / "adb-state" / "forwards.json"  # a failed test must leave no relay running
    for info in (json.loads(state.read_text()) if state.is_file() else {}).values():
        try:
            os.kill(info["pid"], 9)
        except OSError:
            pass


def forwards(phone) -> str:
    return subprocess.run([str(phone.adb), "-s", SERIAL, "forward", "--list"], capture_output=True, text=True,
                          env={**os.environ, **phone.env}).stdout


def toml(tmp: Path, server, usb, known_hosts: Path | None = None, **extra: object) -> Path:
    phone, prefix, port = usb
    if known_hosts is None:
        known_hosts = tmp / "kh"
        known_hosts.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {server.host_key_pub}\n")
    workdir = tmp / "work"
    lines = ["[targets.tp]", 'kind = "ssh"', 'host = "127.0.0.1"', f"port = {port}", 'user = "root"',
             f"key = {json.dumps(str(server.client_key))}", f"known_hosts = {json.dumps(str(known_hosts))}",
             'ssh_config = ""', f"python = {json.dumps(str(prefix / 'bin/python'))}",
             f"workdir = {json.dumps(str(workdir))}", f'adb_serial = "{SERIAL}"', f"adb = {json.dumps(str(phone.adb))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    p = tmp / "targets.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_the_stand_in_termux_python_warns_like_termux(usb):
    _, prefix, _ = usb
    done = subprocess.run([str(prefix / "bin/python"), "-c", "import onnxruntime"], capture_output=True, text=True)
    assert done.returncode == 0 and "Unsupported platform (android)" in done.stderr


def test_bench_over_the_usb_forward_in_termux(tmp, server, usb, cnn_onnx):
    phone = usb[0]
    tf = toml(tmp, server, usb, threads=1)
    out = tmp / "b"
    assert main(["bench", str(cnn_onnx), "--target", "tp", "--targets", str(tf), "--runs", "10", "--warmup", "1",
                 "--min-time", "0", "--out", str(out), "-q"]) == 0
    rep = json.loads((out / "tp" / "report.json").read_text())
    m = rep["measurements"][0]
    assert m["status"] == "ok", m["error"]
    assert m["latency_ms"]["n"] >= 10 and m["latency_ms"]["p50_ci"] and m["settings"]["runtime"] == "onnxruntime"
    card = rep["target"]["device"]["android"]
    assert card["model"] == "Pixel 7" and card["android"] == "14" and card["termux_prefix"].endswith(
        "com.termux/files/usr")
    assert forwards(phone) == ""  # the forward went with the session


def test_forward_is_removed_when_the_session_fails(tmp, server, usb, cnn_onnx, capsys):
    phone = usb[0]
    tf = toml(tmp, server, usb, known_hosts=tmp / "empty-kh")  # unknown host key: refused
    assert main(["bench", str(cnn_onnx), "--target", "tp", "--targets", str(tf), "--out", str(tmp / "f"), "-q"]) != 0
    assert "unknown host key" in capsys.readouterr().err
    assert forwards(phone) == ""
    phone.unplug()
    try:
        assert main(["bench", str(cnn_onnx), "--target", "tp", "--targets", str(toml(tmp, server, usb)), "--out",
                     str(tmp / "g"), "-q"]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"adb lost the phone {SERIAL}" in err
    finally:
        phone.plug_in()


def test_big_cores_on_a_device_without_cpufreq_fail_in_one_line(tmp, server, usb, cnn_onnx, capsys):
    if Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").exists():
        pytest.skip("this machine shows cpufreq: affinity = \"big\" would resolve here")
    tf = toml(tmp, server, usb, affinity="big")
    assert main(["bench", str(cnn_onnx), "--target", "tp", "--targets", str(tf), "--runs", "3", "--out",
                 str(tmp / "a"), "-q"]) != 0
    assert "no per-core frequencies" in capsys.readouterr().err


def test_check_and_setup_in_termux(tmp, server, usb, capsys):
    phone, prefix, _ = usb
    tf = toml(tmp, server, usb)
    assert main(["targets", "check", "tp", "--targets", str(tf)]) == 0
    out = capsys.readouterr().out
    assert "Google Pixel 7" in out and "Termux" in out
    assert main(["targets", "setup", "tp", "--targets", str(tf), "--formats", "onnx,tflite"]) == 0
    out = capsys.readouterr().out
    assert "ai-edge-litert has no Termux build" in out and 'kind = "adb"' in out
    assert (prefix / "pkg-standin.log").read_text().split() == ["install", "-y", "python", "python-numpy",
                                                                "python-onnxruntime"]
    assert f'python = "{prefix}/bin/python"' in out
    assert forwards(phone) == ""
