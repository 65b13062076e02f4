"""The files that run on a device, alone: both parse as Python 3.8, and the watchdog kills the runner
(its whole process group) when the heartbeat stops, when its stdin closes or at the deadline, and
otherwise passes the runner's exit status through; in forwarding mode (resident runners) too, where
it also hands the host's command lines to the runner and drops the heartbeat bytes between them.
"""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets.base import RUNNER_PATH, WATCHDOG_PATH
from targets.watchdog import KILLED, take_commands


@pytest.mark.parametrize("path", [RUNNER_PATH, WATCHDOG_PATH], ids=lambda p: p.name)
def test_device_files_parse_as_python_3_8(path: Path):
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 8))


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie no longer does: a container's init may not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def started():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stderr):
            with contextlib.suppress(OSError):  # a heartbeat still buffered for a watchdog that is gone
                if f is not None:
                    f.close()


def _watchdog(started: list, tmp: Path, grace: float, deadline: float, *runner: str,
              forward: bool = False) -> subprocess.Popen:
    mode = ["--forward"] if forward else []
    proc = subprocess.Popen([sys.executable, "-u", str(WATCHDOG_PATH), *mode, str(grace), str(deadline),
                             str(tmp / "pid"), *runner], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp)
    started.append(proc)
    return proc


# A runner that starts a grandchild in its group, records its PID and waits: the kill must reach both.
FAMILY = ("sh", "-c", "sleep 300 & echo $! > grandchild; wait")


def _killed(tmp: Path, proc: subprocess.Popen, within: float) -> str:
    """Wait for the watchdog; check it killed the runner and its grandchild; return its message."""
    t0 = time.monotonic()
    proc.wait(timeout=within + 5)  # stdin stays open: closing it is a message of its own
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.returncode == KILLED, err
    assert time.monotonic() - t0 < within + 1.5
    runner_pid = int((tmp / "pid").read_text())
    grandchild = int((tmp / "grandchild").read_text())
    assert not _alive(runner_pid) and not _alive(grandchild)
    return err


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.is_file() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


MODES = pytest.mark.parametrize("forward", [False, True], ids=["plain", "forward"])


@MODES
def test_silent_host_gets_the_runner_killed(tmp_path, started, forward):
    proc = _watchdog(started, tmp_path, 1.0, 60, *FAMILY, forward=forward)
    _wait_for(tmp_path / "grandchild")
    err = _killed(tmp_path, proc, within=1.5)
    assert "no heartbeat from the host for 1 s" in err


@MODES
def test_heartbeats_keep_the_runner_alive_and_closing_stdin_kills_it(tmp_path, started, forward):
    proc = _watchdog(started, tmp_path, 0.8, 60, *FAMILY, forward=forward)
    _wait_for(tmp_path / "grandchild")
    assert proc.stdin is not None
    for _ in range(8):  # 2 s of beats: more than twice the grace
        proc.stdin.write(b".")
        proc.stdin.flush()
        time.sleep(0.25)
    assert proc.poll() is None
    proc.stdin.close()
    err = _killed(tmp_path, proc, within=1.0)
    assert "the host closed the session" in err


@MODES
def test_deadline_kills_the_runner_even_with_heartbeats(tmp_path, started, forward):
    proc = _watchdog(started, tmp_path, 30, 1.0, *FAMILY, forward=forward)
    _wait_for(tmp_path / "grandchild")
    assert proc.stdin is not None
    for _ in range(12):
        try:
            proc.stdin.write(b".")
            proc.stdin.flush()
        except BrokenPipeError:
            break
        time.sleep(0.25)
    err = _killed(tmp_path, proc, within=1.0)
    assert "deadline of 1 s passed" in err


@pytest.mark.parametrize("script, status", [("raise SystemExit(3)", 3), ("import os; os.kill(os.getpid(), 11)", 139)])
def test_runner_exit_status_passes_through(tmp_path, started, script, status):
    proc = _watchdog(started, tmp_path, 30, 60, sys.executable, "-c", script)
    proc.wait(timeout=20)
    assert proc.stderr is not None
    assert proc.returncode == status, proc.stderr.read()
    assert int((tmp_path / "pid").read_text()) > 1 and not (tmp_path / "pid.tmp").exists()


def test_command_lines_are_cut_from_the_heartbeat_stream():
    partial = bytearray()
    assert take_commands(b"..{\"cmd\": \"block\"}\n.", partial) == b'{"cmd": "block"}\n' and not partial
    assert take_commands(b'.{"cmd": "bl', partial) == b"" and partial == b'{"cmd": "bl'
    assert take_commands(b'ock", "runs": 1.5}\n..{"cmd": "exit"}\n', partial) == (
        b'{"cmd": "block", "runs": 1.5}\n{"cmd": "exit"}\n')  # a "." inside a line is the line's
    assert take_commands(b"....", partial) == b"" and not partial


# A resident stand-in: answers each line it reads with that line, as Python writes it.
ECHO = (sys.executable, "-u", "-c", "import sys\nfor line in sys.stdin:\n    print(repr(line))")


def test_forwarding_hands_command_lines_to_the_runner_and_its_answers_back(tmp_path, started):
    proc = _watchdog(started, tmp_path, 2.0, 60, *ECHO, forward=True)
    assert proc.stdin is not None and proc.stdout is not None
    for chunk in (b"..", b'{"cmd": "block", ', b'"runs": 3}\n', b".", b"..", b'{"cmd": "exit"}\n.'):
        proc.stdin.write(chunk)
        proc.stdin.flush()
        time.sleep(0.05)
    assert proc.stdout.readline() == b"""'{"cmd": "block", "runs": 3}\\n'\n"""  # heartbeats never reach it
    assert proc.stdout.readline() == b"""'{"cmd": "exit"}\\n'\n"""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:  # heartbeats alone keep it alive, and reach nothing
        proc.stdin.write(b".")
        proc.stdin.flush()
        time.sleep(0.2)
    assert proc.poll() is None
    proc.stdin.close()  # the host goes: the runner is killed, whatever it was doing
    proc.wait(timeout=5)
    assert proc.returncode == KILLED and proc.stdout.read() == b""
    assert not _alive(int((tmp_path / "pid").read_text()))
