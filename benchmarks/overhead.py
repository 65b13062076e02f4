"""Harness overhead: the runner's median against a minimal in-process loop, same model and threads.

    .venv/bin/python benchmarks/overhead.py [--threads 1] [--runs 300]

Prints, for ONNX (onnxruntime) and TFLite (ai-edge-litert), the median latency of a bare
`session.run` / `interpreter.invoke` loop in this process and of the runner in a fresh
process, and their ratio. The model takes a few ms so the loop cost is visible against it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters import EXPORTERS  # noqa: E402
from targets import Job, LocalTarget  # noqa: E402


def model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 10)).eval()


def bare_onnx(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> list[int]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {s.get_inputs()[0].name: x}
    for _ in range(warmup):
        s.run(None, feeds)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        s.run(None, feeds)
        out.append(time.perf_counter_ns() - t0)
    return out


def bare_tflite(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    idx = it.get_input_details()[0]["index"]
    out_idx = it.get_output_details()[0]["index"]
    for _ in range(warmup):
        it.set_tensor(idx, x)
        it.invoke()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        it.set_tensor(idx, x)
        it.invoke()
        it.get_tensor(out_idx)
        out.append(time.perf_counter_ns() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="alternate bare/runner this many times")
    args = ap.parse_args()
    import torch

    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        m = model()
        np.savez(tmp_p / "x.npz", input=x)
        print(f"threads={args.threads} runs={args.runs} warmup={args.warmup} input {list(x.shape)}")
        for fmt, bare in (("onnx", bare_onnx), ("tflite", bare_tflite)):
            path = EXPORTERS[fmt](m, (torch.from_numpy(x),), "fp32", tmp_p / f"m.{fmt}")
            target = LocalTarget("local-cpu", threads=args.threads)
            bares, runners = [], []
            try:
                for _ in range(args.repeats):  # alternate, so drift hits both sides alike
                    bares.append(statistics.median(bare(path, x, args.threads, args.runs, args.warmup)) / 1e6)
                    raw = target.run(Job(artifact=str(path), format=fmt, timing_inputs=str(tmp_p / "x.npz"),
                                         runs=args.runs, warmup=args.warmup, min_time_s=0.0,
                                         threads=args.threads))
                    assert raw.ok, raw.error
                    runners.append(statistics.median(raw.data["latencies_ns"]) / 1e6)
            finally:
                target.close()
            b, r = statistics.median(bares), statistics.median(runners)
            print(f"{fmt:7s} minimal loop p50 {b:.4f} ms | runner p50 {r:.4f} ms | ratio {r / b:.4f} "
                  f"({(r / b - 1) * 100:+.2f}%)  [bare {', '.join(f'{v:.4f}' for v in bares)}; "
                  f"runner {', '.join(f'{v:.4f}' for v in runners)}]")


if __name__ == "__main__":
    main()
