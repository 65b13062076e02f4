"""The local CPU target: each job runs the runner in a fresh subprocess, so cold start is real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from targets.base import RUNNER_PATH, Job, RawResult, Target, register_target
from targets.device_lock import DeviceBusy, LocalDeviceLock
from targets.errors import TargetError
from targets.resident import ResidentRunner
from targets.result_files import read_result


@register_target("local")
class LocalTarget(Target):
    """Runs on this machine with a chosen Python (default: the harness's own)."""

    def __init__(self, name: str = "local-cpu", threads: int | None = None, python: str | None = None,
                 workdir: str | None = None, **settings: Any) -> None:
        super().__init__(name, threads, **settings)
        self.python = python or sys.executable
        if python and not shutil.which(python) and not Path(python).is_file():
            raise TargetError(f"target {name}: python {python!r} not found")
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix="edge-harness-", dir=workdir))
        except OSError as e:
            raise TargetError(f"target {name}: cannot create a job folder in {workdir or tempfile.gettempdir()} "
                              f"({e.strerror or e}); set `workdir` to a writable folder with free space") from None
        self._count = 0
        self._running: set[subprocess.Popen] = set()
        self._guard = threading.Lock()
        self._device = LocalDeviceLock(self.kind)  # this machine, shared by every local target of its kind
        self._active = 0  # jobs and resident runners using the machine now
        self._pinned = False  # held for a whole measuring loop (acquire), not job by job

    def acquire(self) -> None:
        """Hold this machine for this process until close() (a lock file under the user's runtime folder):
        one job at a time across harness runs; another run meanwhile waits, or fails with `--no-wait`.

        A measuring loop calls this once for the whole run. Without it, each job (and each resident
        runner) holds the machine only while it runs, so a target left open holds nothing."""
        self._device.acquire(self.name, cancelled=lambda: getattr(self, "_closed", False))
        self._pinned = True

    def _hold(self) -> None:
        self._device.acquire(self.name, cancelled=lambda: getattr(self, "_closed", False))
        with self._guard:
            self._active += 1

    def _let_go(self) -> None:
        with self._guard:
            self._active -= 1
            idle = self._active == 0 and not self._pinned
        if idle:
            self._device.release()

    def probe(self) -> dict[str, Any]:
        try:
            out = subprocess.run([self.python, "-u", str(RUNNER_PATH), "--probe"], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TargetError(f"target {self.name}: cannot run {self.python}: {e}") from None
        if out.returncode != 0:
            raise TargetError(f"target {self.name}: probe failed: {out.stderr.strip()[-300:]}")
        try:  # the last line: a Python whose start-up prints (sitecustomize, a banner) prints before it
            return dict(json.loads(out.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError, TypeError):
            raise TargetError(f"target {self.name}: the probe printed no JSON: {out.stdout.strip()[-200:]!r}") from None

    def env(self, threads: int | None = None) -> dict[str, str]:
        """The runner's environment: OMP_NUM_THREADS follows the job's threads, as on SSH targets."""
        env = dict(os.environ)
        threads = threads or self.threads
        if threads:
            # Runtimes read these too; keeps numpy/OpenMP from spawning extra threads.
            env["OMP_NUM_THREADS"] = str(threads)
        return env

    def run(self, job: Job) -> RawResult:
        try:
            self._hold()
        except DeviceBusy:
            raise  # --no-wait: the run stops in one line instead of failing every cell
        except TargetError as e:
            return RawResult.failed(str(e))
        try:
            return self._run(job)
        finally:
            self._let_go()

    def _run(self, job: Job) -> RawResult:
        with self._guard:
            if getattr(self, "_closed", False):
                return RawResult.failed(f"target {self.name} was closed (interrupted run); job not started")
            self._count += 1
            out_dir = self._tmp / f"job-{self._count:04d}"
        if job.threads is None:
            job.threads = self.threads
        spec = job.to_runner(job.artifact, job.timing_inputs, job.eval_inputs, str(out_dir))
        try:
            out_dir.mkdir(parents=True)
            (out_dir / "job.json").write_text(json.dumps(spec))
        except OSError as e:
            return RawResult.failed(f"cannot write the job to {out_dir} ({e.strerror or e}); free space there or "
                                    "set the target's `workdir` to a writable folder")
        cmd = [self.python, "-u", str(RUNNER_PATH), str(out_dir / "job.json")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env(job.threads), start_new_session=True)
        with self._guard:
            self._running.add(proc)
            closed = getattr(self, "_closed", False)
        if closed:  # close() ran while this job was starting
            _kill_group(proc)
            proc.wait()
            with self._guard:
                self._running.discard(proc)
            return RawResult.failed(f"target {self.name} was closed (interrupted run); job stopped")
        try:
            log, _ = proc.communicate(timeout=job.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log, _ = proc.communicate()
            return RawResult.failed(f"timed out after {job.timeout_s:g} s (runner killed)", log=log or "")
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            with self._guard:
                self._running.discard(proc)
        return read_result(out_dir, proc.returncode, log or "")

    resident = True  # keeps models loaded between timed blocks (targets.resident)

    def open_resident(self, job: Job, lifetime_s: float | None = None) -> ResidentRunner:
        """Start a resident runner for `job` (load, first inference, evaluation); time it with `.block()`.

        The machine stays held until the runner is closed. No lifetime is enforced here: the runner
        ends when its stdin closes, which the host's exit does too."""
        self._hold()
        try:
            return self._open_resident(job)
        except BaseException:
            self._let_go()
            raise

    def _open_resident(self, job: Job) -> ResidentRunner:
        with self._guard:
            if getattr(self, "_closed", False):
                raise TargetError(f"target {self.name} was closed (interrupted run); runner not started")
            self._count += 1
            out_dir = self._tmp / f"job-{self._count:04d}"
        if job.threads is None:
            job.threads = self.threads
        try:
            out_dir.mkdir(parents=True)
            (out_dir / "job.json").write_text(json.dumps(job.to_runner(job.artifact, job.timing_inputs,
                                                                       job.eval_inputs, str(out_dir))))
        except OSError as e:
            raise TargetError(f"cannot write the job to {out_dir} ({e.strerror or e}); free space there or set "
                              "the target's `workdir` to a writable folder") from None
        cmd = [self.python, "-u", str(RUNNER_PATH), str(out_dir / "job.json"), "--serve"]
        runner = ResidentRunner(cmd, self.env(job.threads), out_dir, read_result, job.timeout_s, on_close=self._let_go)
        with self._guard:
            self._running.add(runner.proc)  # close() (an interrupted run) kills it like a job's runner
        return runner

    def close(self) -> None:
        # A run interrupted on another thread (Ctrl-C, SIGTERM) leaves no runner behind, and starts none.
        with self._guard:
            self._closed = True
            running = list(self._running)
        for proc in running:
            _kill_group(proc)
        self._device.release()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone
