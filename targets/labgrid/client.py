"""labgrid's `labgrid-client` command line, as the lab target needs it: places, reserve, acquire, show, release.

The CLI (not labgrid's in-process Python client) is used on purpose: it is labgrid's documented, stable
interface, while `labgrid.remote.client.ClientSession` is internal asyncio + gRPC code that changed
wholesale in 24.0 and wants an event loop in the calling thread. Each call here is a child process in
its own session: the harness's threads, its SIGTERM-as-KeyboardInterrupt and a Ctrl-C in the terminal
never leave a half-done gRPC call behind, and a `reserve --wait` child keeps the reservation alive
(labgrid drops a waiting reservation that is not polled for 60 s) without any code of ours running.
The price is about 0.4 s per call (interpreter start and gRPC connect).
"""

from __future__ import annotations

import ast
import getpass
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent
from typing import Any, Callable

from targets.errors import TargetError

# Variables that make labgrid-client act on an environment file or a place other than the one named.
_DROPPED_ENV = ("LG_ENV", "LG_PLACE", "PLACE", "LG_TOKEN", "LG_STATE", "STATE", "LG_INITIAL_STATE", "LG_COORDINATOR")
_PLACE = re.compile(r"^Place '(.+)':$")
_RESOURCE = re.compile(r"^(?:Acquired|Matching) resource '(.+?)' \((.+)\):$")


@dataclass
class Place:
    """A labgrid place as `labgrid-client show` prints it."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    acquired: str | None = None  # "host/user"
    reservation: str | None = None
    changed: str | None = None
    comment: str = ""

    def matches(self, filters: dict[str, str]) -> bool:
        """Whether a reservation with these filters may be given this place (labgrid also matches `name`)."""
        tags = {**self.tags, "name": self.name}
        return all(tags.get(k) == v for k, v in filters.items())

    @property
    def free(self) -> bool:
        return self.acquired is None and self.reservation is None

    def state(self) -> str:
        """`free`, `reserved`, or who holds it since when, in a few words."""
        if self.acquired:
            host, _, user = self.acquired.partition("/")
            return f"held by {user}@{host}" + (f" since {self.changed[5:16]}" if self.changed else "")
        return "reserved (allocated, not acquired yet)" if self.reservation else "free"


@dataclass
class NetworkService:
    """Where the board's sshd listens, from the place's NetworkService resource."""

    address: str
    port: int = 22
    username: str | None = None


def parse_places(text: str) -> list[Place]:
    """The `Place 'x':` blocks of `labgrid-client -v places` or `show`."""
    places: list[Place] = []
    cur: Place | None = None
    for line in text.splitlines():
        m = _PLACE.match(line)
        if m:
            cur = Place(m.group(1))
            places.append(cur)
            continue
        if not line.startswith("  "):
            cur = None  # a resource section or anything else ends the place block
        if cur is None or line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key == "tags":
            cur.tags = dict(kv.split("=", 1) for kv in value.split(", ") if "=" in kv)
        elif key == "acquired":
            cur.acquired = None if value in ("", "None") else value
        elif key in ("reservation", "changed", "comment"):
            setattr(cur, key, value)
    return places


def parse_network_service(text: str) -> NetworkService | None:
    """The first NetworkService among the resources `labgrid-client show` lists for a place."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _RESOURCE.match(line)
        if not m or m.group(2).split("/")[2:3] != ["NetworkService"]:
            continue
        body = []
        for more in lines[i + 1:]:
            if not more.startswith("  "):
                break
            body.append(more)
        try:
            params: dict[str, Any] = ast.literal_eval(dedent("\n".join(body))).get("params", {})
        except (ValueError, SyntaxError, AttributeError):
            continue
        if params.get("address"):
            return NetworkService(str(params["address"]), int(params.get("port") or 22), params.get("username"))
    return None


def find_client(explicit: str | None = None) -> str:
    """labgrid-client: the given path, the one beside this interpreter (a venv not on PATH), or PATH's."""
    if explicit:
        return str(Path(explicit).expanduser())
    beside = Path(sys.executable).with_name("labgrid-client")
    return str(beside) if beside.is_file() else (shutil.which("labgrid-client") or "labgrid-client")


class LabClient:
    """One coordinator, spoken to through `labgrid-client -x ADDRESS ...`."""

    def __init__(self, coordinator: str, exe: str | None = None, timeout_s: float = 30.0) -> None:
        self.coordinator = coordinator
        self.exe = find_client(exe)
        self.timeout_s = timeout_s
        self.env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        self.env["PYTHONUNBUFFERED"] = "1"  # the reservation token must reach us before `--wait` ends

    @property
    def identity(self) -> str:
        """Who labgrid says acquired a place from here: `host/user`, as labgrid-client computes it."""
        return f"{os.environ.get('LG_HOSTNAME') or socket.gethostname()}/" \
               f"{os.environ.get('LG_USERNAME') or getpass.getuser()}"

    def hint(self, *args: str) -> str:
        """A labgrid-client command line for a message, addressed to this coordinator."""
        return " ".join(["labgrid-client", "-x", self.coordinator, *args])

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen([self.exe, "-x", self.coordinator, *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=self.env,
                                    start_new_session=True)
        except OSError as e:
            raise TargetError(f"cannot run labgrid-client ({e}): pip install labgrid, or set `labgrid_client` "
                              "to its path") from None

    def finish(self, proc: subprocess.Popen[bytes], what: str, timeout: float | None = None) -> str:
        """Wait for a started call; its stdout, or a one-line TargetError with what labgrid said."""
        try:
            out, err = proc.communicate(timeout=timeout or self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TargetError(f"labgrid coordinator {self.coordinator}: `{what}` got no answer in "
                              f"{timeout or self.timeout_s:g} s") from None
        if proc.returncode != 0:
            raise self.error(what, out + err)
        return out.decode(errors="replace")

    def error(self, what: str, output: bytes) -> TargetError:
        text = output.decode(errors="replace")
        said = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if "Could not connect to coordinator" in text or "coordinator is unavailable" in text:
            return TargetError(f"labgrid coordinator {self.coordinator} is not reachable: start it "
                               f"(`labgrid-coordinator --listen {self.coordinator}`) or fix `coordinator`")
        return TargetError(f"labgrid-client {what}: {said[-1] if said else 'failed'}")

    def call(self, *args: str) -> str:
        return self.finish(self.start(*args), " ".join(args))

    def places(self) -> list[Place]:
        return parse_places(self.call("-v", "places"))

    def start_reserve(self, filters: dict[str, str], prio: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
        """Create a reservation; returns the `reserve --wait` child (it ends once a place is allocated) and
        the reservation's token."""
        proc = self.start("reserve", "--wait", "--shell", "--prio", f"{prio:g}",
                          *(f"{k}={v}" for k, v in filters.items()))
        assert proc.stdout is not None
        deadline = time.monotonic() + self.timeout_s
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        m = re.search(rb"LG_TOKEN=(\w+)", line)
        if m:
            return proc, m.group(1).decode()
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
        raise self.error("reserve", line + err)

    def acquire(self, token: str, acquired: Callable[[str], None]) -> tuple[Place, NetworkService | None]:
        """Acquire the place allocated to reservation `token` (`acquired` hears its name at once) and read
        its tags and NetworkService; `show` runs alongside, as it lists an allocated place's resources."""
        shown = self.start("-p", f"+{token}", "show")
        try:
            out = self.call("-p", f"+{token}", "acquire")
            m = re.search(r"acquired place (\S+)", out)
            if not m:
                raise TargetError(f"labgrid-client acquire printed no place name: {out.strip()[-200:]}")
            acquired(m.group(1))
        except BaseException:
            shown.kill()
            shown.communicate()
            raise
        text = self.finish(shown, "show")
        service = parse_network_service(text)
        if service is None:  # `show` may have run before the coordinator had the place allocated: ask again
            text = self.call("-p", m.group(1), "show")
            service = parse_network_service(text)
        found = [p for p in parse_places(text) if p.name == m.group(1)]
        return (found[0] if found else Place(m.group(1))), service

    def release_and_cancel(self, place: str | None, token: str | None) -> list[str]:
        """Release `place` and cancel reservation `token` (both at once); the errors, one line each."""
        calls = []
        if place:
            calls.append((f"-p {place} release", self.start("-p", place, "release")))
        if token:
            calls.append((f"cancel-reservation {token}", self.start("cancel-reservation", token)))
        errors = []
        for what, proc in calls:
            try:
                self.finish(proc, what)
            except TargetError as e:
                if "is not acquired" not in str(e) and "does not exist" not in str(e):
                    errors.append(str(e))
        return errors
