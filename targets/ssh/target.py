"""The SSH target: the same runner on a remote board, over one paramiko connection per target.

A job runs under the watchdog (targets/watchdog.py) on the device, which kills the runner when the
host stops sending its once-a-second heartbeat (a cut link), when the host closes the session, or
at a deadline, so no measurement is left running on a device the host can no longer see. Resident
runners (interleaved measurement) run under it too, in its forwarding mode (targets/ssh/resident.py).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paramiko

from targets.base import RUNNER_PATH, WATCHDOG_PATH, Job, RawResult, Target, register_target
from targets.device_lock import DeviceBusy
from targets.errors import TargetError, TargetSettingError
from targets.result_files import read_result
from targets.ssh.connection import host_lock, resolve
from targets.ssh.resident import RESULT_FILES, SSHResidentRunner
from targets.ssh.shell import last_line, q
from targets.ssh.store import DeviceStore
from targets.ssh.usb import connection, usb_forward
from targets.watchdog import KILLED

HEARTBEAT_S = 1.0  # the host writes one byte to the job's stdin this often
GRACE_S = 6.0  # the device-side watchdog kills the runner after this long without a heartbeat
WATCHDOG_EXIT = KILLED  # the watchdog's exit status when it killed the runner

# The runner's probe plus free space in the workdir and available memory (MB), in one process.
_PROBE = ("import json,os,runpy,shutil,sys\n"
          "p=runpy.run_path(sys.argv[1])['probe']()\n"
          "d=sys.argv[2]\n"
          "m=[l.split() for l in open('/proc/meminfo')] if os.path.exists('/proc/meminfo') else []\n"
          "a=[int(x[1])/1024.0 for x in m if x[0]=='MemAvailable:']\n"
          "p.update(workdir=d,workdir_free_mb=shutil.disk_usage(d).free/2**20,mem_available_mb=a[0] if a else None)\n"
          "print(json.dumps(p))")
_FREE = "import shutil,sys;print(shutil.disk_usage(sys.argv[1]).free)"


@register_target("ssh")
class SSHTarget(Target):
    """A device reached over SSH; connects lazily and reconnects after a dropped link."""

    SETTINGS = {"host": (str,), "user": (str,), "port": (int,), "key": (str,), "known_hosts": (str,),
                "password_env": (str,), "connect_timeout_s": (int, float), "run_timeout_s": (int, float),
                "trust": (str,), "keep_files": (bool,), "ssh_config": (str,), "adb_serial": (str,), "adb": (str,),
                "affinity": (str, list)}  # affinity: CPUs, or "big" / "little" from the device's clusters
    REQUIRED = ("host",)

    def __init__(self, name: str, host: str, user: str | None = None, port: int | None = None,
                 key: str | None = None, known_hosts: str | None = None, password_env: str | None = None,
                 connect_timeout_s: float = 10.0, run_timeout_s: float | None = None, trust: str | None = None,
                 keep_files: bool = False, python: str = "python3", workdir: str = "/tmp/edge-harness",
                 threads: int | None = None, affinity: list[int] | str | None = None,
                 ssh_config: str | None = "~/.ssh/config", adb_serial: str | None = None, adb: str | None = None,
                 **settings: Any) -> None:
        super().__init__(name, threads, **settings)
        if trust is not None and not (isinstance(trust, str) and trust.startswith("SHA256:")):
            raise TargetSettingError(f"target {name}: trust must be a host key fingerprint like 'SHA256:...' "
                                     f"(`edge-harness targets trust {name}` prints it), got {trust!r}")
        if not workdir.startswith("/"):
            raise TargetSettingError(f"target {name}: workdir must be an absolute path on the device, "
                                     f"got {workdir!r}")
        self.forward = usb_forward(name, host, port, adb_serial, adb) if adb_serial else None
        port = self.forward.local_port if self.forward is not None else port
        self.endpoint = resolve(name, host, user=user, port=port, key=key, known_hosts=known_hosts,
                                password_env=password_env, connect_timeout_s=connect_timeout_s,
                                ssh_config=ssh_config)
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
        self.conn = connection(self.forward, self.endpoint, trust, self._lock, on_connect=self._connected,
                               on_drop=self._dropped)
        self.store = DeviceStore(self.conn, self.workdir, self.stats, free_bytes=self._free_bytes)
        self._tools: tuple[str, str] | None = None
        self._stale: list[str] = []  # job folders of runs cut off by a lost link, cleaned on reconnect
        self._tmp: Path | None = None  # local folder for fetched results, made on first use
        self._residents: set[SSHResidentRunner] = set()  # open resident runners, ended by close()

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
        return self.conn.client()

    def exec(self, command: str, timeout: float = 120.0, check: bool = False) -> tuple[int, str]:
        """Run a shell command on the device; returns (exit status, stdout+stderr) like fabric."""
        return self.conn.exec(command, timeout=timeout, check=check)

    def _connected(self) -> None:
        self.stats["connects"] += 1
        self.store.prepare()
        for job_dir in self._stale:
            try:
                self._kill_job(job_dir)
            except (TargetError, paramiko.SSHException, EOFError, OSError):
                pass  # best effort: the device's watchdog has stopped that runner already
        self._stale.clear()

    def _dropped(self) -> None:
        self._tools = None  # a new connection checks again that runner and watchdog are there

    def _free_bytes(self) -> int | None:
        code, out = self.exec(f"{q(self.python)} -c {q(_FREE)} {q(self.workdir)}", timeout=self.endpoint.timeout_s)
        return int(out.strip().splitlines()[-1]) if code == 0 else None

    def close(self) -> None:
        self._closed = True  # no new job starts after this (an interrupted run must not start another cell)
        self._closing.set()  # a job running on another thread stops within a poll and cleans up on the device
        with self._lock:
            for runner in list(self._residents):
                runner.close()  # the watchdog kills each at once; their folders go while the link is up
            self.store.lock.release()
            self.conn.drop()
            if self.forward is not None:
                self.forward.close()  # the USB forward goes with the session, however it ended
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
        remote, size = self.store.blob_path(path)  # hashing needs no lock: other targets go on meanwhile
        with self._device_lock, self._lock:
            self.acquire()
            self.store.upload(path, remote, size)
        return remote

    def acquire(self) -> None:
        """Hold the device for this process (flock on workdir/device.lock) until close(): one job per
        device across processes; another run meanwhile waits, or fails with `--no-wait`."""
        with self._device_lock, self._lock:
            self.store.lock.acquire(self.name, self.python, cancelled=self._closing.is_set)

    def tools(self) -> tuple[str, str]:
        """The runner and the watchdog on the device (deployed like any other file)."""
        with self._device_lock, self._lock:
            if self._tools is None:
                self._tools = (self.deploy(RUNNER_PATH), self.deploy(WATCHDOG_PATH))
            return self._tools

    # ------------------------------------------------------------------------ probe

    def probe(self) -> dict[str, Any]:
        with self._device_lock, self._lock:
            runner, _ = self.tools()
            code, out = self.exec(f"{q(self.python)} -c {q(_PROBE)} {q(runner)} {q(self.workdir)}", timeout=60)
            if code != 0:
                raise TargetError(f"target {self.name}: cannot run {self.python} on the device ({last_line(out)}); "
                                  f"set `python` in the targets file or run `edge-harness targets setup {self.name}`")
            try:
                return dict(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                raise TargetError(f"target {self.name}: the probe printed no JSON: {last_line(out)}") from None

    # -------------------------------------------------------------------------- run

    def run(self, job: Job) -> RawResult:
        """Run one job; a lost link, a timeout or a device error gives a failed result, never an exception."""
        if getattr(self, "_closed", False):
            return RawResult.failed(f"target {self.name} was closed (interrupted run); job not started")
        with self._device_lock, self._lock:
            try:
                self.acquire()
                return self._run(job)
            except DeviceBusy:
                raise  # --no-wait: the run stops in one line instead of failing every cell
            except (paramiko.SSHException, EOFError, OSError) as e:
                self.conn.drop()
                return RawResult.failed(f"lost the link to {self.endpoint.host}: {e or type(e).__name__}")
            except TargetError as e:
                return RawResult.failed(str(e))

    def _put_job(self, job: Job) -> str:
        """Write the job to a new folder on the device; returns the folder."""
        job_dir = f"{self.workdir}/jobs/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.conn.sftp().mkdir(job_dir)
        if job.threads is None:
            job.threads = self.threads
        if job.affinity is None:
            job.affinity = self.affinity
        spec = job.to_runner(job.artifact, job.timing_inputs, job.eval_inputs, f"{job_dir}/out")
        payload = json.dumps(spec).encode()
        self.conn.sftp().putfo(io.BytesIO(payload), f"{job_dir}/job.json")
        self.stats["job_bytes_sent"] += len(payload)
        return job_dir

    def _command(self, job: Job, job_dir: str, deadline_s: float, serve: bool = False) -> str:
        """The shell command that runs the job's runner under the watchdog (resident with `serve`)."""
        runner, watchdog = self.tools()
        env = f"env OMP_NUM_THREADS={int(job.threads)} " if job.threads else ""
        mode = "--forward " if serve else ""
        return (f"exec {env}{q(self.python)} -u {q(watchdog)} {mode}{GRACE_S:g} {deadline_s:g} "
                f"{q(job_dir + '/pid')} {q(self.python)} -u {q(runner)} {q(job_dir + '/job.json')}"
                + (" --serve" if serve else ""))

    def _run(self, job: Job) -> RawResult:
        self.tools()
        job_dir = self._put_job(job)
        timeout = float(self.run_timeout_s or job.timeout_s)
        command = self._command(job, job_dir, timeout + 10)
        code, log, failure = self._watch(command, timeout, job_dir)
        if failure:
            return RawResult.failed(failure, exit_code=code, log=log)
        if code == 127 and ("not found" in log or "No such file" in log):
            self.store.remove_tree(job_dir)
            return RawResult.failed(f"{self.python} not found on the device ({last_line(log)}): set `python` in the "
                                    f"targets file, or run `edge-harness targets setup {self.name}`", exit_code=code,
                                    log=log)
        return self._collect(job_dir, code, log)

    def _watch(self, command: str, timeout: float, job_dir: str) -> tuple[int | None, str, str | None]:
        """Run the job, sending heartbeats; returns (exit status, log, why it failed or None)."""
        transport = self.connection().get_transport()
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
                return code, text, f"runner killed on the device: {last_line(text)}"
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
        if self.conn.is_open():
            try:
                self._kill_job(job_dir)
                return
            except Exception:  # the link went down meanwhile: the watchdog still stops the runner
                pass
        self.conn.drop()
        self._stale.append(job_dir)  # the watchdog stops it within GRACE_S; cleaned again on reconnect

    def _kill_job(self, job_dir: str) -> None:
        try:
            with self.conn.sftp().open(f"{job_dir}/pid") as f:
                pid = int(f.read().decode().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 1:
            # Only if that process group is still this job's runner (PIDs are reused).
            self.exec(f"grep -qF -- {q(job_dir)} /proc/{pid}/cmdline 2>/dev/null && kill -KILL -- -{pid}; true")
        if not self.keep_files:
            self.store.remove_tree(job_dir)

    def _collect(self, job_dir: str, code: int | None, log: str) -> RawResult:
        local = Path(tempfile.mkdtemp(dir=self.local_tmp()))
        try:
            self.store.fetch(f"{job_dir}/out", RESULT_FILES, local)
            result = read_result(local, code, log)
            if not self.keep_files:
                self.store.remove_tree(job_dir)
            return result
        except (paramiko.SSHException, EOFError, OSError, TargetError) as e:
            self.conn.drop()
            return RawResult.failed(f"could not fetch the results from {self.endpoint.host}: {e}", log=log)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    # ------------------------------------------------------------- resident runners

    resident = True  # keeps models loaded between timed blocks (targets/ssh/resident.py)

    def open_resident(self, job: Job, lifetime_s: float | None = None) -> SSHResidentRunner:
        """Start a resident runner for `job` under the watchdog (load, first inference, evaluation); time it
        with `.block()`. The watchdog kills it after `lifetime_s` (the whole race; default the job's timeout)."""
        if getattr(self, "_closed", False):
            raise TargetError(f"target {self.name} was closed (interrupted run); runner not started")
        with self._device_lock:
            with self._lock:
                try:
                    self.acquire()
                    job_dir = self._put_job(job)
                    command = self._command(job, job_dir, float(lifetime_s or job.timeout_s) + 10, serve=True)
                    chan = self.connection().get_transport().open_session(  # type: ignore[union-attr]
                        timeout=self.endpoint.timeout_s)
                    chan.exec_command(command)
                except (paramiko.SSHException, EOFError, OSError) as e:
                    self.conn.drop()
                    raise TargetError(f"target {self.name}: lost the link to {self.endpoint.host}: "
                                      f"{e or type(e).__name__}") from None
                out = Path(tempfile.mkdtemp(dir=self.local_tmp()))
            runner = SSHResidentRunner(self.store, self.end_job, chan, job_dir, out,
                                       float(self.run_timeout_s or job.timeout_s),
                                       self._device_lock, HEARTBEAT_S, on_close=self._residents.discard)
            if runner.initial.ok:  # a runner that failed to start has closed itself
                self._residents.add(runner)
            return runner

    def end_job(self, job_dir: str, running: bool) -> None:
        """After a resident runner: kill it by PID if it may still run, and remove its folder (best effort)."""
        with self._lock:
            if not self.conn.is_open():  # a lost link (or a closed target): the watchdog stops the runner
                self._stale.append(job_dir)  # and its folder goes on the next connection, if there is one
                return
            try:
                if running:
                    self._kill_job(job_dir)
                elif not self.keep_files:
                    self.store.remove_tree(job_dir)
            except (TargetError, paramiko.SSHException, EOFError, OSError):
                self._stale.append(job_dir)  # cleaned on the next connection
