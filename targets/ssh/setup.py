"""Setting a device up for the runner: a venv under its workdir with numpy and the runtimes, installed
from the device's own package index or from wheels the host downloads for the device's platform; on a
phone in Termux, Termux's own packages installed with `pkg`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from targets.errors import TargetError
from targets.ssh.shell import last_line, q
from targets.ssh.target import SSHTarget

RUNTIME_FOR = {"onnx": ["onnxruntime"], "tflite": ["ai-edge-litert"]}
# Termux's own builds of the runner's packages (pip's manylinux wheels do not install there).
TERMUX_PACKAGES = {"numpy": "python-numpy", "onnxruntime": "python-onnxruntime"}
NO_TERMUX_BUILD = {"ai-edge-litert": "time .tflite models on this phone with a kind = \"adb\" target and LiteRT's "
                                     "benchmark_model"}


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


def install_runtimes(target: SSHTarget, packages: list[str], *, wheels: Path | None = None,
                     say: Callable[[str], None] = print) -> tuple[str, dict[str, str]]:
    """Create `workdir/venv` on the device and pip-install `packages` into it (from `wheels` if given).

    Returns the venv's python and the runtimes it can import; the target runs that python from then on.
    """
    name = target.name
    venv = f"{target.workdir}/venv"
    vpy = f"{venv}/bin/python"
    probe = target.probe()
    say(f"{name}: {probe.get('machine')} {probe.get('os')}, Python {probe.get('python')}")
    prefix = (probe.get("android") or {}).get("termux_prefix")
    if prefix:  # pip's manylinux wheels do not install in Termux: its own packages do
        return install_termux(target, prefix, packages, say)
    if target.exec(f"test -x {q(vpy)}")[0] != 0:
        say(f"{name}: creating {venv}")
        code, out = target.exec(f"{q(target.python)} -m venv {q(venv)}", timeout=600)
        if code != 0:
            raise TargetError(f"target {name}: `{target.python} -m venv` failed ({last_line(out)}); on Debian or "
                              "Raspberry Pi OS: sudo apt install python3-venv")
    if wheels is not None:
        source = f"--no-index --find-links {q(send_wheels(target, probe, packages, Path(wheels), say))}"
    else:
        source = "--upgrade"  # from the device's own index
    say(f"{name}: installing {', '.join(packages)} on the device")
    code, out = target.exec(f"{q(vpy)} -m pip install {source} {' '.join(map(q, packages))}", timeout=1800)
    if code != 0:
        raise TargetError(f"target {name}: pip install failed on the device: {last_line(out)}")
    target.python = vpy
    runtimes = target.probe().get("runtimes") or {}
    missing = [p for p in packages if p not in runtimes]
    if missing:
        raise TargetError(f"target {name}: installed, but {vpy} cannot import {', '.join(missing)}")
    return vpy, runtimes


def install_termux(target: SSHTarget, prefix: str, packages: list[str],
                   say: Callable[[str], None] = print) -> tuple[str, dict[str, str]]:
    """`pkg install` what Termux packages of `packages`, say what has no Termux build; Termux's python runs it."""
    name = target.name
    have = [p for p in packages if p in TERMUX_PACKAGES]
    for p in packages:
        if p not in TERMUX_PACKAGES:
            say(f"{name}: {p} has no Termux build ({NO_TERMUX_BUILD.get(p, 'no Termux package')})")
    pkgs = ["python"] + [TERMUX_PACKAGES[p] for p in have]
    say(f"{name}: Termux: pkg install {' '.join(pkgs)}")
    code, out = target.exec(f"{q(prefix + '/bin/pkg')} install -y {' '.join(map(q, pkgs))}", timeout=1800)
    if code != 0:
        raise TargetError(f"target {name}: pkg install failed in Termux: {last_line(out)}")
    target.python = f"{prefix}/bin/python"
    runtimes = target.probe().get("runtimes") or {}
    missing = [p for p in have if p not in runtimes]
    if missing:
        raise TargetError(f"target {name}: installed, but {target.python} cannot import {', '.join(missing)}")
    return target.python, runtimes


def send_wheels(target: SSHTarget, probe: dict[str, Any], packages: list[str], wheels: Path,
                say: Callable[[str], None] = print) -> str:
    """Download wheels for the device on the host and copy them over; returns their folder there."""
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = pip_download_command(probe, packages, wheels)
    say(f"downloading wheels for the device into {wheels}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(p for p in wheels.glob("*.whl") if re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", p.name))
    if done.returncode != 0:
        if not files:
            raise TargetError(f"pip download failed: {last_line(done.stdout + done.stderr)}")
        say(f"pip download failed ({last_line(done.stderr)}); using the {len(files)} wheels already in {wheels}")
    remote = f"{target.workdir}/wheels"
    target.exec(f"mkdir -p -- {q(remote)}", check=True)
    before = target.bytes_sent
    for p in files:
        target.store.upload(p, f"{remote}/{p.name}", p.stat().st_size)
    say(f"copied {len(files)} wheels ({(target.bytes_sent - before) / 2**20:.1f} MB sent)")
    return remote
