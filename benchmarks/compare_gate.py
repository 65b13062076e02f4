"""Can a CI job gate on `edge-harness compare`? Same config back to back must pass; a real slowdown must not.

    python benchmarks/compare_gate.py [--pairs 3] [--root DIR]

Runs a small config (the demo's fine-tuned EfficientNet-Lite0, cached after one demo, as fp32 and
static int8 ONNX) `pairs + 1` times at 2 threads, then once more at 1 thread, and prints the exit
status of `edge-harness compare` between consecutive 2-thread runs (want 0: no regression) and
between the last 2-thread run and the 1-thread run (want 1: a regression, with the cells named).
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

CONFIG = """name = "gate"
[model]
builtin = "efficientnet_lite0"
[data]
source = "textures"
patch = 64
test_stride = 16
[measure]
threads = {threads}
[[variants]]
name = "fp32"
formats = ["onnx"]
[[variants]]
name = "int8-static"
precision = "int8-static"
formats = ["onnx"]
"""


def run(root: Path, tmp: Path, name: str, threads: int) -> Path:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(CONFIG.format(threads=threads))
    out = tmp / name
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(cfg), "--out", str(out), "-q"],
                       cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{name} failed ({r.returncode}): {r.stderr[-2000:]}")
    rep = json.loads((out / "local-cpu" / "report.json").read_text())
    p50 = ", ".join(f"{m['variant']}/{m['format']} {m['latency_ms']['p50']:.3f} ms" for m in rep["measurements"]
                    if m.get("latency_ms"))
    print(f"{name} (threads {threads}, {time.monotonic() - t0:.0f} s): {p50}", flush=True)
    return out


def compare(root: Path, old: Path, new: Path) -> tuple[int, list[str]]:
    md = old.parent / f"cmp-{old.name}-{new.name}.md"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(old), str(new), "--out", str(md)],
                       cwd=root, capture_output=True, text=True)
    data = json.loads(md.with_suffix(".json").read_text()) if md.with_suffix(".json").is_file() else {}
    flagged = [f"{c['cell']}: {c['verdict']} ({'; '.join(c['reasons'])[:160]})" for c in data.get("changes", [])
               if c.get("verdict") in ("regression", "improvement")]
    return r.returncode, flagged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="back-to-back pairs at the same settings")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose CLI runs (default: this one)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eh-gate-"))
    same = [run(args.root, tmp, f"same{i}", 2) for i in range(args.pairs + 1)]
    slow = run(args.root, tmp, "one-thread", 1)
    codes = []
    for a, b in zip(same, same[1:]):
        code, flagged = compare(args.root, a, b)
        codes.append(code)
        print(f"compare {a.name} -> {b.name}: exit {code}" + "".join(f"\n  {f}" for f in flagged), flush=True)
    code, flagged = compare(args.root, same[-1], slow)
    print(f"compare {same[-1].name} -> {slow.name} (2 -> 1 thread): exit {code}" + "".join(f"\n  {f}" for f in flagged))
    print(f"same settings: {codes.count(0)}/{len(codes)} pairs exit 0; 2 -> 1 thread: "
          f"{'regression reported' if code == 1 else 'NOT reported'} ({tmp})")


if __name__ == "__main__":
    main()
