"""Trusting a device's host key (`targets trust`): ask the device for it, then record it in known_hosts.

Nothing is written without that explicit step: an unknown or changed key is refused at connect time, and
`trust` itself records a key only after its fingerprint was shown and confirmed (or matched `--expect`).
known_hosts is rewritten through a temporary file and a rename: a crash or a full disk never truncates it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import paramiko

from targets.errors import TargetError
from targets.ssh.connection import fetch_host_key, fingerprint, known_hosts_name, resolve


@dataclass(frozen=True)
class HostKey:
    """The host key a device presents, and the known_hosts file that should hold it."""

    target: str
    host: str  # as known_hosts names it: "h", or "[h]:port" off port 22
    key: paramiko.PKey
    known_hosts: Path

    @property
    def kind(self) -> str:
        return self.key.get_name()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def presented_host_key(name: str, settings: Mapping[str, Any]) -> HostKey:
    """Ask the device of an ssh targets-file table (`settings`) for its host key: no login, no password."""
    ep = resolve(name, settings["host"], user=settings.get("user"), port=settings.get("port"),
                 key=settings.get("key"), known_hosts=settings.get("known_hosts"),
                 connect_timeout_s=settings.get("connect_timeout_s", 10.0),
                 ssh_config=settings.get("ssh_config", "~/.ssh/config"))
    return HostKey(target=name, host=known_hosts_name(ep.host, ep.port), key=fetch_host_key(ep),
                   known_hosts=ep.known_hosts)


def recorded_keys(found: HostKey) -> dict[str, paramiko.PKey]:
    """The keys known_hosts already holds for the device's host, by key type (empty: none)."""
    path = found.known_hosts
    known = paramiko.HostKeys()
    if path.is_file():
        try:
            known.load(str(path))
        except (OSError, UnicodeDecodeError, ValueError, paramiko.SSHException,
                paramiko.hostkeys.InvalidHostKey) as e:
            raise TargetError(f"target {found.target}: cannot read {path} ({e or type(e).__name__}); fix or "
                              "move that file") from None
    return dict(known.lookup(found.host) or {})


def standing(found: HostKey) -> str:
    """How the presented key stands against known_hosts: "already", "unknown", "other-type" or "changed"."""
    have = recorded_keys(found)
    if have.get(found.kind) == found.key:
        return "already"
    if not have:
        return "unknown"
    return "changed" if found.kind in have else "other-type"


def describe_recorded(found: HostKey) -> str:
    """What known_hosts holds for the host, for a message: "ssh-rsa SHA256:..., ...", or "nothing"."""
    return ", ".join(f"{k} {fingerprint(v)}" for k, v in recorded_keys(found).items()) or "nothing"


def record_host_key(found: HostKey, *, replace: bool = False) -> str:
    """Add the key to its known_hosts file: "added", "replaced" (with `replace`) or "already" (there).

    A different key of the same type is kept, and refused in one line, unless `replace` is given; a key of
    another type is added beside the recorded ones (with `replace`, instead of them). The caller has shown
    the fingerprint and had it confirmed.
    """
    path, host = found.known_hosts, found.host
    state = standing(found)
    if state == "already":
        return "already"
    if state == "changed" and not replace:
        raise TargetError(f"target {found.target}: {path} holds a different {found.kind} key for {host} "
                          f"({describe_recorded(found)}) than the device presents ({found.fingerprint}); this may be "
                          "another machine. Only if the device was reinstalled and its own `ssh-keygen -lf` shows "
                          f"{found.fingerprint}: `edge-harness targets trust {found.target} --replace --expect "
                          f"{found.fingerprint}`")
    try:
        lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"target {found.target}: cannot read {path} ({e}); nothing written") from None
    if replace:
        lines = [ln for ln in lines if not _names_host(ln, host)]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(f"{host} {found.kind} {found.key.get_base64()}\n")
    _write_atomic(path, "".join(lines), found.target)
    return "replaced" if replace and state != "unknown" else "added"


def _write_atomic(path: Path, text: str, target: str) -> None:
    """Write through a temporary file in the same folder and rename it over `path` (mode 600)."""
    tmp = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise TargetError(f"target {target}: cannot write {path} ({e.strerror or e}); it is unchanged") from None


def _names_host(line: str, host: str) -> bool:
    """Whether a known_hosts line is for `host` (plain or hashed names)."""
    try:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line) if line.strip() and not line.startswith("#") \
            else None
    except (ValueError, paramiko.SSHException):
        return False  # a line paramiko cannot read is kept as it is
    if entry is None:
        return False
    for h in entry.hostnames:
        if h == host or (h.startswith("|1|") and paramiko.HostKeys.hash_host(host, h) == h):
            return True
    return False
