"""This host's claims on lab places, kept on disk so the next run can clean up after a killed one.

labgrid never lets go of an acquired place by itself (an acquired reservation does not expire), so a
run killed with SIGKILL would leave its board taken for good. Each run writes one small JSON file per
reservation: the token, the place once acquired, its process id and start time, and whether a job is
running on the board. A later run on this host finds claims whose process is gone and frees them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from targets.labgrid.client import LabClient


def default_folder() -> Path:
    """Beside the harness's other caches (`EDGE_HARNESS_CACHE`, else ~/.cache/edge-harness)."""
    root = os.environ.get("EDGE_HARNESS_CACHE") or Path.home() / ".cache" / "edge-harness"
    return Path(root).expanduser() / "labgrid"


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc, clock ticks since boot): a PID plus this names one
    process even after the PID is reused. None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    now = process_start(pid)
    return start is None or now is None or now == start


@dataclass
class Claim:
    """One reservation of this host, and the place it acquired."""

    coordinator: str
    token: str
    pid: int
    pid_start: str | None
    place: str | None = None
    running: bool = False  # a job was running on the board when this was last written
    created: float = 0.0


class ClaimBook:
    """The claim files of one coordinator in `folder`."""

    def __init__(self, coordinator: str, folder: Path | None = None) -> None:
        self.coordinator = coordinator
        self.folder = folder or default_folder()
        self.prefix = hashlib.sha256(coordinator.encode()).hexdigest()[:10]

    def _path(self, token: str) -> Path:
        return self.folder / f"{self.prefix}-{token}.json"

    def add(self, token: str) -> Claim:
        pid = os.getpid()
        claim = Claim(self.coordinator, token, pid, process_start(pid), created=time.time())
        self.save(claim)
        return claim

    def save(self, claim: Claim) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self._path(claim.token).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(claim)))
            tmp.replace(self._path(claim.token))
        except OSError:
            pass  # without the file only the clean-up after a SIGKILL is lost; the run itself goes on

    def drop(self, claim: Claim) -> None:
        self._path(claim.token).unlink(missing_ok=True)

    @contextmanager
    def cleaning(self) -> Iterator[None]:
        """One clean-up at a time on this host (threads and processes alike): one that read the places
        before another freed and re-took a place must not release it again."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{self.prefix}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def stale(self) -> list[Claim]:
        """Claims on this coordinator whose process is gone."""
        found = []
        for path in sorted(self.folder.glob(f"{self.prefix}-*.json")):
            try:
                claim = Claim(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if claim.coordinator == self.coordinator and not alive(claim.pid, claim.pid_start):
                found.append(claim)
        return found


def free_stale(book: ClaimBook, client: LabClient, name: str, say: Callable[[str], None], grace_s: float) -> None:
    """Free the places and reservations of this host's earlier runs whose process is gone (SIGKILL).

    A place is released only while labgrid still shows it acquired from this host and user under the
    dead run's reservation; anything else (kicked, re-taken, someone else's) is left alone.
    """
    if not book.stale():
        return
    with book.cleaning():
        stale = book.stale()
        places = {p.name: p for p in client.places()} if stale else {}
        for claim in stale:
            p = places.get(claim.place or "")
            ours = p is not None and p.acquired == client.identity and p.reservation in (None, claim.token)
            if ours and claim.running:
                # Its runner may still be on the board: the board's watchdog stops it within grace_s.
                say(f"{name}: place {claim.place} was left by a killed run (pid {claim.pid}); waiting {grace_s:g} s "
                    "for the board's watchdog to stop its runner")
                time.sleep(grace_s)
            if not client.release_and_cancel(claim.place if ours else None, claim.token):
                book.drop(claim)
                if ours:
                    say(f"{name}: released place {claim.place}, left acquired by a run that was killed "
                        f"(pid {claim.pid})")
