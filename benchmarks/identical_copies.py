"""Two identical variants under two names must come out tied: run it N times, with a CPU hog beside it.

    python benchmarks/identical_copies.py [--runs 5] [--no-load] [--copies-only]

The config: the demo's fine-tuned EfficientNet-Lite0 (cached after one demo) exported as fp32 ONNX
twice under two names, plus static int8. Prints per run the two copies' p50s, the copy's latency
ratio to the pick with its 95% CI, and whether the report calls them tied (one is the pick and the
other in `tied`, or their ratio_to_pick_ci intervals overlap), then the count over all runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """name = "identical"
[model]
builtin = "efficientnet_lite0"
[data]
source = "textures"
patch = 64
test_stride = 16
[measure]
threads = 2
[[variants]]
name = "fp32"
formats = ["onnx"]
[[variants]]
name = "fp32-copy"
formats = ["onnx"]
[[variants]]
name = "int8-static"
precision = "int8-static"
formats = ["onnx"]
"""


def tied(report: dict) -> tuple[bool, str]:
    cells = {f"{m['variant']}/{m['format']}": m for m in report["measurements"]}
    a, b = cells["fp32/onnx"], cells["fp32-copy/onnx"]
    rec = report["recommendation"]
    if rec["pick"] in (a_key := "fp32/onnx", b_key := "fp32-copy/onnx"):
        other = b_key if rec["pick"] == a_key else a_key
        return other in rec["tied"], f"pick {rec['pick']}, tied {rec['tied']}"
    ca, cb = a["latency_ms"].get("ratio_to_pick_ci"), b["latency_ms"].get("ratio_to_pick_ci")
    overlap = bool(ca and cb and ca[0] <= cb[1] and cb[0] <= ca[1])
    return overlap, f"pick {rec['pick']}; copies' ratio CIs {ca} / {cb}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-load", action="store_true", help="no CPU hog beside the runs")
    ap.add_argument("--copies-only", action="store_true",
                    help="only the two copies, so one is the pick and the other must be in `tied`")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eh-identical-"))
    cfg = tmp / "identical.toml"
    cfg.write_text(CONFIG.split("[[variants]]\nname = \"int8-static\"")[0] if args.copies_only else CONFIG)
    hog = None if args.no_load else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results = []
    try:
        for i in range(args.runs):
            out = tmp / f"run{i}"
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(cfg), "--out", str(out), "-q"],
                               cwd=ROOT, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"run {i + 1} failed: {r.stderr[-2000:]}")
            report = json.loads((out / "local-cpu" / "report.json").read_text())
            ok, how = tied(report)
            results.append(ok)
            p50 = {m["variant"]: m["latency_ms"]["p50"] for m in report["measurements"] if m.get("latency_ms")}
            print(f"run {i + 1} ({time.monotonic() - t0:.0f} s): p50 fp32 {p50['fp32']:.3f} ms, copy "
                  f"{p50['fp32-copy']:.3f} ms -> {'tied' if ok else 'NOT tied'} ({how})", flush=True)
    finally:
        if hog:
            hog.kill()
    print(f"identical copies tied in {sum(results)}/{len(results)} runs"
          f"{'' if args.no_load else ' (with a CPU hog running beside them)'}")


if __name__ == "__main__":
    main()
