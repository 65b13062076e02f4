"""A resident runner: one model loaded in its own process, timed in short blocks on request.

The host keeps one per cell and times them one at a time in alternating order (the measure
stage's interleaving), so a block costs no process start or model load, and a device that
changes speed during a run slows every cell alike. Between blocks the process is blocked on a
read of its stdin; `cpu_seconds` lets the host check that an idle one really uses no CPU.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any, Callable

from targets.base import RawResult
from targets.errors import TargetError

READY = "READY"


class ResidentRunner:
    """A runner process started with --serve: `start` loads and scores the model, `block` times it."""

    def __init__(self, cmd: list[str], env: dict[str, str], out_dir: Path, read_result: Any,
                 start_timeout_s: float, on_close: Callable[[], None] | None = None) -> None:
        self.out_dir = out_dir
        self._on_close = on_close  # called once, when the runner is closed (the target lets the device go)
        self._read_result = read_result
        self._log = open(out_dir / "runner.log", "w+")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=env, start_new_session=True, bufsize=0)
        self._pending = b""  # stdout bytes read but not yet returned as a line
        self.initial: RawResult = self._wait_ready(start_timeout_s)

    def _wait_ready(self, timeout_s: float) -> RawResult:
        """Wait for READY; the runner's result.json (load, first inference, evaluation) is the result."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._readline(self.proc.stdout, deadline)
            if line is None:  # the process ended, or never got ready: whatever it wrote says why
                self.close()
                code = self.proc.returncode
                if code is None:
                    return RawResult.failed(f"runner did not get ready within {timeout_s:g} s (killed)")
                return self._read_result(self.out_dir, code, self.log())
            if line.strip() == READY:
                return self._read_result(self.out_dir, None, "")

    def _readline(self, stream: IO[bytes], deadline: float) -> str | None:
        """The next stdout line, read straight from the pipe (no hidden buffer), or None at EOF/timeout."""
        fd = stream.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._pending += chunk
            elif self.proc.poll() is not None:
                return None
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode(errors="replace")

    def block(self, runs: int, discard: int = 0, timeout_s: float = 300.0) -> list[int]:
        """Time `runs` iterations after `discard` untimed ones; raises TargetError if the runner fails."""
        if self.proc.poll() is not None or self.proc.stdin is None or self.proc.stdout is None:
            raise TargetError(f"resident runner has exited ({self._last_log_line()})")
        try:
            cmd = {"cmd": "block", "runs": int(runs), "discard": int(discard)}
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        except (BrokenPipeError, OSError) as e:
            raise TargetError(f"resident runner is gone ({e.strerror or e}; {self._last_log_line()})") from None
        line = self._readline(self.proc.stdout, time.monotonic() + timeout_s)
        if line is None:
            self.close()
            raise TargetError(f"resident runner gave no block within {timeout_s:g} s ({self._last_log_line()})")
        try:
            return [int(x) for x in json.loads(line)["latencies_ns"]]
        except (ValueError, KeyError, TypeError):
            raise TargetError(f"resident runner answered {line.strip()[:200]!r}") from None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far (Linux /proc), or None."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def log(self) -> str:
        try:
            self._log.flush()
            return (self.out_dir / "runner.log").read_text(errors="replace")
        except OSError:
            return ""

    def _last_log_line(self) -> str:
        lines = [ln for ln in self.log().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else f"exit status {self.proc.poll()}"

    def close(self) -> None:
        """Ask the runner to exit; kill its process group if it does not within 2 s."""
        self._stop()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def _stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.close()
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

    def __enter__(self) -> ResidentRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
