"""The lab target (kind "labgrid"): a board from a shared labgrid lab, measured through the SSH target.

On first use (probe, deploy or run) it reserves a place with the wanted tags, waiting with a progress
line while every matching place is taken (up to `reserve_timeout_s`), acquires it, reads the board's
address from the place's NetworkService resource and hands the work to an `SSHTarget`. `close()`
releases the place and cancels the reservation: at the end of a run, on failure, and on SIGTERM (the
harness turns it into KeyboardInterrupt and closes every target). The place stays held until then,
so the boards of one group never measure the same place twice in a run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from targets.base import Job, RawResult, Target, register_target
from targets.errors import TargetError, TargetSettingError
from targets.labgrid.claims import Claim, ClaimBook, free_stale
from targets.labgrid.client import LabClient, Place
from targets.ssh import GRACE_S, SSHTarget

FIRST_NOTE_S = 1.0  # the first "waiting" line comes this soon, so a user sees at once why nothing moves
NOTE_EVERY_S = 10.0
_TAG_KEY = re.compile(r"^[a-z][a-z0-9_]+$")  # labgrid's own rule for tag keys
_TAG_VALUE = re.compile(r"^[^\s=,]+$")
COMBINED = ("kept apart: each board is its own target and report (NAME-1, NAME-2, ...); cells are compared "
            "only within one board, and the summary lists the boards side by side")

_SSH_KEYS = ("user", "key", "known_hosts", "password_env", "connect_timeout_s", "run_timeout_s", "keep_files",
             "ssh_config")


@register_target("labgrid")
class LabgridTarget(Target):
    """Any free place with `tags` (or the place named `place`) of a labgrid coordinator, over SSH."""

    SETTINGS = {"coordinator": (str,), "place": (str,), "tags": (dict,), "count": (int,),
                "reserve_timeout_s": (int, float), "prio": (int, float), "labgrid_client": (str,),
                "user": (str,), "key": (str,), "known_hosts": (str,), "password_env": (str,),
                "connect_timeout_s": (int, float), "run_timeout_s": (int, float), "keep_files": (bool,),
                "ssh_config": (str,)}
    REQUIRED = ("coordinator",)

    @classmethod
    def replicas(cls, name: str, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """`count = N`: N boards of these tags at once, as targets NAME-1 .. NAME-N (kept apart)."""
        n = spec.get("count", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n <= 1:
            return {name: spec}
        return {f"{name}-{i}": {**spec, "group": name, "board": i} for i in range(1, n + 1)}

    def __init__(self, name: str, coordinator: str, place: str | None = None, tags: dict[str, Any] | None = None,
                 count: int = 1, reserve_timeout_s: float = 600.0, prio: float = 0.0,
                 labgrid_client: str | None = None, python: str = "python3", workdir: str = "/tmp/edge-harness",
                 threads: int | None = None, affinity: list[int] | None = None, group: str | None = None,
                 board: int | None = None, **settings: Any) -> None:
        ssh = {k: settings.pop(k) for k in _SSH_KEYS if k in settings}
        super().__init__(name, threads, **settings)
        self.filters = self._filters(place, tags)
        if not isinstance(count, int) or count < 1 or (count > 1 and place):
            raise TargetSettingError(f"target {name}: count must be a positive integer, and needs `tags` "
                                     f"(one named place is one board), got count = {count!r}")
        if reserve_timeout_s < 0:
            raise TargetSettingError(f"target {name}: reserve_timeout_s must be >= 0, got {reserve_timeout_s!r}")
        if not workdir.startswith("/"):
            raise TargetSettingError(f"target {name}: workdir must be an absolute path on the board, got {workdir!r}")
        self.coordinator, self.count, self.prio = coordinator, count, float(prio)
        self.reserve_timeout_s = float(reserve_timeout_s)
        self.python, self.workdir, self.affinity, self.ssh_settings = python, workdir, affinity, ssh
        self.client = LabClient(coordinator, labgrid_client)
        self.book = ClaimBook(coordinator)
        self.say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
        self.lab: dict[str, Any] = {"coordinator": coordinator, "filters": dict(self.filters), "place": None,
                                    "tags": None, "reservation": None}
        if group is not None:
            self.lab.update(group=group, board=f"{board} of {count}", combined=COMBINED)
        self._ssh: SSHTarget | None = None
        self._claim: Claim | None = None
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._closed = False
        self._failed: TargetError | None = None
        self._described: list[dict[str, Any]] = []

    def _filters(self, place: str | None, tags: dict[str, Any] | None) -> dict[str, str]:
        if bool(place) == bool(tags):
            raise TargetSettingError(f"target {self.name}: set either `place` (one place by name) or `tags` "
                                     '(any free place with them, e.g. tags = { board = "rpi4" })')
        filters = {"name": str(place)} if place else {str(k): v for k, v in (tags or {}).items()}
        for k, v in filters.items():
            if not _TAG_KEY.match(k) or not isinstance(v, str) or not _TAG_VALUE.match(v):
                raise TargetSettingError(f"target {self.name}: tag {k} = {v!r} is not valid for labgrid (keys "
                                         "are lower-case words, values strings without spaces, '=' or ',')")
        return filters

    @property
    def wanted(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.filters.items())

    @property
    def host(self) -> str:
        return self._ssh.host if self._ssh else f"labgrid {self.coordinator} {self.wanted}"

    def describe(self) -> dict[str, Any]:
        # The place is known only once reserved (on the first probe), after the harness took this dict:
        # `labgrid` is the live record, and host/transfer are filled into every dict handed out here.
        d = {**super().describe(), "python": self.python, "workdir": self.workdir, "labgrid": self.lab}
        if self._ssh is not None:
            d.update(host=self._ssh.host, workdir=self._ssh.workdir, transfer=self._ssh.stats)
        self._described.append(d)
        return d

    # ------------------------------------------------------------------ the board

    def board(self, timeout_s: float | None = None) -> SSHTarget:
        """The SSH target of the reserved, acquired board (reserved and acquired on first use)."""
        with self._lock:
            if self._closed:
                raise TargetError(f"target {self.name} was closed (interrupted run)")
            if self._failed is not None:
                raise self._failed  # once per run: later cells do not wait out the timeout again
            if self._ssh is None:
                try:
                    self._take(self.reserve_timeout_s if timeout_s is None else timeout_s)
                except TargetError as e:
                    self._free()
                    self._failed = e if timeout_s is None else None
                    raise
                except BaseException:
                    self._free()
                    raise
            assert self._ssh is not None
            return self._ssh

    def _take(self, timeout_s: float) -> None:
        t0 = time.monotonic()
        free_stale(self.book, self.client, self.name, self.say, grace_s=GRACE_S + 1)
        proc, token = self.client.start_reserve(self.filters, self.prio)
        self._claim = self.book.add(token)
        t_reserved = time.monotonic()
        self._wait(proc, token, timeout_s, t_reserved)
        t_allocated = time.monotonic()
        info, service = self.client.acquire(token, self._acquired)
        place = info.name
        if service is None:
            raise TargetSettingError(f"target {self.name}: place {place} has no NetworkService resource (add one "
                                     "with the board's address, username and port to its exporter config)")
        settings = {k: v for k, v in self.ssh_settings.items() if k != "user"}
        ssh = SSHTarget(self.name, host=service.address, port=service.port,
                        user=self.ssh_settings.get("user") or service.username, python=self.python,
                        workdir=self.workdir.replace("{place}", place), threads=self.threads,
                        affinity=self.affinity, **settings)
        self._ssh = ssh
        self.lab.update(place=place, tags=info.tags, host=ssh.host, reservation={
            "token": token, "acquired_at": time.time(), "waited_s": round(t_allocated - t_reserved, 3),
            "reserve_acquire_s": round(time.monotonic() - t0 - (t_allocated - t_reserved), 3)})
        for d in self._described:
            d.update(host=ssh.host, workdir=ssh.workdir, transfer=ssh.stats)
        self.say(f"{self.name}: acquired place {place} ({self.wanted}, reservation {token}) -> {ssh.host}")

    def _wait(self, proc: subprocess.Popen[bytes], token: str, timeout_s: float, start: float) -> None:
        """Until `reserve --wait` says a place is allocated; progress lines while all matching places are taken."""
        next_note = start + FIRST_NOTE_S
        try:
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if self._closing.is_set():
                    raise TargetError(f"target {self.name}: interrupted while waiting for a place ({self.wanted})")
                if now - start >= timeout_s:
                    raise TargetError(self._busy(timeout_s))
                if now >= next_note:
                    self._note_waiting(now - start, timeout_s)
                    next_note = now + NOTE_EVERY_S
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            raise self.client.error("reserve", err)

    def _matching(self) -> list[Place]:
        places = self.client.places()
        found = [p for p in places if p.matches(self.filters)]
        if not found:
            known = ", ".join(f"{p.name} [{' '.join(f'{k}={v}' for k, v in p.tags.items())}]" for p in places)
            raise TargetSettingError(f"target {self.name}: no place on {self.coordinator} matches {self.wanted} "
                                     f"(places: {known or 'none'})")
        if len(found) < self.count:
            raise TargetSettingError(f"target {self.name}: count = {self.count} but only {len(found)} place(s) "
                                     f"match {self.wanted}: {', '.join(p.name for p in found)}")
        return found

    def _note_waiting(self, waited: float, timeout_s: float) -> None:
        found = self._matching()
        held = "; ".join(f"{p.name}: {p.state()}" for p in found)
        self.say(f"{self.name}: waiting for a place with {self.wanted}, all {len(found)} taken ({held}); "
                 f"{waited:.0f} s of {timeout_s:g} s")

    def _busy(self, timeout_s: float) -> str:
        found = self._matching()
        held = [p for p in found if p.acquired]
        msg = (f"target {self.name}: no place with {self.wanted} came free within {timeout_s:g} s ("
               + "; ".join(f"{p.name}: {p.state()}" for p in found) + "); try later or raise reserve_timeout_s")
        if held:
            msg += (f"; if a holder is gone, free its place with "
                    f"`{self.client.hint('-p', held[0].name, 'release', '--kick')}`")
        return msg

    def _free(self) -> None:
        """Release the place and cancel the reservation (what is held of them); never raises."""
        claim, self._claim = self._claim, None
        if claim is None:
            return
        try:
            errors = self.client.release_and_cancel(claim.place, claim.token)
        except TargetError as e:
            errors = [str(e)]
        if errors:
            self.say(f"{self.name}: could not release place {claim.place or '?'} ({errors[0]}); free it with "
                     f"`{self.client.hint('-p', claim.place or '+' + claim.token, 'release')}`")
        else:
            self.book.drop(claim)

    def _acquired(self, place: str) -> None:
        if self._claim is not None:
            self._claim.place = place  # from now on close() (or the next run, after a SIGKILL) releases it
            self.book.save(self._claim)

    def _running(self, flag: bool) -> None:
        if self._claim is not None:
            self._claim.running = flag
            self.book.save(self._claim)

    # ------------------------------------------------------------------ the target interface

    def probe(self) -> dict[str, Any]:
        return self.board().probe()

    def probe_now(self, max_wait_s: float = 5.0) -> dict[str, Any] | None:
        """Probe a board only if a matching place is free now (`targets check` must not queue); else None."""
        if not any(p.free for p in self._matching()):
            return None
        try:
            return self.board(timeout_s=max_wait_s).probe()
        except TargetError as e:
            if "came free within" in str(e):
                return None  # taken meanwhile
            raise

    def survey(self) -> list[str]:
        """The places matching this target's tags and who holds them, one line each."""
        return [f"{p.name}: {p.state()}" for p in self._matching()]

    def deploy(self, path: Path) -> str:
        return self.board().deploy(path)

    @property
    def resident(self) -> bool:  # type: ignore[override]
        return True  # a board is an SSH device: resident runners go over the place's SSH service

    def open_resident(self, job: Job, lifetime_s: float | None = None) -> Any:
        """A resident runner on the board (reserved first if need be), as SSHTarget.open_resident."""
        return self.board().open_resident(job, lifetime_s)

    def run(self, job: Job) -> RawResult:
        try:
            ssh = self.board()
        except TargetError as e:
            return RawResult.failed(str(e))
        self._running(True)
        try:
            return ssh.run(job)
        finally:
            self._running(False)

    def close(self) -> None:
        self._closing.set()  # a reservation wait on another thread stops within a poll
        ssh = self._ssh
        if ssh is not None:
            ssh.close()  # kills a running job on the board first: the place is released with nothing on it
        with self._lock:
            self._closed = True
            self._free()
