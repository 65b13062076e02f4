"""Turn one runner result into a Measurement: latency stats, cold start, memory, accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exporters.base import Artifact
from harness.results import Measurement
from harness.stats import LatencyStats, agreement, max_abs_diff, top1
from targets.base import Job, RawResult, Target


@dataclass
class EvalSet:
    """Evaluation data for accuracy: labels, and the fp32 reference outputs for agreement."""

    name: str  # "clean", "shifted"
    inputs_path: str
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None


def accuracy_of(outputs: np.ndarray, ev: EvalSet) -> dict[str, Any]:
    """Top-1 against labels, agreement and max abs diff against the reference outputs."""
    acc: dict[str, Any] = {"n": int(len(outputs))}
    if ev.labels is not None:
        acc["top1"] = top1(outputs, ev.labels)
    if ev.reference is not None:
        acc["agreement"] = agreement(outputs, ev.reference)
        acc["max_abs_diff"] = max_abs_diff(outputs.reshape(ev.reference.shape), ev.reference)
    return acc


def to_measurement(variant: str, artifact: Artifact, raw: RawResult, job: Job, target: Target,
                   accuracy: dict[str, Any] | None = None) -> Measurement:
    """Fold a RawResult into the report's cell; a failed run keeps its row with the reason."""
    settings: dict[str, Any] = {"runs": job.runs, "warmup": job.warmup, "threads": job.threads,
                                "min_time_s": job.min_time_s, "mode": job.mode}
    m = Measurement(variant=variant, format=artifact.format, status="failed", artifact=artifact.to_dict(),
                    settings=settings)
    if not raw.ok:
        m.error = raw.error or "failed"
        return m
    d = raw.data
    lat = d.get("latencies_ns") or []
    if not lat:
        m.error = "runner returned no timings"
        return m
    stats = LatencyStats.from_ns(lat)
    m.status = "ok"
    m.latency_ms = stats.to_dict()
    m.raw_latencies_ms = [round(x / 1e6, 6) for x in lat]
    imp = d.get("runtime_import_ns", 0)
    m.cold_start_ms = {"runtime_import": imp / 1e6, "load": d["load_ns"] / 1e6,
                       "first_inference": d["first_inference_ns"] / 1e6,
                       "total": (imp + d["load_ns"] + d["first_inference_ns"]) / 1e6}
    mem = dict(d.get("memory_mb") or {})
    if mem.get("rss_after_first_inference") is not None and mem.get("rss_after_load") is not None:
        mem["inference_increase"] = mem["rss_after_first_inference"] - mem["rss_after_load"]
    if mem.get("rss_after_load") is not None and mem.get("rss_before_load") is not None:
        mem["load_increase"] = mem["rss_after_load"] - mem["rss_before_load"]
    m.memory_mb = mem
    m.accuracy = accuracy
    settings.update(runs=stats.n, threads=d.get("threads"), runtime=d.get("runtime"),
                    runtime_version=d.get("runtime_version"), stopped_by=d.get("stopped_by"),
                    warmup=len(d.get("warmup_ns") or []), providers=d.get("providers"))
    m.device_state = {"before": _state(d.get("device")), "during": d.get("device_during"),
                      "after": d.get("device_after")}
    return m


def _state(probe: dict[str, Any] | None) -> dict[str, Any] | None:
    if not probe:
        return None
    keys = ("governor", "cpu_freq_mhz", "temperature_c", "throttled", "loadavg", "affinity")
    return {k: probe.get(k) for k in keys}
