"""`edge-harness targets check | setup | trust`: what a device has, what it lacks, and how to fix it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from harness.errors import HarnessError, TargetError
from harness.targets_file import load_targets_file, make_target

RUNTIME_FOR = {"onnx": ["onnxruntime"], "tflite": ["ai-edge-litert"]}
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
    except HarnessError as e:
        c.error = str(e)
        return c
    with target:
        try:
            if hasattr(target, "connection"):
                target.connection()
            c.reachable = True
            c.probe = target.probe()
        except HarnessError as e:
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


def packages_for(formats: list[str]) -> list[str]:
    """numpy plus the runtime each format needs, in install order."""
    unknown = [f for f in formats if f not in RUNTIME_FOR]
    if unknown:
        raise TargetError(f"unknown format {unknown[0]!r} for setup (choose from {', '.join(RUNTIME_FOR)})")
    pkgs = ["numpy"]
    for f in formats:
        pkgs += [p for p in RUNTIME_FOR[f] if p not in pkgs]
    return pkgs


def platform_tags(probe: dict[str, Any]) -> list[str]:
    """pip --platform tags for the device: manylinux_2_17 up to its glibc, for its architecture."""
    arch = probe.get("machine") or ""
    arch = {"arm64": "aarch64", "armv8l": "armv7l"}.get(arch, arch)
    m = re.search(r"glibc(\d+)\.(\d+)", probe.get("os") or "")
    if not arch or not m or int(m.group(1)) != 2:
        raise TargetError(f"cannot tell the device's platform from {probe.get('os')!r} ({arch or '?'}); "
                          "offline wheels need a glibc Linux device, install on it from its own index instead")
    top = int(m.group(2))
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(top, 16, -1)]
    return tags + [f"manylinux2014_{arch}"]


def pip_download_command(probe: dict[str, Any], packages: list[str], dest: Path) -> list[str]:
    """`pip download` of binary wheels for the device's platform and Python, run on the host."""
    ver = re.findall(r"\d+", probe.get("python") or "")[:2]
    if len(ver) < 2:
        raise TargetError(f"cannot tell the device's Python version from {probe.get('python')!r}")
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", ".".join(ver), "--implementation", "cp"]
    for abi in (f"cp{''.join(ver)}", "abi3", "none"):
        cmd += ["--abi", abi]
    for tag in platform_tags(probe) + ["any"]:
        cmd += ["--platform", tag]
    return cmd + packages


def setup_target(name: str, targets_file: Path | None, formats: list[str], wheels: Path | None = None,
                 say: Callable[[str], None] = print) -> str:
    """Create `workdir/venv` on the device and install the runtimes; returns the venv's python."""
    from targets.ssh import SSHTarget, q

    specs = load_targets_file(targets_file)
    packages = packages_for(formats)
    target = make_target(name, specs)
    with target:
        if not isinstance(target, SSHTarget):
            raise TargetError(f"setup is for ssh targets; {name} runs here, so install into its python: "
                              f"`{getattr(target, 'python', 'python')} -m pip install {' '.join(packages)}`")
        venv = f"{target.workdir}/venv"
        vpy = f"{venv}/bin/python"
        probe = target.probe()
        say(f"{name}: {probe.get('machine')} {probe.get('os')}, Python {probe.get('python')}")
        if target.exec(f"test -x {q(vpy)}")[0] != 0:
            say(f"{name}: creating {venv}")
            code, out = target.exec(f"{q(target.python)} -m venv {q(venv)}", timeout=600)
            if code != 0:
                raise TargetError(f"target {name}: `{target.python} -m venv` failed ({_last(out)}); on Debian or "
                                  "Raspberry Pi OS: sudo apt install python3-venv")
        if wheels is not None:
            source = f"--no-index --find-links {q(_send_wheels(target, probe, packages, Path(wheels), say))}"
        else:
            source = "--upgrade"  # from the device's own index
        say(f"{name}: installing {', '.join(packages)} on the device")
        code, out = target.exec(f"{q(vpy)} -m pip install {source} {' '.join(map(q, packages))}", timeout=1800)
        if code != 0:
            raise TargetError(f"target {name}: pip install failed on the device: {_last(out)}")
        target.python = vpy
        runtimes = target.probe().get("runtimes") or {}
    missing = [p for p in packages if p not in runtimes]
    if missing:
        raise TargetError(f"target {name}: installed, but {vpy} cannot import {', '.join(missing)}")
    say(f"{name}: ready: " + ", ".join(f"{k} {v}" for k, v in runtimes.items()))
    say(f'Now set  python = "{vpy}"  in [targets.{name}] of {targets_file or "your targets file"}')
    return vpy


def _send_wheels(target: Any, probe: dict[str, Any], packages: list[str], wheels: Path,
                 say: Callable[[str], None]) -> str:
    """Download wheels for the device on the host and copy them over; returns their folder there."""
    from targets.ssh import q

    wheels.mkdir(parents=True, exist_ok=True)
    cmd = pip_download_command(probe, packages, wheels)
    say(f"downloading wheels for the device into {wheels}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(p for p in wheels.glob("*.whl") if re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", p.name))
    if done.returncode != 0:
        if not files:
            raise TargetError(f"pip download failed: {_last(done.stdout + done.stderr)}")
        say(f"pip download failed ({_last(done.stderr)}); using the {len(files)} wheels already in {wheels}")
    remote = f"{target.workdir}/wheels"
    target.exec(f"mkdir -p -- {q(remote)}", check=True)
    before = target.bytes_sent
    for p in files:
        target.upload(p, f"{remote}/{p.name}", p.stat().st_size)
    say(f"copied {len(files)} wheels ({(target.bytes_sent - before) / 2**20:.1f} MB sent)")
    return remote


def _last(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


# ------------------------------------------------------------------------- trust


def trust_target(name: str, targets_file: Path | None, replace: bool = False, expect: str | None = None,
                 say: Callable[[str], None] = print) -> int:
    """Fetch the device's host key, show its fingerprint and add it to the target's known_hosts file."""
    import paramiko

    from targets.ssh import fetch_host_key, fingerprint, known_hosts_name, resolve

    specs = load_targets_file(targets_file)
    spec = dict(specs.get(name) or {})
    if spec.get("kind") != "ssh":
        raise TargetError(f"trust is for ssh targets; {name!r} is " + (f"kind {spec.get('kind')}" if spec
                                                                          else "not in the targets file"))
    ep = resolve(name, spec["host"], spec.get("user"), spec.get("port"), spec.get("key"), spec.get("known_hosts"),
                 None, spec.get("connect_timeout_s", 10.0), spec.get("ssh_config", "~/.ssh/config"))
    key = fetch_host_key(ep)
    fp = fingerprint(key)
    host = known_hosts_name(ep.host, ep.port)
    say(f"{name}: {host} presents {key.get_name()} {fp}")
    if expect and expect != fp:
        raise TargetError(f"target {name}: fingerprint {fp} is not the expected {expect}; nothing written")
    known = paramiko.HostKeys()
    if ep.known_hosts.is_file():
        known.load(str(ep.known_hosts))
    have = known.lookup(host) or {}
    if have.get(key.get_name()) == key:
        say(f"{name}: already trusted in {ep.known_hosts}")
        return 0
    if have and not replace:
        olds = ", ".join(f"{k} {fingerprint(v)}" for k, v in have.items())
        raise TargetError(f"target {name}: {ep.known_hosts} holds a different key for {host} ({olds}); if the "
                          f"device was reinstalled, run `edge-harness targets trust {name} --replace`")
    ep.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = ep.known_hosts.read_text().splitlines(keepends=True) if ep.known_hosts.is_file() else []
    if have:
        lines = [ln for ln in lines if not _names_host(ln, host)]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(f"{host} {key.get_name()} {key.get_base64()}\n")
    ep.known_hosts.write_text("".join(lines))
    ep.known_hosts.chmod(0o600)
    say(f"{name}: {'replaced the key' if have else 'added'} in {ep.known_hosts}")
    return 0


def _names_host(line: str, host: str) -> bool:
    """Whether a known_hosts line is for `host` (plain or hashed names)."""
    import paramiko

    entry = paramiko.hostkeys.HostKeyEntry.from_line(line) if line.strip() and not line.startswith("#") else None
    if entry is None:
        return False
    for h in entry.hostnames:
        if h == host or (h.startswith("|1|") and paramiko.HostKeys.hash_host(host, h) == h):
            return True
    return False
