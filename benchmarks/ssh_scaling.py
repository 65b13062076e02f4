"""Wall time of measuring N SSH targets at once (N = 1, 2, 4, 8), each its own network namespace
with its own sshd, the way `run` measures several devices: one thread per target.

    .venv/bin/python benchmarks/ssh_scaling.py [--n 1,2,4,8] [--runs 20] [--min-time 0.25]

Needs root (namespaces, sshd). The small model is prepared once (export + parity); each round
then measures its cells on N fresh devices (probe, deploy into an empty workdir, run each cell).
Printed per N: wall time, the serial estimate N x wall(1), the speed-up, and the CPU time of the
harness process itself (SSH, SFTP, scoring) per target. All namespaces share this machine's CPU
cores, so once N exceeds them the runners compete; real boards each bring their own CPU.
Namespaces and sshds are removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sshd import Netns, keygen, skip_reason  # noqa: E402

from harness.build.pipeline import Pipeline  # noqa: E402
from harness.config.run import RunConfig  # noqa: E402
from harness.config.targets_file import load_targets_file, make_target  # noqa: E402
from harness.measure.loop import measure_target  # noqa: E402
from harness.progress import Progress  # noqa: E402
from harness.report.files import write_target_report  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="1,2,4,8", help="numbers of targets (comma-separated)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--min-time", type=float, default=0.25, help="minimum timed seconds per cell")
    args = ap.parse_args()
    counts = [int(v) for v in args.n.split(",")]
    reason = skip_reason()
    if reason:
        sys.exit(f"ssh_scaling: {reason}")
    cfg = RunConfig.from_dict({
        "name": "scaling", "model": {"builtin": "tiny_cnn", "pretrained": False},
        "data": {"source": "textures", "patch": 32, "per_class": 8, "eval_samples": 12},
        "finetune": {"epochs": 0, "unfreeze_epochs": 0, "baselines": False},
        "variants": [{"name": "fp32", "formats": ["onnx"]},
                     {"name": "int8-dynamic", "precision": "int8-dynamic", "formats": ["onnx"]}],
        "measure": {"runs": args.runs, "warmup": 2, "min_time_s": args.min_time, "parity_samples": 8},
    })
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work on the machine inflates every figure)")
    with tempfile.TemporaryDirectory(prefix="eh-bench-scaling-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        prep = Pipeline(cfg, tmp / "prep", Progress(quiet=True), tmp / "cache").prepare()
        print(f"prepared {len(prep.cells)} cells in {time.perf_counter() - t0:.1f} s; measure runs={args.runs}, "
              f"min_time_s={args.min_time}; host has {os.cpu_count()} CPU cores")
        key = keygen(tmp / "client_key")
        devices: list[Netns] = []
        try:
            t0 = time.perf_counter()
            for i in range(max(counts)):
                ns = Netns.create(f"s{i}")
                devices.append(ns)
                ns.start_sshd(tmp / f"sshd{i}", client_key=key)
            print(f"started {len(devices)} namespaces with an sshd each in {time.perf_counter() - t0:.1f} s")
            kh = tmp / "known_hosts"
            kh.write_text("".join(ns.servers[0].known_hosts_line() for ns in devices))
            print(f"{'N':>3} {'wall s':>8} {'N x wall(1)':>12} {'speed-up':>9} {'per target s':>13} "
                  f"{'harness CPU s/target':>21}")
            base = None
            for n in counts:
                tf = tmp / f"targets-{n}.toml"
                tf.write_text("".join(ns.servers[0].target_toml(f"dev{i}", kh, python=sys.executable, threads=1,
                                                                 workdir=str(tmp / f"wd-{n}-{i}"))
                                      for i, ns in enumerate(devices[:n])))
                specs = load_targets_file(tf)
                targets = [make_target(f"dev{i}", specs) for i in range(n)]
                try:
                    out = tmp / f"out-{n}"
                    cpu0, t0 = cpu_seconds(), time.perf_counter()
                    with ThreadPoolExecutor(max_workers=n) as pool:
                        def save(r, out=out):
                            return write_target_report(r, out)
                        jobs = [pool.submit(measure_target, t, prep, cfg, save, Progress(quiet=True)) for t in targets]
                        reports = [j.result() for j in jobs]
                    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
                finally:
                    for t in targets:
                        t.close()
                bad = [f"{r.target['name']}: {m.key}: {m.error}" for r in reports for m in r.measurements if not m.ok]
                if bad:
                    sys.exit("ssh_scaling: cells failed: " + "; ".join(bad))
                base = base or wall
                print(f"{n:>3} {wall:>8.2f} {n * base:>12.2f} {n * base / wall:>8.2f}x {wall / n:>13.2f} "
                      f"{cpu / n:>21.2f}")
        finally:
            for ns in devices:
                ns.delete()


if __name__ == "__main__":
    main()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
