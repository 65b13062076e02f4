"""The Python API: the same run as the CLI, with results as objects.

    from harness.api import load_config, run_config
    result = run_config(load_config("my.toml"), out="reports/mine")
    for m in result.reports["local-cpu"].measurements: print(m.key, m.latency_ms["p50"])
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.build.pipeline import Pipeline
from harness.config.run import RunConfig, builtin_config, load_config
from harness.config.targets_file import expand_replicas, load_targets_file, make_target
from harness.errors import USER_ERRORS, ConfigError
from harness.measure.loop import measure_target
from harness.measure.results import Measurement, TargetReport, load_report
from harness.measure.task_metrics import metric_function
from harness.progress import Progress
from harness.report.cells import pick, safe_name
from harness.report.files import guard_out, write_summary, write_target_report
from harness.report.recommend import Constraints, check_cell
from targets.base import Target

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


DEMO_TASKS = ("image", "text")


def demo_config(quick: bool = False, task: str = "image") -> RunConfig:
    """The shipped demo config: image (demo.toml, demo-quick.toml) or text (demo-text.toml, demo-text-quick.toml)."""
    if task not in DEMO_TASKS:
        raise ConfigError(f"demo --task {task!r}: choose one of {', '.join(DEMO_TASKS)}")
    stem = "demo" if task == "image" else f"demo-{task}"
    return load_config(builtin_config(f"{stem}-quick" if quick else stem))


def within_limits(report: TargetReport, m: Measurement) -> bool:
    """The recommendation's rule for "can be the pick", which racing uses to stop cells that cannot."""
    return check_cell(report, m, Constraints.of(report)).meets


def run_config(cfg: RunConfig, out: Path | str | None = None, targets_file: Path | None = None,
               target_names: list[str] | None = None, only: list[str] | None = None,
               progress: Progress | None = None, resume: bool = False, overwrite: bool = False,
               cache_dir: Path | None = None) -> RunResult:
    """Run a config end to end and write the reports; returns them as objects."""
    progress = progress or Progress(quiet=True)
    out = Path(out or cfg.out or f"reports/{cfg.name}")
    guard_out(out, resume, overwrite)
    metric_function(cfg.report.metric)  # a user metric that does not import fails now, not after the training
    specs = load_targets_file(targets_file)
    names = expand_replicas(target_names or cfg.targets, specs)  # a lab group of N boards: N targets
    targets: list[Target] = []
    try:
        for n in names:  # unknown names fail before any work
            targets.append(make_target(n, specs))
    except BaseException:
        for t in targets:
            t.close()
        raise
    if progress.logs is None:
        progress.logs = out / "logs"  # converter chatter: one log per step, off the terminal
    try:
        with progress.stage("build"):
            prep = Pipeline(cfg, out, progress, cache_dir).prepare(only=only)
        result = RunResult(out=out)

        stop = threading.Event()

        def one(t: Target) -> TargetReport:
            prev_path = out / safe_name(t.name) / "report.json"
            previous = load_report(prev_path) if resume and prev_path.is_file() else None
            return measure_target(t, prep, cfg, lambda r: write_target_report(r, out), progress, previous, stop,
                                  feasible=within_limits)

        # Devices run concurrently; each one runs its cells one after another.
        pool = ThreadPoolExecutor(max_workers=max(1, len(targets)))
        ready = sum(c.status == "ready" for c in prep.cells)
        try:
            with progress.stage("measuring", eta_s=_measure_eta(cfg, ready)):
                reports = list(pool.map(one, targets))
            with progress.stage("reports"):
                for t, rep in zip(targets, reports):
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
        with progress.stage("reports"):
            result.summary_path = write_summary(list(result.reports.values()), out)
        return result
    finally:
        for t in targets:
            t.close()
        progress.close()
        _write_timings(progress, out)


def _measure_eta(cfg: RunConfig, cells: int) -> float | None:
    """The measuring stage's upper bound in seconds where the config sets one (the racing budget)."""
    ms = cfg.measure
    return float(ms.budget_s) if ms.strategy == "interleaved" and ms.budget_s and cells else None


def _write_timings(progress: Progress, out: Path) -> None:
    """OUT/timings.json: how long each stage and step of this run took (benchmarks/demo_stages.py reads it)."""
    try:
        (out / "timings.json").write_text(json.dumps(progress.timings(), indent=1) + "\n")
    except OSError:
        pass  # the reports matter; a missing timings file only leaves the benchmark without figures


def _summary_from_disk(out: Path) -> None:
    """After an interruption: a summary of whatever reports are on disk, so OUT stays consistent."""
    try:
        reports = [load_report(p) for p in sorted(out.glob("*/report.json"))]
        if reports:
            write_summary(reports, out)
    except (*USER_ERRORS, OSError):
        pass  # the per-target reports are what matters; the summary is re-made by `edge-harness report`
