"""Trusting a device's host key (`targets trust`): ask the device for it, then record it in known_hosts.

Nothing is written without that explicit step: an unknown or changed key is refused at connect time.
"""

from __future__ import annotations

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


def record_host_key(found: HostKey, *, replace: bool = False) -> str:
    """Add the key to its known_hosts file: "added", "replaced" (with `replace`) or "already" (there).

    A different key for the host is kept, and refused in one line, unless `replace` is given.
    """
    path, host = found.known_hosts, found.host
    known = paramiko.HostKeys()
    if path.is_file():
        known.load(str(path))
    have = known.lookup(host) or {}
    if have.get(found.kind) == found.key:
        return "already"
    if have and not replace:
        olds = ", ".join(f"{k} {fingerprint(v)}" for k, v in have.items())
        raise TargetError(f"target {found.target}: {path} holds a different key for {host} ({olds}); if the "
                          f"device was reinstalled, run `edge-harness targets trust {found.target} --replace`")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    if have:
        lines = [ln for ln in lines if not _names_host(ln, host)]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(f"{host} {found.kind} {found.key.get_base64()}\n")
    path.write_text("".join(lines))
    path.chmod(0o600)
    return "replaced" if have else "added"


def _names_host(line: str, host: str) -> bool:
    """Whether a known_hosts line is for `host` (plain or hashed names)."""
    entry = paramiko.hostkeys.HostKeyEntry.from_line(line) if line.strip() and not line.startswith("#") else None
    if entry is None:
        return False
    for h in entry.hostnames:
        if h == host or (h.startswith("|1|") and paramiko.HostKeys.hash_host(host, h) == h):
            return True
    return False
