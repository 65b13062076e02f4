"""Deploy and run overhead of the SSH target, against a real sshd on loopback (root needed).

    .venv/bin/python benchmarks/ssh_deploy.py [--repeats 10]

Prints, each the median of --repeats tries:
  connect          TCP + SSH handshake + key auth + SFTP session + workdir folders
  first deploy     runner + watchdog + model + two input files sent into an empty workdir
  repeated deploy  the three per-cell files again (already on the device: one stat each)
  run, local       LocalTarget.run of a 1-iteration job (fresh runner process)
  run, ssh         SSHTarget.run of the same job (job file, watchdog, exec, results back, cleanup)
  exec `true`      one remote command: the device's shell start (its rc files) + a channel
and the per-cell SSH overhead = repeated deploy + (run, ssh - run, local). Loopback has no
network latency: on a real link add a few round trips per cell (about 10 SFTP/exec requests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sshd import skip_reason, start_sshd  # noqa: E402

from exporters import EXPORTERS  # noqa: E402
from harness.config.targets_file import load_targets_file, make_target  # noqa: E402
from targets import Job, LocalTarget  # noqa: E402


def small_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:8.1f} ms  (min {min(seconds) * 1e3:.1f}, max {max(seconds) * 1e3:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    reason = skip_reason()
    if reason:
        sys.exit(f"ssh_deploy: {reason}")
    import torch

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          "(other work on the machine inflates every figure)")
    with tempfile.TemporaryDirectory(prefix="eh-bench-deploy-") as tmp_s:
        tmp = Path(tmp_s)
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
        model = EXPORTERS["onnx"](small_cnn(), (torch.from_numpy(x),), "fp32", tmp / "m.onnx")
        np.savez(tmp / "timing.npz", input=x)
        np.savez(tmp / "eval.npz", input=np.repeat(x, 32, axis=0))
        server = start_sshd(tmp / "sshd")
        try:
            kh = tmp / "known_hosts"
            kh.write_text(server.known_hosts_line())
            sizes = {p.name: p.stat().st_size for p in (model, tmp / "timing.npz", tmp / "eval.npz")}
            print(f"sshd on 127.0.0.1:{server.port}; model {sizes['m.onnx'] / 1e3:.0f} kB, timing inputs "
                  f"{sizes['timing.npz'] / 1e3:.0f} kB, eval inputs {sizes['eval.npz'] / 1e3:.0f} kB; "
                  f"{args.repeats} repeats")
            connect, first, again, run_ssh, run_local, shell = [], [], [], [], [], []
            job_args = dict(format="onnx", runs=1, warmup=0, min_time_s=0.0, threads=1)
            local = LocalTarget("local-cpu", threads=1)
            for i in range(args.repeats):
                tf = tmp / "targets.toml"
                tf.write_text(server.target_toml("dev", kh, python=sys.executable, workdir=str(tmp / f"wd{i}"),
                                                 threads=1))
                with make_target("dev", load_targets_file(tf)) as t:
                    t0 = time.perf_counter()
                    t.connection()
                    connect.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    t.tools()
                    remote = [t.deploy(p) for p in (model, tmp / "timing.npz", tmp / "eval.npz")]
                    first.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    remote = [t.deploy(p) for p in (model, tmp / "timing.npz", tmp / "eval.npz")]
                    again.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    raw = t.run(Job(artifact=remote[0], timing_inputs=remote[1], eval_inputs=remote[2], **job_args))
                    run_ssh.append(time.perf_counter() - t0)
                    assert raw.ok, raw.error
                    t0 = time.perf_counter()
                    t.exec("true")
                    shell.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                raw = local.run(Job(artifact=str(model), timing_inputs=str(tmp / "timing.npz"),
                                    eval_inputs=str(tmp / "eval.npz"), **job_args))
                run_local.append(time.perf_counter() - t0)
                assert raw.ok, raw.error
            local.close()
            print(f"connect          {ms(connect)}")
            print(f"first deploy     {ms(first)}  ({sum(sizes.values()) / 1e3 + 27:.0f} kB incl. runner + watchdog)")
            print(f"repeated deploy  {ms(again)}  (3 files already there)")
            print(f"run, local       {ms(run_local)}")
            print(f"run, ssh         {ms(run_ssh)}")
            print(f"exec `true`      {ms(shell)}  (part of every run over ssh)")
            overhead = statistics.median(again) + statistics.median(run_ssh) - statistics.median(run_local)
            print(f"per-cell SSH overhead (repeated deploy + run difference): {overhead * 1e3:.1f} ms; once per "
                  f"target: connect + first deploy = "
                  f"{(statistics.median(connect) + statistics.median(first)) * 1e3:.1f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
