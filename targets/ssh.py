"""The SSH target: the same runner on a remote board, over one paramiko connection per target.

Files go over SFTP into `workdir/blobs/<sha256><suffix>` (a finished upload is renamed into
place, so a half-sent file never counts) and are not sent again while they are there. A job
runs under a small watchdog on the device that kills the runner when the host stops sending
its once-a-second heartbeat (a cut link), when the host closes the session, or at a deadline,
so no measurement is left running on a device the host can no longer see.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import json
import os
import shlex
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from exporters.base import sha256_file
from harness.errors import ConfigError, TargetError
from targets.base import RUNNER_PATH, Job, RawResult, Target, register_target
from targets.local import read_result

LINK_TIMEOUT_S = 5  # unacknowledged data for this long means the link is dead (TCP_USER_TIMEOUT)
HEARTBEAT_S = 1.0  # the host writes one byte to the job's stdin this often
GRACE_S = 6.0  # the device-side watchdog kills the runner after this long without a heartbeat
WATCHDOG_EXIT = 124  # the watchdog's exit status when it killed the runner

# Runs on the device beside the runner (Python 3.8+, standard library only).
WATCHDOG = r'''"""edge-harness watchdog: run the runner; kill it when the host goes silent or time is up."""
import os
import select
import signal
import subprocess
import sys
import time

grace, deadline, pidfile = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
child = subprocess.Popen(sys.argv[4:], stdin=subprocess.DEVNULL, start_new_session=True)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(child.pid))
os.replace(pidfile + ".tmp", pidfile)
wake_r, wake_w = os.pipe()


def kill(why):
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    child.wait()
    sys.stderr.write("edge-harness watchdog: runner killed (%s)\n" % why)
    sys.exit(124)


signal.signal(signal.SIGCHLD, lambda *a: os.write(wake_w, b"x"))
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(sig, lambda s, f: kill("signal %d" % s))
start = last = time.monotonic()
while True:
    code = child.poll()
    if code is not None:
        sys.exit(128 - code if code < 0 else code)
    now = time.monotonic()
    if now - start > deadline:
        kill("deadline of %g s passed" % deadline)
    if now - last > grace:
        kill("no heartbeat from the host for %g s: link lost?" % grace)
    ready = select.select([0, wake_r], [], [], 0.5)[0]
    if wake_r in ready:
        os.read(wake_r, 64)
    if 0 in ready:
        if not os.read(0, 4096):
            kill("the host closed the session")
        last = time.monotonic()
'''

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
    password: str | None
    timeout_s: float

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def resolve(name: str, host: str, user: str | None = None, port: int | None = None, key: str | None = None,
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


class _Refuse(paramiko.MissingHostKeyPolicy):
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
        client.load_host_keys(str(ep.known_hosts))
    client.set_missing_host_key_policy(_Refuse(ep, pinned))
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
                          f"{fingerprint(e.expected_key)}); refusing to connect. If the device was reinstalled, "
                          f"run `edge-harness targets trust {ep.name} --replace`") from None
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



def safe_suffix(path: Path) -> str:
    """The file's suffix if it is plain (".onnx"), else none: device paths never carry user text."""
    s = path.suffix
    return s if s[1:].isalnum() and s.isascii() and len(s) <= 12 else ""


@register_target("ssh")
class SSHTarget(Target):
    """A device reached over SSH; connects lazily and reconnects after a dropped link."""

    def __init__(self, name: str, host: str, user: str | None = None, port: int | None = None,
                 key: str | None = None, known_hosts: str | None = None, password_env: str | None = None,
                 connect_timeout_s: float = 10.0, run_timeout_s: float | None = None, trust: str | None = None,
                 keep_files: bool = False, python: str = "python3", workdir: str = "/tmp/edge-harness",
                 threads: int | None = None, affinity: list[int] | None = None,
                 ssh_config: str | None = "~/.ssh/config", **settings: Any) -> None:
        super().__init__(name, threads, **settings)
        if trust is not None and not (isinstance(trust, str) and trust.startswith("SHA256:")):
            raise ConfigError(f"target {name}: trust must be a host key fingerprint like 'SHA256:...' "
                              f"(`edge-harness targets trust {name}` prints it), got {trust!r}")
        if not workdir.startswith("/"):
            raise ConfigError(f"target {name}: workdir must be an absolute path on the device, got {workdir!r}")
        self.endpoint = resolve(name, host, user, port, key, known_hosts, password_env, connect_timeout_s, ssh_config)
        self.pinned = trust
        self.python = python
        self.workdir = workdir.rstrip("/") or "/"
        self.affinity = affinity
        self.run_timeout_s = run_timeout_s
        self.keep_files = keep_files
        self.stats = {"bytes_sent": 0, "files_sent": 0, "files_reused": 0, "job_bytes_sent": 0, "connects": 0}
        self._lock = threading.RLock()
        self._closing = threading.Event()  # set by close() from another thread: stop the running job now
        self._device_lock = host_lock(self.endpoint.host, self.endpoint.port)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._tools: tuple[str, str] | None = None
        self._digests: dict[tuple[str, int, int], str] = {}
        self._stale: list[str] = []  # job folders of runs cut off by a lost link, cleaned on reconnect
        self._tmp: Path | None = None  # local folder for fetched results, made on first use

    @property
    def host(self) -> str:
        return str(self.endpoint)

    @property
    def bytes_sent(self) -> int:
        return int(self.stats["bytes_sent"])

    def describe(self) -> dict[str, Any]:
        # "transfer" is the live counter, not a copy: a report made from this before the cells ran
        # still shows what they sent when it is written.
        return {**super().describe(), "python": self.python, "workdir": self.workdir, "transfer": self.stats}

    # ------------------------------------------------------------------ connection

    def connection(self) -> paramiko.SSHClient:
        """The open connection, made (or made again after a lost link) on first use."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._client
                self._drop()
            client = connect(self.endpoint, self.pinned)
            try:
                self._sftp = client.open_sftp()
            except (paramiko.SSHException, EOFError, OSError) as e:
                client.close()
                raise TargetError(f"target {self.name}: no SFTP on {self.endpoint.host} ({e}); enable the sftp "
                                  "subsystem of its sshd (openssh-sftp-server)") from None
            self._client = client
            self.stats["connects"] += 1
            for sub in ("blobs", "jobs"):
                self._makedirs(f"{self.workdir}/{sub}")
            self._make_private(self.workdir)
            for job_dir in self._stale:
                try:
                    self._kill_job(job_dir)
                except (TargetError, paramiko.SSHException, EOFError, OSError):
                    pass  # best effort: the device's watchdog has stopped that runner already
            self._stale.clear()
            return self._client

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            self.connection()
            assert self._sftp is not None
            return self._sftp

    def _make_private(self, path: str) -> None:
        """The workdir holds code the device will run: it must be ours alone (mode 700).

        In a shared folder such as /tmp another user could create it first and plant a runner whose
        size matches ours; chmod succeeds only for the owner, so a folder we do not own is refused.
        """
        assert self._sftp is not None
        try:
            self._sftp.chmod(path, 0o700)
            mode = self._sftp.stat(path).st_mode or 0
        except OSError as e:
            raise TargetError(f"target {self.name}: workdir {path} on the device cannot be made private "
                              f"({e.strerror or e}): it may belong to another user; set `workdir` to a folder of "
                              f"your own, e.g. under the home directory") from None
        if mode & 0o077:
            raise TargetError(f"target {self.name}: workdir {path} stays open to other users (mode "
                              f"{mode & 0o777:o}); set `workdir` to a folder of your own")

    def _makedirs(self, path: str) -> None:
        """`mkdir -p` over SFTP (no shell on the device involved)."""
        sftp = self.sftp()
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            try:
                sftp.stat(sub)
            except FileNotFoundError:
                try:
                    sftp.mkdir(sub)
                except OSError as e:
                    # SFTP says only "Failure"; the device's own mkdir says why (read-only, full, denied).
                    why = str(e) or type(e).__name__
                    try:
                        code, out = self.exec(f"mkdir -- {q(sub)}", timeout=self.endpoint.timeout_s)
                        if code != 0:
                            why = _last_line(out)
                    except TargetError:
                        pass
                    raise TargetError(f"target {self.name}: cannot create {sub} on the device ({why}); "
                                      "set `workdir` to a writable folder") from None

    def _remove_tree(self, path: str) -> None:
        """`rm -rf` over SFTP, for a job's own small folder."""
        sftp = self.sftp()
        try:
            entries = sftp.listdir_attr(path)
        except FileNotFoundError:
            return
        for e in entries:
            child = f"{path}/{e.filename}"
            if e.st_mode is not None and stat.S_ISDIR(e.st_mode):
                self._remove_tree(child)
            else:
                sftp.remove(child)
        sftp.rmdir(path)

    def exec(self, command: str, timeout: float = 120.0, check: bool = False) -> tuple[int, str]:
        """Run a shell command on the device; returns (exit status, stdout+stderr) like fabric."""
        client = self.connection()
        try:
            chan = client.get_transport().open_session(timeout=self.endpoint.timeout_s)  # type: ignore[union-attr]
            chan.set_combine_stderr(True)
            chan.settimeout(timeout)
            chan.exec_command(command)
            out = bytearray()
            while data := chan.recv(65536):
                out += data
            code = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, EOFError, OSError) as e:
            self._drop()
            raise TargetError(f"target {self.name}: command on {self.endpoint.host} failed: {e or 'timed out'}") \
                from None
        text = out.decode(errors="replace")
        if check and code != 0:
            raise TargetError(f"target {self.name}: `{command[:80]}` exited with {code}: {_last_line(text)}")
        return code, text

    def _drop(self) -> None:
        for thing in (self._sftp, self._client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass
        self._sftp = self._client = None
        self._tools = None

    def close(self) -> None:
        self._closed = True  # no new job starts after this (an interrupted run must not start another cell)
        self._closing.set()  # a job running on another thread stops within a poll and cleans up on the device
        with self._lock:
            self._drop()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            self._closing.clear()

    def local_tmp(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="edge-harness-ssh-"))
        return self._tmp

    # ---------------------------------------------------------------------- deploy

    def deploy(self, path: Path) -> str:
        path = Path(path)
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        remote = f"{self.workdir}/blobs/{self._digests[key]}{safe_suffix(path)}"
        with self._device_lock, self._lock:
            self.upload(path, remote, st.st_size)
        return remote

    def upload(self, local: Path, remote: str, size: int) -> None:
        """Send a file to `remote` unless it is there with this size; a rename makes it appear whole."""
        try:
            sftp = self.sftp()
            try:
                if sftp.stat(remote).st_size == size:
                    self.stats["files_reused"] += 1
                    return
            except OSError:
                pass  # not there yet
            part = f"{remote}.part-{uuid.uuid4().hex[:8]}"
            sftp.put(str(local), part, confirm=True)
            sftp.posix_rename(part, remote)  # only complete files get the content-addressed name
        except (paramiko.SSHException, EOFError, OSError) as e:
            hint = self._after_failed_upload(locals().get("part"), size)
            self._drop()
            raise TargetError(f"target {self.name}: upload of {local.name} failed: {e or type(e).__name__}"
                              f"{hint}") from None
        self.stats["bytes_sent"] += size
        self.stats["files_sent"] += 1

    def _after_failed_upload(self, part: str | None, size: int) -> str:
        """Remove a half-sent file (it would fill the disk further); say so if the workdir is full."""
        try:
            if part is not None and self._sftp is not None:
                self._sftp.remove(part)
            code, out = self.exec(f"{q(self.python)} -c {q(_FREE)} {q(self.workdir)}", timeout=self.endpoint.timeout_s)
            free = int(out.strip().splitlines()[-1]) if code == 0 else None
        except (TargetError, paramiko.SSHException, EOFError, OSError, ValueError, IndexError):
            return ""
        if free is not None and free < size:
            return (f" (the device has {free / 1e6:.2f} MB free in {self.workdir}, the file is {size / 1e6:.2f} MB: "
                    "free space there or set `workdir` to a folder with room)")
        return ""

    def tools(self) -> tuple[str, str]:
        """The runner and the watchdog on the device (deployed like any other file)."""
        with self._device_lock, self._lock:
            if self._tools is None:
                watchdog = self.local_tmp() / "watchdog.py"
                if not watchdog.is_file():
                    watchdog.write_text(WATCHDOG)
                self._tools = (self.deploy(RUNNER_PATH), self.deploy(watchdog))
            return self._tools

    # ------------------------------------------------------------------------ probe

    def probe(self) -> dict[str, Any]:
        with self._device_lock, self._lock:
            runner, _ = self.tools()
            code, out = self.exec(f"{q(self.python)} -c {q(_PROBE)} {q(runner)} {q(self.workdir)}", timeout=60)
            if code != 0:
                raise TargetError(f"target {self.name}: cannot run {self.python} on the device ({_last_line(out)}); "
                                  f"set `python` in the targets file or run `edge-harness targets setup {self.name}`")
            try:
                return dict(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                raise TargetError(f"target {self.name}: the probe printed no JSON: {_last_line(out)}") from None

    # -------------------------------------------------------------------------- run

    def run(self, job: Job) -> RawResult:
        """Run one job; a lost link, a timeout or a device error gives a failed result, never an exception."""
        if getattr(self, "_closed", False):
            return RawResult.failed(f"target {self.name} was closed (interrupted run); job not started")
        with self._device_lock, self._lock:
            try:
                return self._run(job)
            except (paramiko.SSHException, EOFError, OSError) as e:
                self._drop()
                return RawResult.failed(f"lost the link to {self.endpoint.host}: {e or type(e).__name__}")
            except TargetError as e:
                return RawResult.failed(str(e))

    def _run(self, job: Job) -> RawResult:
        runner, watchdog = self.tools()
        job_dir = f"{self.workdir}/jobs/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.sftp().mkdir(job_dir)
        if job.threads is None:
            job.threads = self.threads
        if job.affinity is None:
            job.affinity = self.affinity
        spec = job.to_runner(job.artifact, job.timing_inputs, job.eval_inputs, f"{job_dir}/out")
        payload = json.dumps(spec).encode()
        self.sftp().putfo(io.BytesIO(payload), f"{job_dir}/job.json")
        self.stats["job_bytes_sent"] += len(payload)
        timeout = float(self.run_timeout_s or job.timeout_s)
        env = f"env OMP_NUM_THREADS={int(job.threads)} " if job.threads else ""
        command = (f"exec {env}{q(self.python)} -u {q(watchdog)} {GRACE_S:g} {timeout + 10:g} "
                   f"{q(job_dir + '/pid')} {q(self.python)} -u {q(runner)} {q(job_dir + '/job.json')}")
        code, log, failure = self._watch(command, timeout, job_dir)
        if failure:
            return RawResult.failed(failure, exit_code=code, log=log)
        if code == 127 and ("not found" in log or "No such file" in log):
            self._remove_tree(job_dir)
            return RawResult.failed(f"{self.python} not found on the device ({_last_line(log)}): set `python` in the "
                                    f"targets file, or run `edge-harness targets setup {self.name}`", exit_code=code,
                                    log=log)
        return self._collect(job_dir, code, log)

    def _watch(self, command: str, timeout: float, job_dir: str) -> tuple[int | None, str, str | None]:
        """Run the job, sending heartbeats; returns (exit status, log, why it failed or None)."""
        client = self.connection()
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=self.endpoint.timeout_s)
        chan.set_combine_stderr(True)
        chan.settimeout(0.25)
        chan.exec_command(command)
        log = bytearray()
        start = time.monotonic()
        next_beat = 0.0
        eof = False
        failure = None
        try:
            while not (eof and chan.exit_status_ready()):
                try:
                    data = chan.recv(65536)
                    log += data
                    eof = eof or not data
                except TimeoutError:
                    pass
                if eof and not chan.exit_status_ready():
                    chan.status_event.wait(0.25)
                now = time.monotonic()
                if not transport.is_active():
                    failure = f"lost the link to {self.endpoint.host} during the run"
                    break
                if now - start > timeout:
                    failure = f"timed out after {timeout:g} s (runner killed)"
                    break
                if self._closing.is_set():
                    failure = "interrupted (runner killed)"
                    break
                if now >= next_beat and not eof:
                    try:
                        chan.send(b".")
                    except OSError:
                        if not transport.is_active():
                            raise
                        # The command ended at once (e.g. no such python) and closed the channel: its
                        # exit status is already here, so this is not a lost link.
                    next_beat = now + HEARTBEAT_S
        except (paramiko.SSHException, EOFError, OSError) as e:
            failure = f"lost the link to {self.endpoint.host} during the run ({e or type(e).__name__})"
        except BaseException:
            self._abort(chan, job_dir)
            raise
        text = log.decode(errors="replace")
        if failure is None:
            code = chan.recv_exit_status()
            chan.close()
            if code == WATCHDOG_EXIT:
                return code, text, f"runner killed on the device: {_last_line(text)}"
            return (-(code - 128) if 128 < code < 160 else code), text, None
        self._abort(chan, job_dir)
        return None, text, failure

    def _abort(self, chan: paramiko.Channel, job_dir: str) -> None:
        """Stop a job: closing its stdin makes the watchdog kill the runner; kill by PID as well."""
        try:
            chan.shutdown_write()
            chan.close()
        except Exception:
            pass
        transport = self._client.get_transport() if self._client else None
        if transport is not None and transport.is_active():
            try:
                self._kill_job(job_dir)
                return
            except Exception:  # the link went down meanwhile: the watchdog still stops the runner
                pass
        self._drop()
        self._stale.append(job_dir)  # the watchdog stops it within GRACE_S; cleaned again on reconnect

    def _kill_job(self, job_dir: str) -> None:
        try:
            with self.sftp().open(f"{job_dir}/pid") as f:
                pid = int(f.read().decode().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 1:
            # Only if that process group is still this job's runner (PIDs are reused).
            self.exec(f"grep -qF -- {q(job_dir)} /proc/{pid}/cmdline 2>/dev/null && kill -KILL -- -{pid}; true")
        if not self.keep_files:
            self._remove_tree(job_dir)

    def _collect(self, job_dir: str, code: int | None, log: str) -> RawResult:
        local = Path(tempfile.mkdtemp(dir=self.local_tmp()))
        try:
            sftp = self.sftp()
            try:
                present = set(sftp.listdir(f"{job_dir}/out"))
            except FileNotFoundError:
                present = set()
            for name in ("result.json", "outputs.npz"):
                if name in present:
                    sftp.get(f"{job_dir}/out/{name}", str(local / name))
            result = read_result(local, code, log)
            if not self.keep_files:
                self._remove_tree(job_dir)
            return result
        except (paramiko.SSHException, EOFError, OSError, TargetError) as e:
            self._drop()
            return RawResult.failed(f"could not fetch the results from {self.endpoint.host}: {e}", log=log)
        finally:
            shutil.rmtree(local, ignore_errors=True)


# The runner's probe plus free space in the workdir and available memory (MB), in one process.
_PROBE = ("import json,os,runpy,shutil,sys\n"
          "p=runpy.run_path(sys.argv[1])['probe']()\n"
          "d=sys.argv[2]\n"
          "m=[l.split() for l in open('/proc/meminfo')] if os.path.exists('/proc/meminfo') else []\n"
          "a=[int(x[1])/1024.0 for x in m if x[0]=='MemAvailable:']\n"
          "p.update(workdir=d,workdir_free_mb=shutil.disk_usage(d).free/2**20,mem_available_mb=a[0] if a else None)\n"
          "print(json.dumps(p))")


_FREE = "import shutil,sys;print(shutil.disk_usage(sys.argv[1]).free)"


def q(s: str) -> str:
    """Quote for the device's shell: every path and argument goes through here."""
    return shlex.quote(str(s))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
