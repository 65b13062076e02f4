"""The Python API: the same run as the CLI, with results as objects.

    from harness.api import load_config, run_config
    result = run_config(load_config("my.toml"), out="reports/mine")
    for m in result.reports["local-cpu"].measurements: print(m.key, m.latency_ms["p50"])
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.build.pipeline import Pipeline
from harness.config.run import RunConfig, builtin_config, load_config
from harness.config.targets_file import expand_replicas, load_targets_file, make_target
from harness.errors import USER_ERRORS, HarnessError
from harness.measure.loop import measure_target
from harness.measure.results import Measurement, TargetReport, load_report
from harness.progress import Progress
from harness.report.cells import pick, safe_name
from harness.report.files import write_summary, write_target_report
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


def demo_config(quick: bool = False) -> RunConfig:
    """The shipped demo config (harness/config/builtin/demo.toml or demo-quick.toml)."""
    return load_config(builtin_config("demo-quick" if quick else "demo"))


def guard_out(out: Path, resume: bool, overwrite: bool) -> None:
    existing = list(out.glob("*/report.json")) if out.is_dir() else []
    if existing and not (resume or overwrite):
        raise HarnessError(f"{out} already holds reports ({existing[0].parent.name}/report.json); pass --resume "
                           f"to complete them, --overwrite to replace them, or --out for a new folder")


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
    try:
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
    except (*USER_ERRORS, OSError):
        pass  # the per-target reports are what matters; the summary is re-made by `edge-harness report`
