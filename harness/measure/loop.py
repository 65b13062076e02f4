"""The measuring loop of one target: every ready cell timed and scored, the report saved after each."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Any, Callable

from exporters.base import sha256_file
from harness import __version__
from harness.build.cells import Cell, Prepared
from harness.config.run import RunConfig
from harness.errors import USER_ERRORS
from harness.measure.fold import score, to_measurement
from harness.measure.interleave import Feasible, measure_interleaved
from harness.measure.jobs import cell_job
from harness.measure.metrics import annotate
from harness.measure.results import Measurement, TargetReport
from harness.measure.stats import LatencyStats
from harness.progress import Progress
from targets.base import RUNNER_PATH, Job, Target
from targets.device_lock import DeviceBusy

# Called with the report after each cell, so finished cells survive an interruption (the face passes
# the report stage's writer: the measure stage does not know how reports are rendered).
SaveReport = Callable[[TargetReport], Any]


def measure_target(target: Target, prep: Prepared, cfg: RunConfig, save: SaveReport, progress: Progress,
                   previous: TargetReport | None = None, stop: threading.Event | None = None,
                   feasible: Feasible | None = None) -> TargetReport:
    """Measure every cell on one target and save the report (after each cell, when sequential).

    Interleaved (the default, where the target keeps resident runners): all cells raced in alternating
    blocks (harness.measure.interleave). Sequential: one fresh process per cell, one after another.
    When `stop` is set (an interrupted run) it returns between cells; a cell cut off by it is dropped.
    """
    try:
        target.acquire()  # one job per device across processes: waits for another run, or fails (--no-wait)
    except DeviceBusy:
        raise
    except USER_ERRORS:
        pass  # an unreachable device: the probe below says why, in the report
    desc = target.describe()
    try:
        desc["device"] = target.probe()
    except USER_ERRORS as e:
        desc["device"] = None
        desc["error"] = str(e)
    report = TargetReport(target=desc, task=prep.task, harness_version=__version__,
                          created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if previous is not None:
        # Cells of the earlier run that this one does not cover (--resume --only X) stay in the report.
        covered = {c.key for c in prep.cells}
        report.measurements += [m for m in previous.measurements if m.key not in covered]
    measured = 0
    pending = [c for c in prep.cells if not _reuse(c, previous, prep, report, _fingerprint(c, cfg, target, desc))]
    if cfg.measure.strategy == "interleaved" and target.resident and not desc.get("error"):
        ready = [c for c in pending if c.status == "ready"]
        measured_rows, left = measure_interleaved(target, ready, prep, cfg, report, feasible or _any, progress, stop)
        rows = {m.key: m for m in measured_rows}
        for cell in ready:  # sweeps after the race, each a fresh timing job like a sequential cell's
            if cell.key in rows and rows[cell.key].ok and (stop is None or not stop.is_set()):
                sweep_cell(target, rows[cell.key], cell_job(target, cell, prep, cfg, rows[cell.key].settings.get(
                    "threads") or cell.variant.threads or cfg.measure.threads or target.threads), cfg)
        for cell in left:  # no memory to keep these resident: fresh processes, one after another
            if stop is None or not stop.is_set():
                rows[cell.key] = measure_cell(target, cell, prep, cfg)
                rows[cell.key].settings["strategy"] = "sequential (not enough memory to keep it resident)"
        for cell in pending:
            m = rows.get(cell.key) or _failed_cell(cell, cell.error or "not exported")
            if stop is not None and stop.is_set() and cell.status == "ready":
                continue  # cut off by an interruption: not a result, leave it to --resume
            progress(f"{target.name}: {cell.key}: " + (f"p50 {m.latency_ms['p50']:.3f} ms" if m.ok and m.latency_ms
                                                        else f"{m.status}: {m.error}"))
            m.settings["fingerprint"] = _fingerprint(cell, cfg, target, desc)
            report.measurements.append(m)
        annotate(report, cfg.report.max_accuracy_drop)
        save(report)
        return report
    for cell in pending:
        if stop is not None and stop.is_set():
            break
        if desc.get("error"):
            m = _failed_cell(cell, f"target unavailable: {desc['error']}")
        elif cell.status != "ready":
            m = _failed_cell(cell, cell.error or "not exported")
        else:
            if cfg.measure.cooldown_s and measured:
                time.sleep(cfg.measure.cooldown_s)  # let the device cool so cells start alike
            m = measure_cell(target, cell, prep, cfg)
            measured += 1
        if stop is not None and stop.is_set():
            break  # this cell's runner was killed by the interruption: not a result, leave it to --resume
        progress(f"{target.name}: {cell.key}: " + (f"p50 {m.latency_ms['p50']:.3f} ms" if m.ok and m.latency_ms
                                                    else f"{m.status}: {m.error}"))
        m.settings["fingerprint"] = _fingerprint(cell, cfg, target, desc)
        report.measurements.append(m)
        annotate(report, cfg.report.max_accuracy_drop)
        save(report)  # finished cells survive an interruption
    for r in range(1, cfg.measure.rounds):
        if stop is not None and stop.is_set():
            break
        extra_round(target, report, prep, cfg, reverse=r % 2 == 1, progress=progress)
        save(report)
    if measured > 1 and not (stop is not None and stop.is_set()):
        report.target["stability"] = recheck_first_cell(target, report, prep, cfg)
    annotate(report, cfg.report.max_accuracy_drop)
    return report


def _reuse(cell: Cell, previous: TargetReport | None, prep: Prepared, report: TargetReport, fingerprint: str) -> bool:
    """--resume: keep an earlier run's ok cell of the same artifact, evaluation set and fingerprint (everything
    else that changes a figure), adding it to `report`."""
    old = previous.cell(cell.variant.name, cell.format) if previous else None
    same_eval = old is not None and (old.accuracy or {}).get("n") == prep.n_clean
    if old is not None and old.ok and same_eval and cell.artifact and \
            (old.artifact or {}).get("sha256") == cell.artifact.sha256 and \
            old.settings.get("fingerprint") == fingerprint:
        report.measurements.append(old)
        return True
    return False


DEVICE_IDENTITY = ("hostname", "machine", "os", "cpu_model", "cores", "mem_total_mb", "python", "python_executable",
                   "runtimes", "runner_version", "affinity")


def _fingerprint(cell: Cell, cfg: RunConfig, target: Target, desc: dict[str, Any]) -> str:
    """A hash of everything besides the artifact that changes a cell's figures: measurement settings
    (threads, runs, mode, affinity, strategy, ...), the variant's own, the data settings, the target's
    settings, the device's identity and the runner's code."""
    device = desc.get("device") or {}
    parts = {"measure": asdict(cfg.measure), "variant": asdict(cell.variant), "data": asdict(cfg.data),
             "target": [desc.get("name"), desc.get("kind"), desc.get("host"), target.threads,
                        getattr(target, "affinity", None), target.settings.get("affinity")],
             "device": {k: device.get(k) for k in DEVICE_IDENTITY}, "runner": _runner_sha256()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _runner_sha256() -> str:
    return sha256_file(RUNNER_PATH)


def _any(report: TargetReport, m: Measurement) -> bool:
    return True


STABILITY_LIMIT = 0.10


def extra_round(target: Target, report: TargetReport, prep: Prepared, cfg: RunConfig, reverse: bool,
                progress: Progress) -> None:
    """Time every measured cell once more, in reversed order every other round, and pool the timings.

    A device whose speed drifts during a run then slows every cell alike instead of the last ones.
    """
    cells = {c.key: c for c in prep.cells}
    order = [m for m in report.measurements if m.ok and m.raw_latencies_ms and m.key in cells]
    for m in reversed(order) if reverse else order:
        try:
            raw = target.run(cell_job(target, cells[m.key], prep, cfg, m.settings.get("threads")))
        except USER_ERRORS as e:
            m.flags.append(f"an extra round failed: {e}")
            continue
        if not raw.ok or not raw.data.get("latencies_ns"):
            m.settings.setdefault("round_errors", []).append(raw.error)
            continue
        ns = raw.data["latencies_ns"]
        rounds = m.settings.setdefault("round_p50_ms", [m.latency_ms["p50"]] if m.latency_ms else [])
        rounds.append(LatencyStats.from_ns(ns).p50)
        m.raw_latencies_ms = (m.raw_latencies_ms or []) + [round(x / 1e6, 6) for x in ns]
        m.latency_ms = LatencyStats.from_ns([int(x * 1e6) for x in m.raw_latencies_ms]).to_dict()
        m.settings["runs"] = m.latency_ms["n"]
        progress(f"{target.name}: {m.key}: round {len(rounds)} p50 {rounds[-1]:.3f} ms")


def recheck_first_cell(target: Target, report: TargetReport, prep: Prepared, cfg: RunConfig) -> dict[str, Any] | None:
    """Time the first measured cell again after all the others: did the device's speed change meanwhile?

    Cells are measured one after another, minutes apart; on a shared or throttling device the
    same artifact can then run at a different speed, and cell-to-cell comparisons mislead.
    """
    first = next((m for m in report.measurements if m.ok and m.latency_ms), None)
    cell = next((c for c in prep.cells if first and c.key == first.key and c.artifact), None)
    if first is None or cell is None or cell.artifact is None:
        return None
    try:
        job = cell_job(target, cell, prep, cfg, first.settings.get("threads"))
    except USER_ERRORS as e:
        return {"cell": first.key, "error": str(e)}
    raw = target.run(job)
    if not raw.ok or not raw.data.get("latencies_ns"):
        return {"cell": first.key, "error": raw.error}
    again = LatencyStats.from_ns(raw.data["latencies_ns"])
    p0 = first.latency_ms["p50"]  # type: ignore[index]
    change = again.p50 / p0 - 1
    out = {"cell": first.key, "p50_first_ms": p0, "p50_again_ms": again.p50, "change": change,
           "stable": abs(change) <= STABILITY_LIMIT}
    if not out["stable"]:
        out["warning"] = (f"{first.key} ran {100 * change:+.0f}% ({p0:.3f} -> {again.p50:.3f} ms p50) when timed "
                          f"again after the other cells: the device's speed changed during the run, so "
                          f"differences between cells of that size are not reliable here")
    return out


def _failed_cell(cell: Cell, error: str) -> Measurement:
    return Measurement(variant=cell.variant.name, format=cell.format, status="failed", error=error,
                       artifact=cell.artifact.to_dict() if cell.artifact else None)


def measure_cell(target: Target, cell: Cell, prep: Prepared, cfg: RunConfig) -> Measurement:
    """Deploy one artifact and its inputs, run it, and score the outputs it returns."""
    assert cell.artifact is not None and prep.timing_inputs and prep.eval_inputs
    ms = cfg.measure
    try:
        job = cell_job(target, cell, prep, cfg, cell.variant.threads or ms.threads or target.threads)
        job.eval_inputs = target.deploy(prep.eval_inputs)
    except USER_ERRORS as e:
        return _failed_cell(cell, f"deploy failed: {e}")
    raw = target.run(job)
    accuracy = None
    if raw.ok and raw.outputs:
        try:
            accuracy = score(raw.outputs[0], prep)
        except ValueError as e:  # outputs that cannot be compared must not pass as measured
            return _failed_cell(cell, f"device outputs do not match the reference: {e}")
    m = to_measurement(cell.variant.name, cell.artifact, raw, job, target, accuracy)
    sweep_cell(target, m, job, cfg)
    return m


def sweep_cell(target: Target, m: Measurement, job: Job, cfg: RunConfig) -> None:
    """The sweeps a config asks for, on a measured cell: latency by thread count and by batch size."""
    ms = cfg.measure
    if m.ok and ms.threads_sweep:
        m.threads_sweep = threads_sweep(target, job, ms.threads_sweep)
    if m.ok and ms.batch_sweep:
        m.batch_sweep = batch_sweep(target, job, ms.batch_sweep)


def threads_sweep(target: Target, job: Job, counts: list[int]) -> list[dict[str, Any]]:
    """Latency against thread count: the same timing job (no evaluation) at each count."""
    rows = []
    for n in counts:
        sweep_job = replace(job, eval_inputs=None, threads=n, profile=False)
        raw = target.run(sweep_job)
        if raw.ok and raw.data.get("latencies_ns"):
            st = LatencyStats.from_ns(raw.data["latencies_ns"])
            rows.append({"threads": n, "p50": st.p50, "p50_ci": st.p50_ci, "p99": st.p99, "n": st.n})
        else:
            rows.append({"threads": n, "error": raw.error})
    return rows


def batch_sweep(target: Target, job: Job, sizes: list[int]) -> list[dict[str, Any]]:
    """Latency and throughput against batch size: the same timing job (no evaluation, no profile) with the
    timing inputs repeated to each size; items/s is batch / p50."""
    rows = []
    for n in sizes:
        raw = target.run(replace(job, eval_inputs=None, batch=n, profile=False))
        if raw.ok and raw.data.get("latencies_ns"):
            st = LatencyStats.from_ns(raw.data["latencies_ns"])
            rows.append({"batch": n, "p50": st.p50, "p50_ci": st.p50_ci, "p99": st.p99, "n": st.n,
                         "items_per_s": n / (st.p50 / 1e3) if st.p50 > 0 else None})
        else:
            rows.append({"batch": n, "error": raw.error})
    return rows
