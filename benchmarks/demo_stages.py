"""The demo's time per stage, cold and cached: where `edge-harness demo` spends its minutes.

    .venv/bin/python benchmarks/demo_stages.py [--quick] [--only cold|cached] [--cache DIR] [--keep DIR]

Runs the demo in a fresh process (no terminal: plain progress lines) against a cache folder of its own
(EDGE_HARNESS_CACHE; a fresh temporary one unless --cache), first cold, then again with everything
cached, each into a new output folder. The run records its own stage durations in OUT/timings.json;
this prints them with their share of the wall time, the slowest steps, and the cells measured, so a
"cached" run that quietly lost cells shows. `--cache DIR --only cached` times a rerun against a warm
cache without the cold run (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The stages a reader asks about, in the order the demo runs them (a recipe stage per recipe).
# The harness's own stderr lines without a terminal (progress lines; the device lock's wait notice).
OURS = re.compile(r"^(\[ *\d+\.\ds\] .+|edge-harness: .+)$")
ORDER = ("startup", "data", "fine-tune", "baselines", "recipes", "predict", "exports", "parity",
         "build (other)", "measuring", "reports")


def run_demo(quick: bool, out: Path, cache: Path) -> dict:
    """One demo in a subprocess; its wall time, exit status, stage times and cells."""
    cmd = [sys.executable, "-m", "harness.cli", "demo", *(["--quick"] if quick else []), "--out", str(out),
           "--overwrite"]
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       env={**os.environ, "EDGE_HARNESS_CACHE": str(cache)})
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the demo and every process it waited for
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    (out.parent / f"{out.name}.stderr.txt").write_text(r.stderr)  # the terminal as a CI log would show it
    foreign = [ln for ln in r.stderr.splitlines() if not OURS.match(ln)]
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else timings_from_lines(r.stderr)
    cells = "no report"
    report = out / "local-cpu" / "report.json"
    if report.is_file():
        ms = json.loads(report.read_text())["measurements"]
        cells = f"{sum(m['status'] == 'ok' for m in ms)}/{len(ms)} cells ok"
    elif r.returncode:
        cells = (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    return {"wall_s": wall, "cpu_s": cpu, "exit": r.returncode, "cells": cells, "timings": timings,
            "lines": len(r.stderr.splitlines()) + len(r.stdout.splitlines()), "foreign": foreign}


STEP_DONE = re.compile(r"^\[ *([0-9.]+)s\] (.+): (?:done|FAILED) in ([0-9.]+)s")
STAMP = re.compile(r"^\[ *([0-9.]+)s\] (.*)$")


def timings_from_lines(stderr: str) -> dict:
    """For a harness too old to write timings.json: stages from its progress lines (no parity split)."""
    steps, first_measure, last = [], None, 0.0
    for line in stderr.splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        last = float(m.group(1))
        if first_measure is None and m.group(2).startswith("local-cpu: "):
            first_measure = last
        d = STEP_DONE.match(line)
        if d:
            what = d.group(2)
            stage = ("data" if what.startswith("loading data") else "baselines" if what.startswith("training baselines")
                     else "fine-tune" if what.startswith("training ") else "exports" if what.startswith("export ")
                     else f"recipe {what.split()[1]}" if what.startswith("recipe ") else what)
            steps.append({"stage": stage, "name": what, "seconds": float(d.group(3)), "ok": True})
    by_stage: dict[str, float] = {}
    for st in steps:
        by_stage[st["stage"]] = by_stage.get(st["stage"], 0.0) + st["seconds"]
    build = first_measure if first_measure is not None else last
    return {"total_s": last, "phases_s": {"build": build, "measuring": last - build}, "stages_s": by_stage,
            "steps": steps, "from_lines": True}


def stages(result: dict) -> dict[str, float]:
    """Wall seconds per stage: recipes summed, the build's unaccounted rest and the start-up shown apart."""
    t = result["timings"]
    if not t:
        return {}
    by_stage = dict(t.get("stages_s", {}))
    phases = t.get("phases_s", {})
    out: dict[str, float] = {"startup": max(0.0, result["wall_s"] - t.get("total_s", result["wall_s"]))}
    recipes = sum(v for k, v in by_stage.items() if k.startswith("recipe "))
    for k in ("data", "fine-tune", "baselines"):
        out[k] = by_stage.get(k, 0.0)
    out["recipes"] = recipes
    for k in ("predict", "exports", "parity"):
        out[k] = by_stage.get(k, 0.0)
    accounted = sum(v for k, v in out.items() if k != "startup")
    out["build (other)"] = max(0.0, phases.get("build", 0.0) - accounted)
    out["measuring"] = phases.get("measuring", 0.0)
    out["reports"] = phases.get("reports", 0.0)
    return out


def print_table(results: dict[str, dict]) -> None:
    phases = list(results)
    table = {p: stages(r) for p, r in results.items()}
    print(f"{'stage':<16}" + "".join(f"{p + ' s':>12}{'share':>7}" for p in phases))
    for name in ORDER:
        row = f"{name:<16}"
        for p in phases:
            sec, wall = table[p].get(name, 0.0), results[p]["wall_s"]
            row += f"{sec:>12.1f}{100 * sec / wall if wall else 0:>6.0f}%"
        print(row)
    print(f"{'wall':<16}" + "".join(f"{results[p]['wall_s']:>12.1f}{'':>7}" for p in phases))
    # CPU seconds of the demo and its children: less moved than wall time by other work on the machine.
    print(f"{'cpu (all procs)':<16}" + "".join(f"{results[p]['cpu_s']:>12.1f}{'':>7}" for p in phases))
    for p, r in results.items():
        print(f"{p}: exit {r['exit']}, {r['cells']}, {r['lines']} lines printed, "
              f"{len(r['foreign'])} not the harness's own" + (f" (first: {r['foreign'][0][:100]!r})"
                                                               if r["foreign"] else ""))
        steps = sorted(r["timings"].get("steps", []), key=lambda s: -s["seconds"])[:5]
        if steps:
            print("  slowest steps: " + "; ".join(f"{s['name']} {s['seconds']:.1f}s" for s in steps))
        per_recipe = {k: v for k, v in r["timings"].get("stages_s", {}).items() if k.startswith("recipe ")}
        if per_recipe:
            print("  recipes: " + ", ".join(f"{k.removeprefix('recipe ')} {v:.1f}s" for k, v in per_recipe.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="time `demo --quick` instead of the full demo")
    ap.add_argument("--only", choices=["cold", "cached"], help="one run only (cached: with --cache, a warm one)")
    ap.add_argument("--cache", type=Path, help="cache folder to use (default: a fresh temporary one)")
    ap.add_argument("--keep", type=Path, help="keep the output folders (and timings) here")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.only == "cached" and args.cache is None:
        ap.error("--only cached needs --cache DIR (a warm cache); without one the first run is cold")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work on the machine inflates every figure)")
    with tempfile.TemporaryDirectory(prefix="eh-demo-stages-") as tmp_s:
        tmp = args.keep or Path(tmp_s)
        cache = args.cache or tmp / "cache"
        results = {}
        for phase in ("cold", "cached"):
            if args.only and phase != args.only:
                continue
            results[phase] = run_demo(args.quick, tmp / f"out-{phase}", cache)
        print_table(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
