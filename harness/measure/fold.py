"""Turn one runner result into a Measurement: latency stats, cold start, memory, accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exporters.base import Artifact
from harness.build.cells import Prepared
from harness.measure.results import Measurement
from harness.measure.stats import LatencyStats, agreement, max_abs_diff, top1, wilson
from harness.measure.task_metrics import score_metric
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
    Wilson 95% CI; with both labels and reference, the paired right/wrong counts against the reference.
    Top-1 and agreement need one score per class and integer labels (not regression)."""
    n = int(len(outputs))
    acc: dict[str, Any] = {"n": n}
    if n == 0:
        return acc
    scores = outputs.reshape(n, -1)
    classes = scores.shape[1] > 1
    labels = ev.labels if ev.labels is not None and classes and ev.labels.ndim == 1 \
        and np.issubdtype(ev.labels.dtype, np.integer) else None
    pred = np.argmax(scores, axis=1)
    if labels is not None:
        acc["top1"] = top1(outputs, labels)
        acc["top1_ci"] = list(wilson(int(np.sum(pred == labels)), n))
    if ev.reference is not None:
        acc["max_abs_diff"] = max_abs_diff(outputs.reshape(ev.reference.shape), ev.reference)
        if classes:
            acc["agreement"] = agreement(outputs, ev.reference)
            ref_pred = np.argmax(ev.reference.reshape(len(ev.reference), -1), axis=1)
            acc["agreement_ci"] = list(wilson(int(np.sum(pred == ref_pred)), n))
            if labels is not None:
                acc["paired"] = paired_counts(pred == labels, ref_pred == labels)
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
                    warmup=d.get("warmup_runs", len(d.get("warmup_ns") or [])), providers=d.get("providers"),
                    # timed_shapes: as fed (a fixed-length model pads a shorter sequence)
                    timed_shapes=d.get("timed_shapes"), eval_batch=d.get("eval_batch"))
    settings.update(d.get("tool_settings") or {})  # what a native tool measured, and what it could not
    settings.update(d.get("runtime_options") or {})  # the runtime options in force, as the runner applied them
    if d.get("batch"):
        settings["batch"] = d["batch"]
    m.op_profile = with_latency_ratio(d.get("op_profile"), m.latency_ms)
    m.device_state = {"before": _state(d.get("device")), "during": d.get("device_during"),
                      "after": d.get("device_after")}
    return m


def with_latency_ratio(profile: dict[str, Any] | None, latency: dict[str, Any] | None) -> dict[str, Any] | None:
    """An op profile with its operator time as a fraction of the cell's mean latency (how much of a run the
    operators explain; the rest is the runtime's and the runner's own work, or drift between the passes)."""
    if not profile or profile.get("op_ms_per_run") is None:
        return profile
    out = dict(profile)
    mean = (latency or {}).get("mean")
    out["vs_mean_latency"] = round(out["op_ms_per_run"] / mean, 4) if mean else None
    bare = out.get("unprofiled_ms_per_run")
    out["vs_unprofiled"] = round(out["op_ms_per_run"] / bare, 4) if bare else None
    p50, median = (latency or {}).get("p50"), out.get("op_ms_median_run")
    out["median_vs_p50_latency"] = round(median / p50, 4) if p50 and median is not None else None
    caveat = profile_caveat(out)
    if caveat:
        out["caveat"] = caveat
    return out


PROFILE_AGREEMENT = 0.20  # operator time within this of the unprofiled runs of the same pass: a faithful profile


def profile_caveat(p: dict[str, Any]) -> str | None:
    """Why a profile's absolute times do not add up to its run (its shares may still rank the operators)."""
    r = p.get("vs_unprofiled")
    if r is None or abs(r - 1.0) <= PROFILE_AGREEMENT:
        return None
    if r > 1.0 and "onnxruntime" in str(p.get("source")):
        return (f"the operators add up to {r:.2f}x the unprofiled runs: onnxruntime's profiler slows the kernels it "
                f"times beyond its per-node cost (multi-threaded kernels most: its thread pool logs each parallel "
                f"section, microsoft/onnxruntime#20238); compare shares, or profile at --threads 1 for absolute times")
    return (f"the operators add up to {r:.2f}x the unprofiled runs of the same pass: the device's speed moved "
            f"between the two blocks, or the profiler slows these kernels")


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
    mc = getattr(prep, "task", {}).get("metric")  # None: top-1 only (a bare Prepared, older callers)
    clean = accuracy_of(outputs[:n], EvalSet("clean", "", prep.labels, prep.reference_outputs[:n]))
    if mc:  # the configured metric, and its paired drop against the reference (see task_metrics)
        clean["metric"] = score_metric(mc, outputs[:n], prep.labels, prep.reference_outputs[:n])
        mc.setdefault("reference", clean["metric"].get("reference"))  # the report's task shows the reference's
        mc["key"] = mc.get("key") or clean["metric"]["result"]["key"]  # a user metric's deciding key, by name
    if len(outputs) > n:
        shifted = accuracy_of(outputs[n:], EvalSet("shifted", "", prep.labels, prep.reference_outputs[n:]))
        if mc:
            shifted["metric"] = score_metric(mc, outputs[n:], prep.labels, prep.reference_outputs[n:], seed=1)
        clean.update({_shifted_key(k): v for k, v in shifted.items() if k != "n"})
    return clean


def _shifted_key(key: str) -> str:
    """top1 -> top1_shifted, top1_ci -> top1_shifted_ci: a CI's name stays next to its figure's."""
    return f"{key[:-3]}_shifted_ci" if key.endswith("_ci") else f"{key}_shifted"
