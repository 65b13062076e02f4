"""A real labgrid lab for tests: a coordinator and one exporter on loopback, places made up front.

Each board is a NetworkService resource pointing at a test sshd; its place (same name) carries the
given tags. Everything lives in a temporary folder; the coordinator listens on a free loopback port.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sshd import free_port, wait_port

BIN = Path(sys.executable).parent


def skip_reason() -> str | None:
    """Why a labgrid lab cannot run here (None when it can)."""
    if importlib.util.find_spec("labgrid") is None:
        return "labgrid is not installed (pip install -e '.[lab]')"
    if not (BIN / "labgrid-coordinator").is_file():
        return f"no labgrid-coordinator beside {sys.executable}"
    return None


@dataclass
class Board:
    """One place: its name, tags, and where its sshd listens."""

    place: str
    host: str
    port: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Lab:
    address: str
    folder: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def client(self, *args: str, user: str | None = None, check: bool = True) -> str:
        """Run labgrid-client against this lab (as `user` if given); its stdout."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LG_")}
        if user:
            env["LG_USERNAME"] = user
        out = subprocess.run([str(BIN / "labgrid-client"), "-x", self.address, *args], capture_output=True,
                             text=True, env=env, timeout=30)
        if check and out.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def log(self) -> str:
        return "".join((self.folder / n).read_text() for n in ("coordinator.log", "exporter.log")
                       if (self.folder / n).is_file())

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _yaml(obj: object) -> str:
    return json.dumps(obj, indent=1)  # JSON is YAML: no PyYAML writer needed


def start_lab(folder: Path, boards: list[Board]) -> Lab:
    """Start a coordinator with `boards`' places and an exporter of their NetworkService resources."""
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (folder / "places.yaml").write_text(_yaml({b.place: {
        "aliases": [], "comment": "", "tags": b.tags, "created": now, "changed": now,
        "matches": [{"exporter": "lab", "group": b.place, "cls": "*", "name": None, "rename": None}],
    } for b in boards}))
    (folder / "exporter.yaml").write_text(_yaml({b.place: {"NetworkService": {
        "address": b.host, "port": b.port, "username": "root"}} for b in boards}))
    address = f"127.0.0.1:{free_port()}"
    lab = Lab(address=address, folder=folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LG_")}

    def spawn(name: str, *cmd: str) -> None:
        with open(folder / f"{name}.log", "ab") as log:
            lab.procs.append(subprocess.Popen(list(cmd), cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env))
    try:
        spawn("coordinator", str(BIN / "labgrid-coordinator"), "--listen", address)
        wait_port("127.0.0.1", int(address.rsplit(":", 1)[1]), timeout=20)
        spawn("exporter", str(BIN / "labgrid-exporter"), "--coordinator", address, "--name", "lab",
              str(folder / "exporter.yaml"))
        deadline = time.monotonic() + 30
        while lab.client("resources", check=False).count("NetworkService") < len(boards):
            if time.monotonic() > deadline or any(p.poll() is not None for p in lab.procs):
                raise RuntimeError(f"the lab did not come up: {lab.log()[-800:]}")
            time.sleep(0.2)
    except BaseException:
        lab.stop()
        raise
    return lab
