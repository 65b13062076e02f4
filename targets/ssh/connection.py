"""Reaching a device over SSH: where to connect (after ~/.ssh/config), whose host key to accept,
and one lazily made connection with its SFTP channel that is made again after a lost link.

Every failure a user can cause (unreachable, refused, unknown or changed host key, wrong key) is
one TargetError line that says what to do.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paramiko

from targets.errors import TargetError
from targets.ssh.shell import last_line

LINK_TIMEOUT_S = 5  # unacknowledged data for this long means the link is dead (TCP_USER_TIMEOUT)
SFTP_STALL_S = 60  # an SFTP read or write that makes no progress for this long fails

_host_locks: dict[tuple[str, int], threading.RLock] = {}
_host_locks_guard = threading.Lock()


def host_lock(host: str, port: int) -> threading.RLock:
    """One lock per device, shared by every target that points at it: one job at a time there."""
    with _host_locks_guard:
        return _host_locks.setdefault((host, port), threading.RLock())


def fingerprint(key: paramiko.PKey) -> str:
    """The OpenSSH-style SHA256 fingerprint of a host key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: plain on port 22, `[host]:port` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass
class Endpoint:
    """Where and as whom to connect, after ~/.ssh/config aliases are resolved."""

    name: str
    host: str
    port: int
    user: str
    key: str | None
    known_hosts: Path
    password: str | None = field(repr=False)  # never in a log line or a traceback's locals
    timeout_s: float = 10.0

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def resolve(name: str, host: str, *, user: str | None = None, port: int | None = None, key: str | None = None,
            known_hosts: str | None = None, password_env: str | None = None, connect_timeout_s: float = 10.0,
            ssh_config: str | None = "~/.ssh/config") -> Endpoint:
    """Apply ~/.ssh/config (HostName, User, Port, IdentityFile, UserKnownHostsFile) to a target's settings."""
    cfg: dict[str, Any] = {}
    path = Path(ssh_config).expanduser() if ssh_config else None
    if path and path.is_file():
        cfg = dict(paramiko.SSHConfig.from_path(str(path)).lookup(host))
        if "proxycommand" in cfg or "proxyjump" in cfg:
            raise TargetError(f"target {name}: ProxyCommand/ProxyJump in {path} is not supported; "
                              "give the device's own address as host")
    if key is None and cfg.get("identityfile"):
        key = cfg["identityfile"][0]
    if key is not None:
        key = str(Path(key).expanduser())
        if not Path(key).is_file():
            raise TargetError(f"target {name}: key file not found: {key}")
    if known_hosts is None:
        known_hosts = (cfg.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0]
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise TargetError(f"target {name}: environment variable {password_env} (password_env) is not set")
    return Endpoint(name=name, host=str(cfg.get("hostname", host)), port=int(port or cfg.get("port", 22)),
                    user=user or cfg.get("user") or getpass.getuser(), key=key,
                    known_hosts=Path(known_hosts).expanduser(), password=password, timeout_s=float(connect_timeout_s))


def open_socket(ep: Endpoint) -> socket.socket:
    """A TCP connection that fails within the connect timeout and notices a dead link within seconds."""
    where = f"target {ep.name}: cannot reach {ep.host}:{ep.port}"
    try:
        sock = socket.create_connection((ep.host, ep.port), timeout=ep.timeout_s)
    except TimeoutError:
        raise TargetError(f"{where}: no answer within {ep.timeout_s:g} s (connect_timeout_s)") from None
    except ConnectionRefusedError:
        raise TargetError(f"{where}: connection refused (is sshd running on port {ep.port}?)") from None
    except socket.gaierror as e:
        raise TargetError(f"{where}: unknown host ({e.strerror})") from None
    except OSError as e:
        raise TargetError(f"{where}: {e.strerror or e}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        # Without this a read on a cut link blocks for many minutes; with it (and the SSH
        # keep-alive, which makes sure there is always data in flight) the kernel gives up fast.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, LINK_TIMEOUT_S * 1000)
    return sock


class RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key unless its fingerprint was pinned with `trust` in the targets file."""

    def __init__(self, ep: Endpoint, pinned: str | None) -> None:
        self.ep, self.pinned = ep, pinned

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if self.pinned and fp == self.pinned:
            return
        if self.pinned:
            raise TargetError(f"target {self.ep.name}: host key of {hostname} is {key.get_name()} {fp}, not the "
                              f"pinned {self.pinned}; refusing to connect")
        raise TargetError(f"target {self.ep.name}: unknown host key for {hostname} ({key.get_name()} {fp}, not in "
                          f"{self.ep.known_hosts}); refusing to connect. If it is your device, run "
                          f"`edge-harness targets trust {self.ep.name}` to add it")


def connect(ep: Endpoint, pinned: str | None = None) -> paramiko.SSHClient:
    """Connect and authenticate, checking the host key; every failure is one TargetError line."""
    sock = open_socket(ep)
    client = paramiko.SSHClient()
    if ep.known_hosts.is_file():
        try:
            client.load_host_keys(str(ep.known_hosts))
        except (OSError, UnicodeDecodeError, ValueError, paramiko.SSHException,
                paramiko.hostkeys.InvalidHostKey) as e:
            sock.close()
            raise TargetError(f"target {ep.name}: cannot read known_hosts {ep.known_hosts} "
                              f"({e or type(e).__name__}); fix or move that file") from None
    client.set_missing_host_key_policy(RefuseUnknownHostKey(ep, pinned))
    try:
        client.connect(ep.host, port=ep.port, username=ep.user, key_filename=ep.key, password=ep.password,
                       sock=sock, timeout=ep.timeout_s, banner_timeout=ep.timeout_s, auth_timeout=ep.timeout_s,
                       channel_timeout=ep.timeout_s, allow_agent=ep.key is None, look_for_keys=ep.key is None)
    except TargetError:
        client.close()
        raise
    except paramiko.BadHostKeyException as e:
        client.close()
        raise TargetError(f"target {ep.name}: host key of {known_hosts_name(ep.host, ep.port)} CHANGED (now "
                          f"{e.key.get_name()} {fingerprint(e.key)}, {ep.known_hosts} has "
                          f"{e.expected_key.get_name()} {fingerprint(e.expected_key)}); refusing to connect: this may "
                          f"be another machine. Only if the device was reinstalled: read its fingerprint on the device "
                          f"itself (`ssh-keygen -lf /etc/ssh/ssh_host_{e.key.get_name().removeprefix('ssh-')}_key.pub`"
                          f"), and if it is {fingerprint(e.key)}, run `edge-harness targets trust {ep.name} --replace "
                          f"--expect {fingerprint(e.key)}`") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise TargetError(f"target {ep.name}: key {ep.key} is encrypted; add it to ssh-agent and leave `key` "
                          "unset") from None
    except paramiko.AuthenticationException:
        client.close()
        how = f"key {ep.key}" if ep.key else "the ssh-agent's keys and ~/.ssh/id_*"
        raise TargetError(f"target {ep.name}: authentication failed for {ep} with {how} (is the public key in "
                          f"the device's ~/.ssh/authorized_keys?)") from None
    except (paramiko.SSHException, EOFError, OSError) as e:
        client.close()
        raise TargetError(f"target {ep.name}: SSH connection to {ep} failed: {e or type(e).__name__}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(1)
    return client


def fetch_host_key(ep: Endpoint) -> paramiko.PKey:
    """The host key the device presents (no authentication), for `targets trust`."""
    sock = open_socket(ep)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = ep.timeout_s
    try:
        transport.start_client(timeout=ep.timeout_s)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise TargetError(f"target {ep.name}: no SSH server answered at {ep.host}:{ep.port}: {e}") from None
    finally:
        transport.close()


class Connection:
    """The SSH connection and SFTP channel to one device: made on first use, made again after a lost link.

    `on_connect` runs after every (re)connection, `on_drop` whenever the connection is given up.
    """

    def __init__(self, endpoint: Endpoint, pinned: str | None, lock: threading.RLock,
                 on_connect: Callable[[], None], on_drop: Callable[[], None]) -> None:
        self.endpoint = endpoint
        self.pinned = pinned
        self.lock = lock
        self._on_connect, self._on_drop = on_connect, on_drop
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def client(self) -> paramiko.SSHClient:
        """The open connection, made (or made again after a lost link) on first use."""
        with self.lock:
            if self._client is not None:
                if self.is_open():
                    return self._client
                self.drop()
            client = connect(self.endpoint, self.pinned)
            try:
                self._sftp = client.open_sftp()
                # A stalled transfer (a read that never returns) fails after this long instead of hanging.
                self._sftp.get_channel().settimeout(max(SFTP_STALL_S, 3 * self.endpoint.timeout_s))
            except (paramiko.SSHException, EOFError, OSError) as e:
                client.close()
                raise TargetError(f"target {self.endpoint.name}: no SFTP on {self.endpoint.host} ({e}); enable "
                                  "the sftp subsystem of its sshd (openssh-sftp-server)") from None
            self._client = client
            try:
                self._on_connect()  # checks the workdir: until it passes, the connection is not handed out
            except BaseException:
                self.drop()  # a later call connects and checks again; never the unchecked client
                raise
            return client

    def is_open(self) -> bool:
        """Whether the connection is up now (never connects)."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP channel of the open connection (connects when needed)."""
        with self.lock:
            self.client()
            assert self._sftp is not None
            return self._sftp

    @property
    def current_sftp(self) -> paramiko.SFTPClient | None:
        """The SFTP channel if connected now, else None (never connects: for clean-up after a failure)."""
        return self._sftp

    def exec(self, command: str, timeout: float = 120.0, check: bool = False) -> tuple[int, str]:
        """Run a shell command on the device; returns (exit status, stdout+stderr) like fabric."""
        client = self.client()
        ep = self.endpoint
        try:
            chan = client.get_transport().open_session(timeout=ep.timeout_s)  # type: ignore[union-attr]
            chan.set_combine_stderr(True)
            chan.settimeout(timeout)
            chan.exec_command(command)
            out = bytearray()
            while data := chan.recv(65536):
                out += data
            code = exit_status(chan, timeout)
            chan.close()
        except (paramiko.SSHException, EOFError, OSError) as e:
            self.drop()
            raise TargetError(f"target {ep.name}: command on {ep.host} failed: {e or 'timed out'}") from None
        text = out.decode(errors="replace")
        if check and code != 0:
            raise TargetError(f"target {ep.name}: `{command[:80]}` exited with {code}: {last_line(text)}")
        return code, text

    def drop(self) -> None:
        """Close the connection (a dead one too); the next use connects again."""
        for thing in (self._sftp, self._client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass
        self._sftp = self._client = None
        self._on_drop()


def exit_status(chan: paramiko.Channel, timeout: float) -> int:
    """The command's exit status, waiting at most `timeout` s for it (paramiko's own wait has no limit)."""
    if not chan.status_event.wait(timeout):
        raise TimeoutError(f"no exit status within {timeout:g} s")
    return chan.recv_exit_status()
