"""The `adb` executable, one phone at a time: shell, push and port forwards, each failure one line.

adb reports a phone it cannot see (unplugged, unauthorised, offline) in a few known words; those turn
into a TargetError that names the serial and what to check, so a cell fails in one line and the run
goes on.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from targets.errors import TargetError, TargetSettingError

# What adb prints when the phone is not there (current and older adb versions word it differently).
_LOST = ("not found", "no devices", "device offline", "unauthorized", "no emulators", "device still authorizing",
         "closed", "protocol fault")


def find_adb(name: str, adb: str | None) -> str:
    """The adb executable: the `adb` setting (a path) or `adb` on PATH."""
    exe = shutil.which(adb) if adb else shutil.which("adb")
    if exe is None and adb and Path(adb).expanduser().is_file():
        exe = str(Path(adb).expanduser())
    if exe is None:
        where = f"adb {adb!r} not found" if adb else "no `adb` on PATH"
        raise TargetSettingError(f"target {name}: {where}; install Android platform-tools or set `adb` to its path")
    return exe


class Adb:
    """`adb -s SERIAL ...` for one target; `run` returns (exit status, output) and raises only for a lost phone."""

    def __init__(self, name: str, serial: str, adb: str | None = None, timeout_s: float = 60.0) -> None:
        self.name = name
        self.serial = serial
        self.exe = find_adb(name, adb)
        self.timeout_s = timeout_s

    def run(self, *args: str, timeout: float | None = None, check: bool = False) -> tuple[int, str]:
        """Run one adb command for this phone; a lost phone (or `check` and a failure) is a TargetError."""
        cmd = [self.exe, "-s", self.serial, *args]
        limit = timeout or self.timeout_s
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TargetError(f"target {self.name}: adb {args[0]} on {self.serial} gave no answer within "
                              f"{limit:g} s") from None
        except OSError as e:
            raise TargetError(f"target {self.name}: cannot run {self.exe}: {e.strerror or e}") from None
        out = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0 and self.lost(done.stderr or out):
            raise TargetError(f"target {self.name}: adb lost the phone {self.serial} ({_last(done.stderr or out)}); "
                              "check the USB cable, unlock the phone and see `adb devices`")
        if check and done.returncode != 0:
            raise TargetError(f"target {self.name}: adb {' '.join(args)[:80]} failed: {_last(out)}")
        return done.returncode, out

    @staticmethod
    def lost(text: str) -> bool:
        """Whether adb's message says the phone is not reachable (as opposed to a command that failed)."""
        for line in text.lower().splitlines():
            line = line.strip()
            if line.startswith(("error:", "adb:")) and any(w in line for w in _LOST):
                return True
        return False

    def shell(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run a command in the phone's shell; (exit status, stdout+stderr) like fabric."""
        return self.run("shell", command, timeout=timeout)

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        self.run("push", str(local), remote, timeout=timeout, check=True)

    def attached(self) -> bool:
        """Whether `adb devices` lists this serial as a ready device."""
        try:
            done = subprocess.run([self.exe, "devices"], capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return any(line.split()[:2] == [self.serial, "device"] for line in done.stdout.splitlines()[1:])

    def forward(self, local_port: int, device_port: int) -> None:
        self.run("forward", f"tcp:{local_port}", f"tcp:{device_port}", check=True)

    def remove_forward(self, local_port: int) -> None:
        self.run("forward", "--remove", f"tcp:{local_port}")


class AdbForward:
    """`adb forward tcp:PORT tcp:8022` for one session over USB: opened before connecting, removed on close.

    A context manager, so a failure between the two (a refused key, an interrupted run) removes it too.
    """

    def __init__(self, adb: Adb, local_port: int, device_port: int = 8022) -> None:
        self.adb, self.local_port, self.device_port = adb, local_port, device_port
        self.opened = False

    def open(self) -> None:
        """Open the forward (again after a lost link); a phone adb cannot see is a TargetError."""
        self.adb.forward(self.local_port, self.device_port)
        self.opened = True

    def close(self) -> None:
        """Remove the forward if this session opened it (best effort: the phone may be gone)."""
        if self.opened:
            self.opened = False
            try:
                self.adb.remove_forward(self.local_port)
            except TargetError:
                pass

    def __enter__(self) -> AdbForward:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def q(s: str) -> str:
    """Quote for the phone's shell (toybox sh)."""
    return shlex.quote(str(s))
