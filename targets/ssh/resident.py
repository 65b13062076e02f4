"""A resident runner on a device: `runner.py JOB.json --serve` under the watchdog's forwarding mode,
over one SSH exec channel.

The channel's stdin carries the host's heartbeat (a byte a second, from a thread of its own) and the
block commands, written under one lock so a heartbeat byte never lands inside a command line; its
stdout carries the runner's answers; its stderr the runner's and the watchdog's messages (the log).
Closing the channel's stdin makes the watchdog kill the runner at once; a cut link (no heartbeat for
GRACE_S) and the deadline (the whole race) do too, so no runner outlives the host's attention.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import paramiko

from targets.base import RawResult
from targets.errors import TargetError
from targets.resident import EXIT_WAIT_S, Resident, meminfo_available_mb, stat_cpu_seconds
from targets.result_files import read_result
from targets.ssh.store import DeviceStore

RECV_POLL_S = 0.25  # a read of the channel returns after this long without data (the clocks are checked)
RESULT_FILES = ("result.json", "outputs.npz")  # what a runner leaves in its out folder for the host


class SSHResidentRunner(Resident):
    """A resident runner on an SSH device; `start_timeout_s` bounds the wait for READY. `end_job(job_dir,
    running)` is the target's clean-up: kill by PID if the runner may still run, remove the folder;
    `on_close(runner)` is called once, when it is closed."""

    def __init__(self, store: DeviceStore, end_job: Callable[[str, bool], None], chan: paramiko.Channel,
                 job_dir: str, out_dir: Path, start_timeout_s: float, hold: threading.RLock, heartbeat_s: float,
                 on_close: Callable[[SSHResidentRunner], None] | None = None) -> None:
        super().__init__(out_dir, self._fetch, (lambda: on_close(self)) if on_close is not None else None)
        self.store, self.chan, self.job_dir = store, chan, job_dir
        self.where = store.conn.endpoint.host
        self._end_job = end_job
        self._hold = hold  # the device's lock in this process: no other target's job runs during a block
        self._write = threading.Lock()  # heartbeats and commands: whole writes, one at a time
        self._closing = threading.Lock()
        self._stderr = bytearray()
        self._stopped = self._ended = False
        self.pid: int | None = None  # the runner's PID on the device (its process group), read at READY
        self._clock_ticks = 100
        chan.settimeout(RECV_POLL_S)
        self._beats = threading.Event()  # set: stop beating
        self._thread = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True,
                                        name=f"heartbeat {job_dir}")
        self._thread.start()
        with hold:  # load and first inference are timed too
            self.initial = self._start(start_timeout_s)
        if self.initial.ok:
            try:
                self.pid = int(store.read_bytes(f"{job_dir}/pid").decode().strip())
                code, out = store.conn.exec("getconf CLK_TCK", timeout=store.conn.endpoint.timeout_s)
                if code == 0 and out.split() and out.split()[-1].isdigit():
                    self._clock_ticks = int(out.split()[-1])  # /proc CPU times are in these (100 nearly always)
            except (TargetError, paramiko.SSHException, EOFError, OSError, ValueError):
                self.pid = None  # cpu_seconds says None: the idle check is skipped for this runner

    def _heartbeat(self, every_s: float) -> None:
        while not self._beats.wait(every_s):
            with self._write:
                try:
                    self.chan.sendall(b".")
                except TimeoutError:
                    continue  # no window for a moment: the next beat comes well within GRACE_S
                except OSError:
                    return  # the channel is gone: the reader sees it

    def _fetch(self, out_dir: Path, code: int | None, log: str) -> RawResult:
        try:
            self.store.fetch(f"{self.job_dir}/out", RESULT_FILES, out_dir)
        except (TargetError, paramiko.SSHException, EOFError, OSError) as e:
            return RawResult.failed(f"could not fetch the results from {self.where}: {e}", exit_code=code, log=log)
        return read_result(out_dir, code, log)

    # ------------------------------------------------------------------ the transport

    def _send(self, data: bytes) -> None:
        with self._write:
            self.chan.sendall(data)

    def _recv(self, timeout_s: float) -> bytes | None:
        try:
            data: bytes | None = self.chan.recv(65536)
        except TimeoutError:
            data = None
        self._drain_stderr()
        return data

    def _drain_stderr(self) -> None:
        while self.chan.recv_stderr_ready():
            self._stderr += self.chan.recv_stderr(65536)

    def exit_code(self) -> int | None:
        """The watchdog's status: the runner's, KILLED when the watchdog killed it; None on a lost link."""
        if not self.chan.exit_status_ready():
            if not self._eof or not self.chan.status_event.wait(EXIT_WAIT_S):
                return None
        code = self.chan.recv_exit_status()
        return -(code - 128) if 128 < code < 160 else code

    def _command(self, cmd: dict[str, object], what: str, timeout_s: float) -> str:
        with self._hold:
            try:
                return super()._command(cmd, what, timeout_s)
            except TargetError as e:
                if self.chan.get_transport() is None or not self.chan.get_transport().is_active():
                    raise TargetError(f"lost the link to {self.where} ({e})") from None
                raise

    def cpu_seconds(self) -> float | None:
        """Read from the device's /proc over SFTP (None when it cannot be)."""
        if self.pid is None or self._stopped:
            return None
        try:
            return stat_cpu_seconds(self.store.read_bytes(f"/proc/{self.pid}/stat").decode(), self._clock_ticks)
        except (TargetError, paramiko.SSHException, EOFError, OSError, UnicodeDecodeError):
            return None

    def cpu_resolution_s(self) -> float:
        return 1.0 / self._clock_ticks

    def mem_available_mb(self) -> float | None:
        """The device's MemAvailable, from its /proc/meminfo over SFTP."""
        if self._stopped:
            return None  # never connect again for a runner that is gone (its target may be closed)
        try:
            return meminfo_available_mb(self.store.read_bytes("/proc/meminfo").decode())
        except (TargetError, paramiko.SSHException, EOFError, OSError, UnicodeDecodeError):
            return None

    def log(self) -> str:
        try:
            self._drain_stderr()
        except (OSError, EOFError):
            pass
        return self._stderr.decode(errors="replace")

    def _stop(self) -> None:
        """Close the channel's stdin: the watchdog kills the runner's process group and exits."""
        if self._stopped:
            return
        self._stopped = True
        self._beats.set()
        with self._write:
            try:
                self.chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass
        transport = self.chan.get_transport()
        linked = transport is not None and transport.is_active() and not self.chan.closed
        # The watchdog exits only once the runner is gone; over a lost link no status comes (it dies within GRACE_S).
        self._ended = self.chan.status_event.wait(EXIT_WAIT_S if linked else 0)
        self.log()
        self.chan.close()

    def _cleanup(self) -> None:
        # Kill by PID only if the watchdog did not report the runner gone; the job's folder goes either way.
        self._end_job(self.job_dir, not self._ended)

    def close(self) -> None:
        with self._closing:  # the target's close() may end it from another thread
            super().close()
