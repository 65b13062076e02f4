"""Stand-ins for a phone, for tests (no phone can exist here), each named as such.

- `make_phone`: a phone reached with the stand-in `adb` (tests/standins/adb.py): its filesystem is a local
  folder with a Pixel 7's big.LITTLE cpufreq, thermal zones, battery and meminfo; its shell has stand-ins
  for `getprop`, `taskset` and `uname`; the stand-in `benchmark_model` prints published benchmark_model logs.
- `make_termux`: a Termux-like prefix (`.../com.termux/files/usr`) whose `bin/python` runs this machine's
  Python with PREFIX set, `getprop` on PATH and `platform.system()` saying "Android" (as Python does on
  Android, which makes onnxruntime warn "Unsupported platform (android)"), plus a stand-in `pkg`.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

STANDINS = Path(__file__).with_name("standins")
DATA = Path(__file__).with_name("data")
SERIAL = "STANDIN0001"
# Pixel 7 (Tensor G2): 4x Cortex-A55 1.80 GHz, 2x A78 2.35 GHz, 2x X1 2.85 GHz.
PIXEL7_MAX_KHZ = [1803000] * 4 + [2348000] * 2 + [2850000] * 2


def install(name: str, dest: Path) -> Path:
    """A stand-in script as an executable that runs with this machine's Python."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"#!{sys.executable}\n" + (STANDINS / f"{name}.py").read_text())
    dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return dest


@dataclass
class Phone:
    """A stand-in phone: `root` is its filesystem, `adb` the stand-in adb, `benchmark_model` the host binary."""

    folder: Path
    root: Path
    adb: Path
    benchmark_model: Path
    env: dict[str, str] = field(default_factory=dict)

    def unplug(self) -> None:
        (self.folder / "unplugged").touch()

    def plug_in(self) -> None:
        (self.folder / "unplugged").unlink(missing_ok=True)

    def calls(self) -> list[str]:
        p = Path(self.env["BENCHMARK_STANDIN_CALLS"])
        return p.read_text().splitlines() if p.is_file() else []

    def masks(self) -> list[str]:
        p = Path(self.env["TASKSET_STANDIN_LOG"])
        return p.read_text().split() if p.is_file() else []

    def toml(self, name: str = "phone", **extra: object) -> str:
        import json

        lines = [f"[targets.{name}]", 'kind = "adb"', f'serial = "{SERIAL}"',
                 f"benchmark_model = {json.dumps(str(self.benchmark_model))}", f"adb = {json.dumps(str(self.adb))}"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_phone(folder: Path, ssh_port: int | None = None) -> Phone:
    """Build the stand-in phone under `folder`; set `phone.env` in the environment (monkeypatch) to use it."""
    root = folder / "device"
    cpu = root / "sys/devices/system/cpu"
    for i, khz in enumerate(PIXEL7_MAX_KHZ):
        _write(cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq", f"{khz}\n")
        _write(cpu / f"cpu{i}/cpufreq/scaling_cur_freq", f"{khz // 2}\n")
        _write(cpu / f"cpu{i}/cpufreq/scaling_governor", "sched_pixel\n")
    for i, (kind, milli) in enumerate([("BIG", 41500), ("MID", 39800), ("LITTLE", 37200)]):
        _write(root / f"sys/class/thermal/thermal_zone{i}/type", f"{kind}\n")
        _write(root / f"sys/class/thermal/thermal_zone{i}/temp", f"{milli}\n")
    _write(root / "sys/class/power_supply/battery/temp", "312\n")
    _write(root / "proc/meminfo", "MemTotal:        7869912 kB\nMemFree:          412340 kB\n"
                                  "MemAvailable:    3212480 kB\n")
    (root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
    for name in ("getprop", "taskset", "uname"):
        install(name, root / "system/bin" / name)
    phone = Phone(folder=folder, root=root, adb=install("adb", folder / "host-bin/adb"),
                  benchmark_model=install("benchmark_model", folder / "host-bin/benchmark_model"))
    phone.env = {"ADB_STANDIN_ROOT": str(root), "ADB_STANDIN_SERIAL": SERIAL,
                 "BENCHMARK_STANDIN_DATA": str(DATA / "benchmark_model"),
                 "BENCHMARK_STANDIN_CALLS": str(folder / "benchmark_model-calls.jsonl"),
                 "TASKSET_STANDIN_LOG": str(folder / "taskset-masks.txt")}
    if ssh_port is not None:
        phone.env["ADB_STANDIN_SSH_PORT"] = str(ssh_port)
    return phone


def make_termux(folder: Path) -> Path:
    """A Termux-like prefix under `folder`; returns it (its `bin/python` is the target's python)."""
    prefix = folder / "data/data/com.termux/files/usr"
    site = prefix / "lib/standin-site"
    _write(site / "sitecustomize.py", "import platform\nplatform.system = lambda: 'Android'  # as on Android\n")
    install("getprop", prefix / "bin/getprop")
    install("pkg", prefix / "bin/pkg")
    python = prefix / "bin/python"
    _write(python, f'#!/bin/sh\nexport PREFIX="{prefix}"\nexport PATH="{prefix}/bin:$PATH"\n'
                   f'export PYTHONPATH="{site}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return prefix


def env_with(phone: Phone) -> dict[str, str]:
    return {**os.environ, **phone.env}
