"""`edge-harness targets check | setup | trust`: what a device has, what it lacks, and how to fix it."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from harness.config.targets_file import load_targets_file, make_target
from harness.errors import USER_ERRORS, TargetError
from targets.adb import Adb, AdbForward, AdbTarget, adb_advice, cluster_lines, phone_advice, phone_lines
from targets.labgrid import LabgridTarget
from targets.ssh import SSHTarget, install_runtimes, packages_for, presented_host_key, record_host_key
from targets.ssh.trust import describe_recorded, standing
from targets.ssh.usb import TERMUX_SSHD_PORT

MIN_PYTHON = (3, 8)


@dataclass
class Checked:
    """One target's probe, or why it could not be probed."""

    name: str
    kind: str = "?"
    reachable: bool = False
    probe: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    places: list[str] = field(default_factory=list)  # labgrid: the matching places and who holds them

    def advice(self) -> list[str]:
        """What is missing or worth knowing, each with how to fix it."""
        if self.error:
            return [self.error]
        if self.kind == "adb":  # no Python there: the phone's native tools do the timing
            return adb_advice(self.probe, self.name)
        if self.kind == "labgrid" and not self.probe:
            return ["every matching place is taken, so no board was probed (a run waits for one, up to "
                    "reserve_timeout_s)"]
        p, fix = self.probe, self.fix
        out = phone_advice(p, self.name)  # cores to pin, battery heat, Termux's gaps (nothing off a phone)
        py = tuple(int(x) for x in re.findall(r"\d+", p.get("python") or "0")[:2])
        if py < MIN_PYTHON:
            out.append(f"python {p.get('python')} is too old (the runner needs 3.8+): {fix}")
        rt = p.get("runtimes") or {}
        if "numpy" not in rt:
            out.append(f"no numpy: {fix}")
        if "onnxruntime" not in rt:
            out.append(f"no onnxruntime (ONNX models): {fix}")
        if "ai-edge-litert" not in rt and "tflite-runtime" not in rt and not (p.get("android") or {}).get(
                "termux_prefix"):  # Termux has no LiteRT build: phone_advice says what to do instead
            out.append(f"no TFLite runtime (ai-edge-litert): {fix}")
        elif "ai-edge-litert" not in rt:
            out.append(f"only tflite-runtime {rt['tflite-runtime']} (needs numpy < 2, cannot load recent "
                       f"dynamic-range models): prefer ai-edge-litert, {fix}")
        gov = p.get("governor")
        if gov and gov != "performance":
            out.append(f"CPU governor is {gov}: timings follow the clock; for steady figures set `performance` "
                       "(sudo cpupower frequency-set -g performance)")
        free = p.get("workdir_free_mb")
        if free is not None and free < 500:
            out.append(f"only {free:.0f} MB free in {p.get('workdir')}: set `workdir` to a larger disk")
        temps = (p.get("temperature_c") or {}).values()
        if temps and max(temps) >= 70:
            out.append(f"running hot ({max(temps):.0f} C): expect thermal throttling, add cooling")
        return out

    @property
    def fix(self) -> str:
        if self.kind in ("ssh", "labgrid"):
            return f"run `edge-harness targets setup {self.name}`"
        python = self.probe.get("python_executable") or sys.executable
        return f"`{python} -m pip install numpy onnxruntime ai-edge-litert`"


def probe_one(name: str, specs: dict[str, dict[str, Any]]) -> Checked:
    """Connect (ssh) and run the runner's probe; never raises for a user-side problem."""
    c = Checked(name=name, kind=str(specs.get(name, {}).get("kind", "?")))
    try:
        target = make_target(name, specs)
    except USER_ERRORS as e:
        c.error = str(e)
        return c
    with target:
        try:
            if isinstance(target, SSHTarget):
                target.connection()  # reachable, even if its python then cannot run the probe
            if isinstance(target, LabgridTarget):
                c.places = target.survey()  # a check never queues: a board is probed only if one is free now
            if isinstance(target, AdbTarget):
                target.adb.run("get-state", check=True)  # a phone adb cannot see is not reachable
            c.reachable = True
            c.probe = (target.probe_now() or {}) if isinstance(target, LabgridTarget) else target.probe()
        except USER_ERRORS as e:
            c.error = str(e)
            return c
    if c.kind not in ("ssh", "labgrid"):
        tmp = tempfile.gettempdir()
        c.probe.setdefault("workdir", tmp)
        c.probe.setdefault("workdir_free_mb", shutil.disk_usage(tmp).free / 2**20)
        c.probe.setdefault("mem_available_mb", _mem_available_mb())
    return c


def _mem_available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _mb(v: Any) -> str:
    return "-" if v is None else (f"{v / 1024:.1f} GB" if v >= 1024 else f"{v:.0f} MB")


ROWS: list[tuple[str, Callable[[Checked], str]]] = [
    ("reachable", lambda c: "yes" if c.reachable else "NO"),
    ("lab places", lambda c: "\n".join(c.places) or "-"),
    ("arch", lambda c: c.probe.get("machine") or "-"),
    ("OS", lambda c: c.probe.get("os") or "-"),
    ("Python", lambda c: c.probe.get("python") or "-"),
    ("runtimes", lambda c: "\n".join(f"{k} {v}" for k, v in (c.probe.get("runtimes") or {}).items()
                                      if k != "numpy") or "-"),
    ("numpy", lambda c: (c.probe.get("runtimes") or {}).get("numpy") or "-"),
    ("CPU", lambda c: c.probe.get("cpu_model") or "-"),
    ("cores", lambda c: str(c.probe.get("cores") or "-")),
    ("governor", lambda c: c.probe.get("governor") or "-"),
    ("memory", lambda c: f"{_mb(c.probe.get('mem_total_mb'))} ({_mb(c.probe.get('mem_available_mb'))} free)"
     if c.probe else "-"),
    ("free disk", lambda c: _mb(c.probe.get("workdir_free_mb")) if c.probe else "-"),
    ("temperature", lambda c: f"{max(t.values()):.0f} C" if (t := c.probe.get("temperature_c")) else "-"),
    ("phone", lambda c: phone_lines(c.probe)),
    ("clusters", lambda c: cluster_lines(c.probe)),
    ("battery", lambda c: f"{t:.0f} C" if (t := (c.probe.get("temperature_c") or {}).get("battery")) is not None
     else "-"),
]


def render(checked: list[Checked], width: int = 44) -> str:
    """A table with one column per target (a cell may take several lines), then what each target lacks."""
    labels = [""] + [label for label, _ in ROWS]
    cols = [[[c.name]] + [[v[:width] for v in fn(c).split("\n")] for _, fn in ROWS] for c in checked]
    widths = [max(map(len, labels))] + [max(len(v) for cell in col for v in cell) for col in cols]
    lines = []
    for i, label in enumerate(labels):
        for k in range(max(len(col[i]) for col in cols)):
            cells = [(label if k == 0 else "").ljust(widths[0])]
            cells += [(col[i][k] if k < len(col[i]) else "").ljust(w) for col, w in zip(cols, widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for c in checked:
        advice = [a.removeprefix(f"target {c.name}: ") for a in c.advice()]
        lines.append(f"{c.name}: " + ("ready" if not advice else advice[0]))
        lines.extend(f"{' ' * (len(c.name) + 2)}{a}" for a in advice[1:])
    return "\n".join(lines)


def check_targets(names: list[str], targets_file: Path | None, stream: TextIO | None = None) -> int:
    """Probe the named targets (default: local-cpu and every target in the file); 1 if one is unreachable."""
    specs = load_targets_file(targets_file)
    names = list(names) or [n for n in specs if n != "local-gpu"]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        checked = list(pool.map(lambda n: probe_one(n, specs), names))
    print(render(checked), file=stream or sys.stdout)
    return 0 if all(c.reachable for c in checked) else 1


# ------------------------------------------------------------------------- setup


def setup_target(name: str, targets_file: Path | None, formats: list[str], wheels: Path | None = None,
                 say: Callable[[str], None] = print) -> str:
    """Create `workdir/venv` on the device and install the runtimes; returns the venv's python."""
    specs = load_targets_file(targets_file)
    packages = packages_for(formats)
    with make_target(name, specs) as target:
        if target.kind == "adb":
            raise TargetError(f"{name} (kind adb) needs no set-up: the harness pushes your benchmark_model (and "
                              "onnxruntime_perf_test) to the phone itself; for the Python runner on a phone use an "
                              "ssh target in Termux")
        if isinstance(target, LabgridTarget):
            target = target.board()  # the board it reserves (set `place` to choose one); released on close
        if not isinstance(target, SSHTarget):
            raise TargetError(f"setup is for ssh targets; {name} runs here, so install into its python: "
                              f"`{getattr(target, 'python', 'python')} -m pip install {' '.join(packages)}`")
        vpy, runtimes = install_runtimes(target, packages, wheels=wheels, say=say)
    say(f"{name}: ready: " + ", ".join(f"{k} {v}" for k, v in runtimes.items()))
    say(f'Now set  python = "{vpy}"  in [targets.{name}] of {targets_file or "your targets file"}')
    return vpy


# ------------------------------------------------------------------------- clean


def clean_target(name: str, targets_file: Path | None, say: Callable[[str], None] = print) -> int:
    """Remove the uploaded models, inputs and job folders from an ssh device's workdir (under its lock)."""
    specs = load_targets_file(targets_file)
    with make_target(name, specs) as target:
        if not isinstance(target, SSHTarget):
            say(f"{name}: nothing to clean (a {target.kind} target keeps its files in a temporary folder that "
                "goes with each run)")
            return 0
        target.acquire()  # never under a measurement that is using them
        try:
            files, size = target.store.clean()
        except OSError as e:
            raise TargetError(f"target {name}: cleaning {target.workdir} failed: {e}") from None
    say(f"{name}: removed {files} file(s), {size / 1e6:.1f} MB from {target.workdir} (blobs/ and jobs/)")
    return 0


# ------------------------------------------------------------------------- trust


def ask_stdin(question: str) -> bool:
    """Ask a yes/no question on stdin (no answer, or no terminal: no)."""
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except (EOFError, OSError):
        return False


def trust_target(name: str, targets_file: Path | None, replace: bool = False, expect: str | None = None,
                 say: Callable[[str], None] = print, yes: bool = False,
                 ask: Callable[[str], bool] = ask_stdin) -> int:
    """Fetch the device's host key, show its fingerprint and, once confirmed (asked on stdin, or `yes`, or
    matching `expect`), add it to the target's known_hosts file."""
    specs = load_targets_file(targets_file)
    spec = dict(specs.get(name) or {})
    if spec.get("kind") != "ssh":
        raise TargetError(f"trust is for ssh targets; {name!r} is " + (f"kind {spec.get('kind')}" if spec
                                                                          else "not in the targets file"))
    if spec.get("adb_serial"):  # a phone over USB: ask through the adb forward, removed afterwards
        port = spec.get("port") or TERMUX_SSHD_PORT
        with AdbForward(Adb(name, spec["adb_serial"], spec.get("adb")), port, TERMUX_SSHD_PORT):
            found = presented_host_key(name, {**spec, "port": port})
    else:
        found = presented_host_key(name, spec)
    say(f"{name}: {found.host} presents {found.kind} {found.fingerprint}")
    if expect and expect != found.fingerprint:
        raise TargetError(f"target {name}: fingerprint {found.fingerprint} is not the expected {expect}; "
                          "nothing written")
    state = standing(found)
    if state == "other-type":
        say(f"{name}: {found.known_hosts} holds only another type of key for {found.host} "
            f"({describe_recorded(found)}); the device now presents {found.kind}")
    elif state == "changed" and replace:
        say(f"{name}: {found.known_hosts} holds {describe_recorded(found)} for {found.host}: the key CHANGED")
    if state != "already" and not expect and not yes and not (state == "changed" and not replace):
        if not ask(f"{name}: is {found.fingerprint} the fingerprint the device itself shows "
                   "(`ssh-keygen -lf` of its host key)?"):
            raise TargetError(f"target {name}: not confirmed, nothing written; compare the fingerprint with the "
                              "device's own, then answer y, or pass --yes or --expect SHA256:...")
    done = record_host_key(found, replace=replace)
    if done == "already":
        say(f"{name}: already trusted in {found.known_hosts}")
    else:
        say(f"{name}: {'replaced the key' if done == 'replaced' else 'added'} in {found.known_hosts}")
    return 0
