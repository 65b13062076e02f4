"""A resident runner: one model loaded in its own process, timed in short blocks on request.

The host keeps one per cell and times them one at a time in alternating order (the measure
stage's interleaving), so a block costs no process start or model load, and a device that
changes speed during a run slows every cell alike. Between blocks the process is blocked on a
read of its stdin; `cpu_seconds` lets the host check that an idle one really uses no CPU.

`Resident` is the protocol (READY, then one JSON command line in, one line out; see `serve()` in
targets/runner.py), whatever carries the bytes; `ResidentRunner` is the local transport, a child
process with pipes. The SSH transport (targets/ssh/resident.py) runs it under the device's watchdog.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from targets.base import RawResult
from targets.errors import TargetError

READY = "READY"
EXIT_WAIT_S = 3.0  # how long a runner whose output has ended may take to report its exit status

ReadResult = Callable[[Path, "int | None", str], RawResult]  # (output folder, exit status, log) -> result


def meminfo_available_mb(text: str) -> float | None:
    """MemAvailable in MB from the text of /proc/meminfo, or None."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) / 1024
            except (ValueError, IndexError):
                return None
    return None


def stat_cpu_seconds(text: str, clock_ticks: int) -> float | None:
    """User + system CPU seconds from the text of /proc/PID/stat, or None."""
    try:
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / clock_ticks
    except (ValueError, IndexError):
        return None


def schedstat_ns(pid: int) -> int | None:
    """Nanoseconds on CPU of all of a process's threads (Linux /proc/PID/task/*/schedstat), or None."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, seen = 0, 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
            seen += 1
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total if seen else None


class Resident(ABC):
    """A runner started with --serve: `_start` (from a transport's constructor) waits for READY (load, first
    inference, evaluation done), `block` times it. Transports carry the bytes: `_send`, `_recv`, `exit_code`,
    `_stop`, `log`; `cpu_seconds` and `mem_available_mb` read where the runner lives."""

    def __init__(self, out_dir: Path, read_result: ReadResult, on_close: Callable[[], None] | None) -> None:
        self.out_dir = out_dir
        self._read_result = read_result
        self._on_close = on_close  # called once, when the runner is closed (the target lets the device go)
        self._pending = b""  # stdout bytes read but not yet returned as a line
        self._closed = False
        self._eof = False  # the runner's stdout has ended: its exit status is on its way
        self.initial: RawResult = RawResult.failed("not started")

    # ------------------------------------------------------------------ the transport

    @abstractmethod
    def _send(self, data: bytes) -> None:
        """Write to the runner's stdin; raises OSError when it is gone."""

    @abstractmethod
    def _recv(self, timeout_s: float) -> bytes | None:
        """The next stdout bytes: b"" at end of file, None when none came within `timeout_s`."""

    @abstractmethod
    def exit_code(self) -> int | None:
        """The runner's exit status once it has ended (negative: ended by that signal), else None."""

    @abstractmethod
    def _stop(self) -> None:
        """End the runner (it is not needed any more); safe to call twice."""

    @abstractmethod
    def log(self) -> str:
        """What the runner wrote on stderr so far."""

    def _cleanup(self) -> None:  # noqa: B027 - a hook: most transports leave nothing behind
        """Remove what the runner left behind (after `_stop`)."""

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the runner has used so far, or None where it cannot be read."""
        return None

    def cpu_resolution_s(self) -> float:
        """The step of `cpu_seconds` (a clock tick: 10 ms nearly always; schedstat's nanoseconds locally)."""
        return 0.01

    def request_exit(self) -> None:  # noqa: B027 - a hook: `close` does the whole job where this is not given
        """Tell the runner to exit without waiting (before `close`, so that many runners exit side by side)."""

    def mem_available_mb(self) -> float | None:
        """MemAvailable of the machine this runner lives on (Linux /proc), or None."""
        try:
            return meminfo_available_mb(Path("/proc/meminfo").read_text())
        except OSError:
            return None

    # ------------------------------------------------------------------ the protocol

    def _start(self, timeout_s: float) -> RawResult:
        """Wait for READY; the runner's result.json (load, first inference, evaluation) is the result."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._readline(deadline)
            if line is None:  # the process ended, or never got ready: whatever it wrote says why
                code = self.exit_code()
                self._stop()
                if code is None:
                    result = RawResult.failed(f"runner did not get ready within {timeout_s:g} s (killed)")
                else:
                    result = self._read_result(self.out_dir, code, self.log())
                self.close()
                return result
            if line.strip() == READY:
                return self._read_result(self.out_dir, None, "")

    def _readline(self, deadline: float) -> str | None:
        """The next stdout line, or None at end of file, when the runner ended, or at the deadline."""
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            chunk = self._recv(min(left, 1.0))
            if chunk is None:
                if self.exit_code() is not None:
                    return None
                continue
            if not chunk:
                self._eof = True
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode(errors="replace")

    def block(self, runs: int, discard: int = 0, timeout_s: float = 300.0) -> list[int]:
        """Time `runs` iterations after `discard` untimed ones; raises TargetError if the runner fails."""
        line = self._command({"cmd": "block", "runs": int(runs), "discard": int(discard)}, "a block", timeout_s)
        try:
            return [int(x) for x in json.loads(line)["latencies_ns"]]
        except (ValueError, KeyError, TypeError):
            raise TargetError(f"resident runner answered {line.strip()[:200]!r}") from None

    def evaluate(self, timeout_s: float = 300.0) -> RawResult:
        """The evaluation pass of a runner started with the job's `defer_eval` (after its load and first
        inference, which are timed alone): its result then, with the outputs; a failed pass is a failed result."""
        line = self._command({"cmd": "eval"}, "the evaluation pass", timeout_s)
        try:
            reply = json.loads(line)
        except ValueError:
            raise TargetError(f"resident runner answered {line.strip()[:200]!r}") from None
        if reply.get("error"):
            return RawResult.failed(" ".join(str(reply["error"]).split()))
        return self._read_result(self.out_dir, None, "")

    def _command(self, cmd: dict[str, object], what: str, timeout_s: float) -> str:
        """Send one command line and return the runner's answer line; raises TargetError if it fails."""
        if self.exit_code() is not None:
            raise TargetError(f"resident runner has exited ({self._last_log_line()})")
        try:
            self._send((json.dumps(cmd) + "\n").encode())
        except OSError as e:
            raise TargetError(f"resident runner is gone ({e.strerror or e}; {self._last_log_line()})") from None
        line = self._readline(time.monotonic() + timeout_s)
        if line is None:
            code, why = self.exit_code(), self._last_log_line()
            self.close()
            if code is not None:
                raise TargetError(f"resident runner ended during {what} (exit status {code}; {why})")
            raise TargetError(f"resident runner gave no answer to {what} within {timeout_s:g} s ({why})")
        return line

    def _last_log_line(self) -> str:
        lines = [ln for ln in self.log().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else f"exit status {self.exit_code()}"

    def close(self) -> None:
        """End the runner and let the device go (once; later calls do nothing)."""
        self._stop()
        if self._closed:
            return
        self._closed = True
        self._cleanup()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Resident:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResidentRunner(Resident):
    """A resident runner on this machine: a child process with its stdin and stdout as pipes."""

    def __init__(self, cmd: list[str], env: dict[str, str], out_dir: Path, read_result: ReadResult,
                 start_timeout_s: float, on_close: Callable[[], None] | None = None) -> None:
        super().__init__(out_dir, read_result, on_close)
        self._log = open(out_dir / "runner.log", "w+")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=env, start_new_session=True, bufsize=0)
        self.initial = self._start(start_timeout_s)

    def _send(self, data: bytes) -> None:
        if self.proc.stdin is None:
            raise OSError("no stdin")
        try:
            self.proc.stdin.write(data)
        except ValueError:  # closed already
            raise OSError("stdin closed") from None

    def _recv(self, timeout_s: float) -> bytes | None:
        """Read straight from the pipe (no hidden buffer)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout_s)[0]:
            return None
        return os.read(fd, 65536)

    def exit_code(self) -> int | None:
        if self._eof:  # its stdout closed as it ended: the status follows at once
            try:
                return self.proc.wait(timeout=EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                return None
        return self.proc.poll()

    def cpu_seconds(self) -> float | None:
        """From Linux /proc (None elsewhere): the on-CPU nanoseconds of every thread (schedstat), else the
        process's clock ticks."""
        ns = schedstat_ns(self.proc.pid)
        if ns is not None:
            return ns / 1e9
        try:
            return stat_cpu_seconds(Path(f"/proc/{self.proc.pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))
        except OSError:
            return None

    def cpu_resolution_s(self) -> float:
        return 1e-6 if schedstat_ns(self.proc.pid) is not None else 1.0 / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            return (self.out_dir / "runner.log").read_text(errors="replace")
        except OSError:
            return ""

    def request_exit(self) -> None:
        """Tell the runner to exit without waiting for it (closing many runners: they exit side by side)."""
        stdin = self.proc.stdin
        if self.proc.poll() is None and stdin is not None and not stdin.closed:
            try:
                stdin.write(b'{"cmd": "exit"}\n')
                stdin.close()
            except (OSError, ValueError):
                pass

    def _stop(self) -> None:
        """Ask the runner to exit; kill its process group if it does not within 2 s."""
        if self.proc.poll() is None:
            try:
                self.request_exit()
                self.proc.wait(timeout=2)
            except (OSError, ValueError, subprocess.TimeoutExpired, AssertionError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._log.close()
