"""Turn one runner result into a Measurement: latency stats, cold start, memory, accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exporters.base import Artifact
from harness.build.cells import Prepared
from harness.measure.results import Measurement
from harness.measure.stats import LatencyStats, agreement, max_abs_diff, top1, wilson
from targets.base import Job, RawResult, Target


@dataclass
class EvalSet:
    """Evaluation data for accuracy: labels, and the fp32 reference outputs for agreement."""

    name: str  # "clean", "shifted"
    inputs_path: str
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None


def accuracy_of(outputs: np.ndarray, ev: EvalSet) -> dict[str, Any]:
    """Top-1 against labels, agreement and max abs diff against the reference outputs, each with its
    Wilson 95% CI; with both labels and reference, the paired right/wrong counts against the reference."""
    n = int(len(outputs))
    acc: dict[str, Any] = {"n": n}
    if n == 0:
        return acc
    pred = np.argmax(outputs.reshape(n, -1), axis=1)
    if ev.labels is not None:
        acc["top1"] = top1(outputs, ev.labels)
        acc["top1_ci"] = list(wilson(int(np.sum(pred == ev.labels)), n))
    if ev.reference is not None:
        acc["agreement"] = agreement(outputs, ev.reference)
        ref_pred = np.argmax(ev.reference.reshape(len(ev.reference), -1), axis=1)
        acc["agreement_ci"] = list(wilson(int(np.sum(pred == ref_pred)), n))
        acc["max_abs_diff"] = max_abs_diff(outputs.reshape(ev.reference.shape), ev.reference)
        if ev.labels is not None:
            acc["paired"] = paired_counts(pred == ev.labels, ref_pred == ev.labels)
    return acc


def paired_counts(cell_right: np.ndarray, reference_right: np.ndarray) -> dict[str, int]:
    """Right/wrong of the cell and of the fp32 reference on the same samples: the 2x2 table that tests
    an accuracy drop without the raw outputs (`reference_only` = the reference right, the cell wrong)."""
    return {"n": int(len(cell_right)),
            "both_right": int(np.sum(cell_right & reference_right)),
            "reference_only": int(np.sum(~cell_right & reference_right)),
            "cell_only": int(np.sum(cell_right & ~reference_right)),
            "both_wrong": int(np.sum(~cell_right & ~reference_right))}


def to_measurement(variant: str, artifact: Artifact, raw: RawResult, job: Job, target: Target,
                   accuracy: dict[str, Any] | None = None) -> Measurement:
    """Fold a RawResult into the report's cell; a failed run keeps its row with the reason."""
    settings: dict[str, Any] = {"runs": job.runs, "warmup": job.warmup, "threads": job.threads,
                                "min_time_s": job.min_time_s, "mode": job.mode}
    m = Measurement(variant=variant, format=artifact.format, status="failed", artifact=artifact.to_dict(),
                    settings=settings)
    if not raw.ok:
        m.status = "skipped" if raw.status == "skipped" else "failed"
        m.error = raw.error or "failed"
        return m
    d = raw.data
    lat = d.get("latencies_ns") or []
    summary = d.get("latency_summary_ms")  # a native tool's figures, not samples (adb: benchmark_model)
    if not lat and not summary:
        m.error = "runner returned no timings"
        return m
    m.status = "ok"
    m.latency_ms = LatencyStats.from_ns(lat).to_dict() if lat else summary_stats(summary)
    m.raw_latencies_ms = [round(x / 1e6, 6) for x in lat] if lat else None
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
    settings.update(runs=m.latency_ms["n"], threads=d.get("threads"), runtime=d.get("runtime"),
                    runtime_version=d.get("runtime_version"), stopped_by=d.get("stopped_by"),
                    warmup=d.get("warmup_runs", len(d.get("warmup_ns") or [])), providers=d.get("providers"))
    settings.update(d.get("tool_settings") or {})  # what a native tool measured, and what it could not
    m.device_state = {"before": _state(d.get("device")), "during": d.get("device_during"),
                      "after": d.get("device_after")}
    return m


def summary_stats(summary: dict[str, Any]) -> dict[str, Any]:
    """LatencyStats' keys from a tool's summary figures (ms); what it did not print stays None, the p50 CI
    always: without the samples there is nothing to build it from, and it is not invented."""
    out = {k: summary.get(k) for k in LatencyStats.__dataclass_fields__}
    out.update(p50_ci=None, source=summary.get("source"))
    return out


def _state(probe: dict[str, Any] | None) -> dict[str, Any] | None:
    if not probe:
        return None
    keys = ("governor", "cpu_freq_mhz", "temperature_c", "throttled", "loadavg", "affinity")
    return {k: probe.get(k) for k in keys}


def score(outputs: np.ndarray, prep: Prepared) -> dict[str, Any]:
    """Accuracy on the clean test set and, side by side, on its shifted copy (keys suffixed `_shifted`)."""
    assert prep.reference_outputs is not None and prep.labels is not None
    n = prep.n_clean
    outputs = outputs.reshape(len(prep.reference_outputs), -1)
    clean = accuracy_of(outputs[:n], EvalSet("clean", "", prep.labels, prep.reference_outputs[:n]))
    if len(outputs) > n:
        shifted = accuracy_of(outputs[n:], EvalSet("shifted", "", prep.labels, prep.reference_outputs[n:]))
        clean.update({_shifted_key(k): v for k, v in shifted.items() if k != "n"})
    return clean


def _shifted_key(key: str) -> str:
    """top1 -> top1_shifted, top1_ci -> top1_shifted_ci: a CI's name stays next to its figure's."""
    return f"{key[:-3]}_shifted_ci" if key.endswith("_ci") else f"{key}_shifted"
