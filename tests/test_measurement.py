"""Measurement protocol: adaptive stopping, stable warm-up, threads and affinity applied, memory order."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from targets import Job, LocalTarget, RawResult


@pytest.fixture(scope="module")
def medium_onnx(tmp_path_factory):
    """A conv net of about 1-3 ms per image on one core, so timings are not all overhead."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3)).eval()
    path = tmp_path_factory.mktemp("m") / "medium.onnx"
    torch.onnx.export(m, (torch.randn(2, 3, 64, 64),), str(path), dynamo=True, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path


@pytest.fixture()
def inputs(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, input=np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))
    return p


def _run(job: Job, **target: object) -> RawResult:
    """One job on a fresh local-cpu target."""
    with LocalTarget("local-cpu", **target) as t:  # type: ignore[arg-type]
        return t.run(job)


def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def test_adaptive_stops_on_precision_for_a_stable_model(medium_onnx, inputs):
    raw = _run(Job(artifact=str(medium_onnx), format="onnx", timing_inputs=str(inputs), runs=20, warmup=5,
                   min_time_s=0.0, mode="adaptive", target_rel_ci=0.05, max_time_s=20.0), threads=1)
    assert raw.ok, raw.error
    assert raw.data["stopped_by"] == "precision"
    lat = sorted(raw.data["latencies_ns"])
    from harness.measure.stats import median_ci

    lo, hi = median_ci(lat)
    assert (hi - lo) / lat[len(lat) // 2] <= 0.05


def test_adaptive_stops_on_the_budget_for_a_noisy_model(medium_onnx, inputs):
    """Two busy processes share the 2 cores with the runner: the CI cannot get to 0.1% in 1.5 s."""
    stop = time.time() + 8
    burners = [mp.Process(target=_burn, args=(stop,)) for _ in range(max(2, os.cpu_count() or 2))]
    for b in burners:
        b.start()
    try:
        raw = _run(Job(artifact=str(medium_onnx), format="onnx", timing_inputs=str(inputs), runs=10, warmup=2,
                       min_time_s=0.0, mode="adaptive", target_rel_ci=0.001, max_time_s=1.5), threads=2)
    finally:
        for b in burners:
            b.terminate()
            b.join()
    assert raw.ok, raw.error
    assert raw.data["stopped_by"] == "budget"


def test_warmup_until_stable_runs_at_least_the_minimum(medium_onnx, inputs):
    raw = _run(Job(artifact=str(medium_onnx), format="onnx", timing_inputs=str(inputs), runs=5, warmup=12,
                   warmup_until_stable=True, min_time_s=0.0), threads=1)
    assert raw.ok and 12 <= len(raw.data["warmup_ns"]) <= 200


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_threads_and_affinity_are_applied_and_recorded(medium_onnx, inputs):
    raw = _run(Job(artifact=str(medium_onnx), format="onnx", timing_inputs=str(inputs), runs=5,
                   min_time_s=0.0, threads=1, affinity=[0]))
    assert raw.ok, raw.error
    assert raw.data["threads"] == 1
    assert raw.data["device"]["affinity"] == [0]  # read back from the kernel inside the runner


def test_memory_fields_are_present_and_ordered(medium_onnx, inputs):
    raw = _run(Job(artifact=str(medium_onnx), format="onnx", timing_inputs=str(inputs), runs=5,
                   min_time_s=0.0), threads=1)
    mem = raw.data["memory_mb"]
    for k in ("rss_before_load", "rss_after_load", "rss_after_first_inference", "peak_rss", "method"):
        assert k in mem
    assert mem["rss_before_load"] <= mem["rss_after_load"] <= mem["peak_rss"]
    assert mem["rss_after_first_inference"] <= mem["peak_rss"]
