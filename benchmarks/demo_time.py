"""End-to-end wall time of `edge-harness demo --quick` and `edge-harness demo`, cold and cached.

    .venv/bin/python benchmarks/demo_time.py [--only quick|full]

Each mode runs twice with its own fresh cache folder (EDGE_HARNESS_CACHE) and a new output
folder each time: first cold (fine-tuning and recipes computed), then again with everything
cached (checkpoints and compressed variants reused; exports, parity and measurement redone).
Prints the wall time, the cells measured, and the slowest steps from the progress lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP = re.compile(r"\] (.+): (?:done|FAILED) in ([0-9.]+)s$")


def run_demo(quick: bool, out: Path, cache: Path) -> tuple[float, int, str, list[tuple[float, str]]]:
    cmd = [sys.executable, "-m", "harness.cli", "demo", *(["--quick"] if quick else []), "--out", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "EDGE_HARNESS_CACHE": str(cache)})
    wall = time.perf_counter() - t0
    steps = sorted(((float(m.group(2)), m.group(1)) for m in map(STEP.search, r.stderr.splitlines()) if m),
                   reverse=True)
    cells = "no report"
    report = out / "local-cpu" / "report.json"
    if report.is_file():
        ms = json.loads(report.read_text())["measurements"]
        cells = f"{sum(m['status'] == 'ok' for m in ms)}/{len(ms)} cells ok"
    elif r.returncode:
        cells = (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    return wall, r.returncode, cells, steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["quick", "full"], help="time one mode only")
    args = ap.parse_args()
    modes = [args.only == "quick"] if args.only else [True, False]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work on the machine inflates every figure)")
    print(f"{'mode':<6} {'cache':<7} {'wall s':>8} {'exit':>4}  cells / slowest steps")
    with tempfile.TemporaryDirectory(prefix="eh-bench-demo-") as tmp_s:
        tmp = Path(tmp_s)
        for quick in modes:
            name = "quick" if quick else "full"
            cache = tmp / f"cache-{name}"
            for phase in ("cold", "cached"):
                wall, code, cells, steps = run_demo(quick, tmp / f"out-{name}-{phase}", cache)
                top = "; ".join(f"{what} {secs:.1f}s" for secs, what in steps[:3])
                print(f"{name:<6} {phase:<7} {wall:>8.1f} {code:>4}  {cells} | {top}")


if __name__ == "__main__":
    main()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
