"""One job per device across processes: a lock per device, who holds it, and what a second run does meanwhile.

Local targets lock a file under a per-user runtime folder with `fcntl.flock`; SSH targets lock
`workdir/device.lock` on the device (targets.ssh.store). A process holds a device's lock while any of its
targets uses the device, so two harness runs never measure on one device at the same time: the second
waits (saying who holds it) or, with `POLICY.wait` off (`--no-wait`), fails in one line.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from targets.errors import TargetError

POLL_S = 0.5  # how often a waiting run tries the lock again


@dataclass
class WaitPolicy:
    """What a run does when a device is held by another process: wait (saying so through `say`) or fail."""

    wait: bool = True
    say: Callable[[str], None] | None = None


POLICY = WaitPolicy()  # the face sets it per command (`--no-wait`, where the waiting line goes)


class DeviceBusy(TargetError):
    """Another process holds the device and this run was told not to wait."""


def holder_text() -> str:
    """Who holds a lock taken now: `host:pid since time`."""
    return f"{socket.gethostname()}:{os.getpid()} since {datetime.now().astimezone().isoformat(timespec='seconds')}"


class Waiting:
    """The waiting side of a busy device: one line when the holder changes, or DeviceBusy under `--no-wait`."""

    def __init__(self, target: str, cancelled: Callable[[], bool] = lambda: False) -> None:
        self.target, self.cancelled = target, cancelled
        self._said: str | None = None

    def busy(self, held_by: str) -> None:
        """Called after a failed try: fail (no-wait or cancelled), or say who holds it and pause."""
        held_by = " ".join(held_by.split())[:200] or "another process"
        if not POLICY.wait:
            raise DeviceBusy(f"target {self.target} is busy: held by {held_by} (--no-wait given; run again later "
                             "or without --no-wait to wait)")
        if self.cancelled():
            raise TargetError(f"target {self.target} was closed while waiting for the device (held by {held_by})")
        if held_by != self._said and POLICY.say is not None:
            POLICY.say(f"waiting for {self.target}: held by {held_by}")
        self._said = held_by
        time.sleep(POLL_S)


def runtime_dir() -> Path:
    """This user's folder for lock files: $XDG_RUNTIME_DIR/edge-harness, else /tmp/edge-harness-<uid>.

    It must be ours alone (checked by stat): another account must not hold or fake our locks.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "edge-harness" if base and Path(base).is_dir() else \
        Path(tempfile.gettempdir()) / f"edge-harness-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise TargetError(f"cannot create the lock folder {path} ({e.strerror or e})") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise TargetError(f"lock folder {path} is not private to this user (owner uid {st.st_uid}, mode "
                          f"{st.st_mode & 0o777:o}); remove it or set XDG_RUNTIME_DIR")
    return path


class LocalDeviceLock:
    """`flock` on `<runtime dir>/<key>.lock`, shared by every target of this process on that device.

    `acquire` counts holders in this process; the file lock goes with the last `release`.
    """

    _held: dict[str, tuple[int, int]] = {}  # key -> (fd, holders in this process)
    _guard = threading.Lock()

    def __init__(self, key: str) -> None:
        self.key = key
        self.mine = False

    def acquire(self, target: str, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Hold the device (waits while another process does; see `POLICY`). Idempotent per instance."""
        if self.mine:
            return
        waiting = Waiting(target, cancelled)
        while True:
            with self._guard:
                if self.key in self._held:
                    fd, n = self._held[self.key]
                    self._held[self.key] = (fd, n + 1)
                    self.mine = True
                    return
                path = runtime_dir() / f"{self.key}.lock"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held_by = os.pread(fd, 512, 0).decode(errors="replace")
                    os.close(fd)
                else:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, holder_text().encode(), 0)
                    self._held[self.key] = (fd, 1)
                    self.mine = True
                    return
            waiting.busy(held_by)

    def release(self) -> None:
        """Let go; the file lock goes when no target of this process holds the device any more."""
        with self._guard:
            if not self.mine:
                return
            self.mine = False
            fd, n = self._held.pop(self.key)
            if n > 1:
                self._held[self.key] = (fd, n - 1)
            else:
                os.close(fd)  # closing the file releases the flock
