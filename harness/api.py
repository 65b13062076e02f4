"""The Python API: the same run as the CLI, with results as objects.

    from harness.api import load_config, run_config
    result = run_config(load_config("my.toml"), out="reports/mine")
    for m in result.reports["local-cpu"].measurements: print(m.key, m.latency_ms["p50"])
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.config import RunConfig, builtin_config, load_config
from harness.errors import HarnessError
from harness.measure import accuracy_of, to_measurement
from harness.metrics import annotate
from harness.pipeline import Cell, Pipeline, Prepared
from harness.progress import Progress
from harness.report import safe_name, write_summary, write_target_report
from harness.results import Measurement, TargetReport, load_report
from harness.stats import LatencyStats
from harness.targets_file import load_targets_file, make_target
from targets.base import Job, Target

__all__ = ["RunResult", "demo_config", "load_config", "run_config"]


@dataclass
class RunResult:
    """What a run produced: one TargetReport per target, and where the files are."""

    out: Path
    reports: dict[str, TargetReport] = field(default_factory=dict)
    report_dirs: dict[str, Path] = field(default_factory=dict)
    summary_path: Path | None = None

    @property
    def any_ok(self) -> bool:
        return any(m.ok for r in self.reports.values() for m in r.measurements)

    def summary_text(self) -> str:
        from harness.report import pick

        lines = []
        for name, r in self.reports.items():
            ok = sum(m.ok for m in r.measurements)
            best, why = pick(r, r.task.get("max_accuracy_drop", 0.01))
            lines.append(f"{name}: {ok}/{len(r.measurements)} cells measured; pick: "
                         f"{best.key if best else 'none'} ({why})")
            lines.append(f"  report: {self.report_dirs[name] / 'report.md'}")
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        return "\n".join(lines)


def demo_config(quick: bool = False) -> RunConfig:
    """The shipped demo config (harness/configs/demo.toml or demo-quick.toml)."""
    return load_config(builtin_config("demo-quick" if quick else "demo"))


def guard_out(out: Path, resume: bool, overwrite: bool) -> None:
    existing = list(out.glob("*/report.json")) if out.is_dir() else []
    if existing and not (resume or overwrite):
        raise HarnessError(f"{out} already holds reports ({existing[0].parent.name}/report.json); pass --resume "
                           f"to complete them, --overwrite to replace them, or --out for a new folder")


def measure_target(target: Target, prep: Prepared, cfg: RunConfig, out: Path, progress: Progress,
                   previous: TargetReport | None = None, stop: threading.Event | None = None) -> TargetReport:
    """Measure every cell on one target, one job at a time, saving the report after each cell.

    When `stop` is set (an interrupted run) it returns between cells; a cell cut off by it is dropped.
    """
    desc = target.describe()
    try:
        desc["device"] = target.probe()
    except HarnessError as e:
        desc["device"] = None
        desc["error"] = str(e)
    report = TargetReport(target=desc, task=prep.task, harness_version=__version__,
                          created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if previous is not None:
        # Cells of the earlier run that this one does not cover (--resume --only X) stay in the report.
        covered = {c.key for c in prep.cells}
        report.measurements += [m for m in previous.measurements if m.key not in covered]
    measured = 0
    for cell in prep.cells:
        if stop is not None and stop.is_set():
            break
        old = previous.cell(cell.variant.name, cell.format) if previous else None
        same_eval = old is not None and (old.accuracy or {}).get("n") == prep.n_clean
        if old is not None and old.ok and same_eval and cell.artifact and \
                (old.artifact or {}).get("sha256") == cell.artifact.sha256:
            report.measurements.append(old)
            continue
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
        report.measurements.append(m)
        annotate(report, cfg.report.max_accuracy_drop)
        write_target_report(report, out)  # finished cells survive an interruption
    for r in range(1, cfg.measure.rounds):
        if stop is not None and stop.is_set():
            break
        extra_round(target, report, prep, cfg, reverse=r % 2 == 1, progress=progress)
        write_target_report(report, out)
    if measured > 1 and not (stop is not None and stop.is_set()):
        report.target["stability"] = recheck_first_cell(target, report, prep, cfg)
    annotate(report, cfg.report.max_accuracy_drop)
    return report


STABILITY_LIMIT = 0.10


def _timing_job(target: Target, cell: Cell, prep: Prepared, cfg: RunConfig, threads: Any) -> Job:
    """A cell's timing job, with the artifact and timing inputs deployed (add eval_inputs to score it).

    Deploy failures raise HarnessError. Every timing of a cell (first measurement, extra rounds,
    the stability re-check) goes through here, so all of them run under the same settings.
    """
    assert cell.artifact is not None
    ms = cfg.measure
    affinity = next((a for a in (cell.variant.affinity, ms.affinity, target.settings.get("affinity"))
                     if a is not None), None)
    return Job(artifact=target.deploy(Path(cell.artifact.path)), format=cell.format,
               timing_inputs=target.deploy(prep.timing_inputs) if prep.timing_inputs else None,
               runs=ms.runs, warmup=ms.warmup, warmup_until_stable=ms.warmup_until_stable, min_time_s=ms.min_time_s,
               max_time_s=ms.max_time_s, mode=ms.mode, target_rel_ci=ms.target_rel_ci, threads=threads,
               affinity=affinity, timeout_s=ms.timeout_s)


def extra_round(target: Target, report: TargetReport, prep: Prepared, cfg: RunConfig, reverse: bool,
                progress: Progress) -> None:
    """Time every measured cell once more, in reversed order every other round, and pool the timings.

    A device whose speed drifts during a run then slows every cell alike instead of the last ones.
    """
    cells = {c.key: c for c in prep.cells}
    order = [m for m in report.measurements if m.ok and m.raw_latencies_ms and m.key in cells]
    for m in reversed(order) if reverse else order:
        try:
            raw = target.run(_timing_job(target, cells[m.key], prep, cfg, m.settings.get("threads")))
        except HarnessError as e:
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
        job = _timing_job(target, cell, prep, cfg, first.settings.get("threads"))
    except HarnessError as e:
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
        job = _timing_job(target, cell, prep, cfg, cell.variant.threads or ms.threads or target.threads)
        job.eval_inputs = target.deploy(prep.eval_inputs)
    except HarnessError as e:
        return _failed_cell(cell, f"deploy failed: {e}")
    raw = target.run(job)
    accuracy = None
    if raw.ok and raw.outputs:
        try:
            accuracy = score(raw.outputs[0], prep)
        except ValueError as e:  # outputs that cannot be compared must not pass as measured
            return _failed_cell(cell, f"device outputs do not match the reference: {e}")
    m = to_measurement(cell.variant.name, cell.artifact, raw, job, target, accuracy)
    if m.ok and ms.threads_sweep:
        m.threads_sweep = threads_sweep(target, job, ms.threads_sweep)
    return m


def threads_sweep(target: Target, job: Job, counts: list[int]) -> list[dict[str, Any]]:
    """Latency against thread count: the same timing job (no evaluation) at each count."""
    rows = []
    for n in counts:
        sweep_job = replace(job, eval_inputs=None, threads=n)
        raw = target.run(sweep_job)
        if raw.ok and raw.data.get("latencies_ns"):
            st = LatencyStats.from_ns(raw.data["latencies_ns"])
            rows.append({"threads": n, "p50": st.p50, "p50_ci": st.p50_ci, "p99": st.p99, "n": st.n})
        else:
            rows.append({"threads": n, "error": raw.error})
    return rows


def score(outputs: np.ndarray, prep: Prepared) -> dict[str, Any]:
    """Accuracy on the clean test set and, side by side, on its shifted copy."""
    from harness.measure import EvalSet

    assert prep.reference_outputs is not None and prep.labels is not None
    n = prep.n_clean
    outputs = outputs.reshape(len(prep.reference_outputs), -1)
    clean = accuracy_of(outputs[:n], EvalSet("clean", "", prep.labels, prep.reference_outputs[:n]))
    if len(outputs) > n:
        shifted = accuracy_of(outputs[n:], EvalSet("shifted", "", prep.labels, prep.reference_outputs[n:]))
        clean.update({f"{k}_shifted": v for k, v in shifted.items() if k != "n"})
    return clean


def run_config(cfg: RunConfig, out: Path | str | None = None, targets_file: Path | None = None,
               target_names: list[str] | None = None, only: list[str] | None = None,
               progress: Progress | None = None, resume: bool = False, overwrite: bool = False,
               cache_dir: Path | None = None) -> RunResult:
    """Run a config end to end and write the reports; returns them as objects."""
    progress = progress or Progress(quiet=True)
    out = Path(out or cfg.out or f"reports/{cfg.name}")
    guard_out(out, resume, overwrite)
    specs = load_targets_file(targets_file)
    names = target_names or cfg.targets
    targets: list[Target] = []
    try:
        for n in names:  # unknown names fail before any work
            targets.append(make_target(n, specs))
    except BaseException:
        for t in targets:
            t.close()
        raise
    try:
        prep = Pipeline(cfg, out, progress, cache_dir).prepare(only=only)
        result = RunResult(out=out)

        stop = threading.Event()

        def one(t: Target) -> TargetReport:
            prev_path = out / safe_name(t.name) / "report.json"
            previous = load_report(prev_path) if resume and prev_path.is_file() else None
            return measure_target(t, prep, cfg, out, progress, previous, stop)

        # Devices run concurrently; each one runs its cells one after another.
        pool = ThreadPoolExecutor(max_workers=max(1, len(targets)))
        try:
            for t, rep in zip(targets, pool.map(one, targets)):
                result.reports[t.name] = rep
                result.report_dirs[t.name] = write_target_report(rep, out)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: the finished cells are on disk already; stop the running jobs
            # (closing a target kills its runner) so the workers return now, not after every cell.
            stop.set()
            for t in targets:
                t.close()
            _summary_from_disk(out)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        result.summary_path = write_summary(list(result.reports.values()), out)
        return result
    finally:
        for t in targets:
            t.close()


def _summary_from_disk(out: Path) -> None:
    """After an interruption: a summary of whatever reports are on disk, so OUT stays consistent."""
    try:
        reports = [load_report(p) for p in sorted(out.glob("*/report.json"))]
        if reports:
            write_summary(reports, out)
    except (HarnessError, OSError):
        pass  # the per-target reports are what matters; the summary is re-made by `edge-harness report`
