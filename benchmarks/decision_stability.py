"""Does the pick survive a noisy machine? Run the demo N times and print how often the decision agrees.

    python benchmarks/decision_stability.py [--runs 5] [--quick] [--root DIR] [--load]

Prints, over N back-to-back runs (the first may be cold; the artifact cache makes the rest cheap):
- how often the pick is the same (the most common pick's count out of N);
- Kendall's tau between every pair of runs, over the cells whose p50s differ by more than 20% in the
  first run (cells that close are not expected to keep their order);
- the exit status of `edge-harness compare` between consecutive runs (0: no regression);
- each run's wall time and the measuring stage's share of it.
`--root` runs another checkout's CLI (for a before/after figure); `--load` runs a CPU hog beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parent.parent


STAMP = re.compile(r"^\[\s*([0-9.]+)s\] (.*)$")


def demo(root: Path, out: Path, quick: bool) -> tuple[float, float | None]:
    """Run the demo; its wall time and its measuring stage's (from the build's last progress line to the end)."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "harness.cli", "demo", "--out", str(out), "--overwrite",
           *(["--quick"] if quick else [])]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"demo failed ({r.returncode}): {r.stderr[-2000:]}")
    stamps = [(float(m[1]), m[2]) for m in map(STAMP.match, r.stderr.splitlines()) if m]
    first = next((i for i, (_, line) in enumerate(stamps) if line.startswith("local-cpu: ")), None)
    measuring = stamps[-1][0] - stamps[first - 1][0] if first else None
    return time.monotonic() - t0, measuring


def pick_of(report: dict) -> str | None:
    rec = report.get("recommendation")
    if isinstance(rec, dict):
        return rec.get("pick")
    return None


def p50s(report: dict) -> dict[str, float]:
    return {f"{m['variant']}/{m['format']}": m["latency_ms"]["p50"] for m in report["measurements"]
            if m["status"] == "ok" and m.get("latency_ms")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose CLI runs (default: this one)")
    ap.add_argument("--load", action="store_true", help="keep one core busy with another process meanwhile")
    args = ap.parse_args()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.load else None
    tmp = Path(tempfile.mkdtemp(prefix="eh-stability-"))
    try:
        outs, walls, measuring = [], [], []
        for i in range(args.runs):
            out = tmp / f"run{i}"
            wall, meas = demo(args.root, out, args.quick)
            walls.append(wall)
            measuring.append(meas)
            outs.append(out)
            print(f"run {i + 1}: {wall:.1f} s, measuring stage {meas if meas is None else round(meas, 1)} s "
                  f"({out})", flush=True)
        reports = [json.loads((o / "local-cpu" / "report.json").read_text()) for o in outs]
        picks = []
        for o, rep in zip(outs, reports, strict=True):
            p = pick_of(rep)
            if p is None:  # older reports: the pick is only in summary.md's table
                row = next(ln for ln in (o / "summary.md").read_text().splitlines() if ln.startswith("| local-cpu"))
                p = row.split("|")[3].strip()
            picks.append(p)
        common, n = Counter(picks).most_common(1)[0]
        print(f"picks: {picks}")
        print(f"same pick: {n}/{len(picks)} ({common})")
        first = p50s(reports[0])
        keys = sorted(first)
        taus = []
        for a, b in itertools.combinations(range(len(reports)), 2):
            pa, pb = p50s(reports[a]), p50s(reports[b])
            common_keys = [k for k in keys if k in pa and k in pb]
            pairs = [(k, j) for k, j in itertools.combinations(common_keys, 2)
                     if max(first[k], first[j]) / min(first[k], first[j]) > 1.2]
            if not pairs:
                continue
            # tau over the pairs that differ by > 20%: concordant minus discordant, over all such pairs
            conc = sum((pa[k] - pa[j]) * (pb[k] - pb[j]) > 0 for k, j in pairs)
            taus.append((2 * conc - len(pairs)) / len(pairs))
        all_tau = [kendalltau([p50s(reports[a])[k] for k in keys if k in p50s(reports[b])],
                              [p50s(reports[b])[k] for k in keys if k in p50s(reports[a])]).statistic
                   for a, b in itertools.combinations(range(len(reports)), 2)]
        print(f"Kendall tau over cell pairs > 20% apart: mean {sum(taus) / len(taus):.3f}, min {min(taus):.3f}")
        print(f"Kendall tau over all cells: mean {sum(all_tau) / len(all_tau):.3f}, min {min(all_tau):.3f}")
        codes = []
        for a, b in zip(outs, outs[1:], strict=False):
            r = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(a), str(b), "--out",
                                str(tmp / f"cmp-{a.name}-{b.name}.md")], cwd=args.root, capture_output=True, text=True)
            codes.append(r.returncode)
        print(f"compare exit codes between consecutive runs: {codes} (0 = no regression)")
        print(f"wall per run: {', '.join(f'{w:.1f}' for w in walls)} s")
        print(f"measuring stage per run: {', '.join('?' if m is None else f'{m:.1f}' for m in measuring)} s")
    finally:
        if hog:
            hog.kill()


if __name__ == "__main__":
    main()
