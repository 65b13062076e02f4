"""Do the op profiles add up? `bench --profile` on the demo's artifacts: operator time per run against the
cell's measured mean latency and against the unprofiled runs of the profile pass.

    .venv/bin/python benchmarks/profile_sums.py [--artifacts reports/demo/artifacts] [--threads 1,2] [--repeats 3]

Run `make demo` first (or point --artifacts at any folder of .onnx / .tflite files). Prints one row per
artifact and thread count: the median over the repeats of op time / mean latency, op time / unprofiled
runs, and the profiler cost removed per operator (onnxruntime), with the worst repeat beside it. The
acceptance asks for operator times within 20% of the mean latency; a shared machine moves a mean by more
than that between two passes, so read the median column and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("fp32.onnx", "fp16.onnx", "int8-dynamic.onnx", "int8-static.onnx", "fp32.tflite", "fp16.tflite",
           "int8-dynamic.tflite", "int8-static.tflite")


def bench(path: Path, threads: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "bench", str(path), "--profile", "--threads", str(threads),
           "--out", str(out), "--overwrite", "-q"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    m = json.loads((out / "local-cpu" / "report.json").read_text())["measurements"][0]
    return m.get("op_profile") or {"error": m.get("error") or "no profile"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "reports" / "demo" / "artifacts",
                    help="folder of artifacts (default: the demo's)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="bench runs per artifact and thread count")
    args = ap.parse_args()
    names = [n for n in DEFAULT if (args.artifacts / n).is_file()] or sorted(
        p.name for p in args.artifacts.iterdir() if p.suffix in (".onnx", ".tflite"))
    if not names:
        print(f"no .onnx or .tflite files in {args.artifacts}: run `make demo` first", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'artifact':22} {'thr':>3} {'op/mean':>8} {'worst':>6} {'op/unprof':>9} {'worst':>6} "
          f"{'floor us':>8} {'within 20%':>10}")
    with tempfile.TemporaryDirectory(prefix="eh-profile-") as tmp:
        for name in names:
            for threads in (int(t) for t in args.threads.split(",")):
                ps = [bench(args.artifacts / name, threads, Path(tmp) / f"{name}-{threads}-{i}")
                      for i in range(args.repeats)]
                ok = [p for p in ps if not p.get("error")]
                if not ok:
                    print(f"{name:22} {threads:>3} {ps[0]['error'][:80]}")
                    continue
                mean = [p["vs_mean_latency"] for p in ok]
                bare = [p["vs_unprofiled"] for p in ok]
                worst_mean = max(mean, key=lambda r: abs(r - 1))
                worst_bare = max(bare, key=lambda r: abs(r - 1))
                floor = statistics.median(p.get("profiler_floor_us") or 0.0 for p in ok)
                within = sum(abs(r - 1) <= 0.2 for r in mean)
                print(f"{name:22} {threads:>3} {statistics.median(mean):>8.2f} {worst_mean:>6.2f} "
                      f"{statistics.median(bare):>9.2f} {worst_bare:>6.2f} {floor:>8.1f} {within:>6}/{len(ok)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
