"""SSH to a phone over USB: Termux's sshd (port 8022 on the phone) reached through `adb forward`.

The forward is opened before each (re)connection and removed when the target closes, whatever ended the
session; `host` must then be this machine's loopback address, `port` the local end of the forward.
"""

from __future__ import annotations

import threading
from typing import Callable

import paramiko

from targets.adb.bridge import Adb, AdbForward
from targets.errors import TargetSettingError
from targets.ssh.connection import Connection, Endpoint

TERMUX_SSHD_PORT = 8022
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def usb_forward(name: str, host: str, port: int | None, serial: str, adb: str | None) -> AdbForward:
    """The forward an SSH target with `adb_serial` needs; a host that is not loopback is a setting error."""
    if host not in LOOPBACK:
        raise TargetSettingError(f"target {name}: with adb_serial the phone is reached through 127.0.0.1:PORT "
                                 f"(adb forward), so host must be \"127.0.0.1\", not {host!r}")
    return AdbForward(Adb(name, serial, adb), port or TERMUX_SSHD_PORT, TERMUX_SSHD_PORT)


class ForwardedConnection(Connection):
    """A Connection that (re)opens its adb forward before connecting."""

    def __init__(self, forward: AdbForward, endpoint: Endpoint, pinned: str | None, lock: threading.RLock,
                 on_connect: Callable[[], None], on_drop: Callable[[], None]) -> None:
        super().__init__(endpoint, pinned, lock, on_connect=on_connect, on_drop=on_drop)
        self.forward = forward

    def client(self) -> paramiko.SSHClient:
        with self.lock:
            if not self.is_open():
                self.forward.open()
            return super().client()


def connection(forward: AdbForward | None, endpoint: Endpoint, pinned: str | None, lock: threading.RLock,
               on_connect: Callable[[], None], on_drop: Callable[[], None]) -> Connection:
    """A plain Connection, or one through `forward` when the target reaches its phone over USB."""
    if forward is None:
        return Connection(endpoint, pinned, lock, on_connect=on_connect, on_drop=on_drop)
    return ForwardedConnection(forward, endpoint, pinned, lock, on_connect=on_connect, on_drop=on_drop)
