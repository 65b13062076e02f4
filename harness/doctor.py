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
from targets.ssh import SSHTarget, install_runtimes, packages_for, presented_host_key, record_host_key

MIN_PYTHON = (3, 8)


@dataclass
class Checked:
    """One target's probe, or why it could not be probed."""

    name: str
    kind: str = "?"
    reachable: bool = False
    probe: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def advice(self) -> list[str]:
        """What is missing or worth knowing, each with how to fix it."""
        if self.error:
            return [self.error]
        p, fix = self.probe, self.fix
        out = []
        py = tuple(int(x) for x in re.findall(r"\d+", p.get("python") or "0")[:2])
        if py < MIN_PYTHON:
            out.append(f"python {p.get('python')} is too old (the runner needs 3.8+): {fix}")
        rt = p.get("runtimes") or {}
        if "numpy" not in rt:
            out.append(f"no numpy: {fix}")
        if "onnxruntime" not in rt:
            out.append(f"no onnxruntime (ONNX models): {fix}")
        if "ai-edge-litert" not in rt and "tflite-runtime" not in rt:
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
        if self.kind == "ssh":
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
            c.reachable = True
            c.probe = target.probe()
        except USER_ERRORS as e:
            c.error = str(e)
            return c
    if c.kind != "ssh":
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
        if not isinstance(target, SSHTarget):
            raise TargetError(f"setup is for ssh targets; {name} runs here, so install into its python: "
                              f"`{getattr(target, 'python', 'python')} -m pip install {' '.join(packages)}`")
        vpy, runtimes = install_runtimes(target, packages, wheels=wheels, say=say)
    say(f"{name}: ready: " + ", ".join(f"{k} {v}" for k, v in runtimes.items()))
    say(f'Now set  python = "{vpy}"  in [targets.{name}] of {targets_file or "your targets file"}')
    return vpy


# ------------------------------------------------------------------------- trust


def trust_target(name: str, targets_file: Path | None, replace: bool = False, expect: str | None = None,
                 say: Callable[[str], None] = print) -> int:
    """Fetch the device's host key, show its fingerprint and add it to the target's known_hosts file."""
    specs = load_targets_file(targets_file)
    spec = dict(specs.get(name) or {})
    if spec.get("kind") != "ssh":
        raise TargetError(f"trust is for ssh targets; {name!r} is " + (f"kind {spec.get('kind')}" if spec
                                                                          else "not in the targets file"))
    found = presented_host_key(name, spec)
    say(f"{name}: {found.host} presents {found.kind} {found.fingerprint}")
    if expect and expect != found.fingerprint:
        raise TargetError(f"target {name}: fingerprint {found.fingerprint} is not the expected {expect}; "
                          "nothing written")
    done = record_host_key(found, replace=replace)
    if done == "already":
        say(f"{name}: already trusted in {found.known_hosts}")
    else:
        say(f"{name}: {'replaced the key' if done == 'replaced' else 'added'} in {found.known_hosts}")
    return 0
