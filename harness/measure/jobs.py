"""Building a timing job: one builder for every timing of a cell (run, extra rounds, re-checks) and for bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.build.cells import Cell, Prepared
from harness.config.run import MeasureConfig, RunConfig
from targets.base import RUNTIME_OPTIONS, Job, Target


def cell_job(target: Target, cell: Cell, prep: Prepared, cfg: RunConfig, threads: Any) -> Job:
    """A cell's timing job, with the artifact and timing inputs deployed (add eval_inputs to score it).

    Deploy failures raise HarnessError. Every timing of a cell (first measurement, extra rounds,
    the stability re-check) goes through here, so all of them run under the same settings.
    """
    assert cell.artifact is not None
    ms = cfg.measure
    affinity = next((a for a in (cell.variant.affinity, ms.affinity, target.settings.get("affinity"))
                     if a is not None), None)
    options = runtime_options(target, {k: getattr(cell.variant, k, None) for k in RUNTIME_OPTIONS})
    return timing_job(target, Path(cell.artifact.path), cell.format, prep.timing_inputs, ms, threads, affinity,
                      options)


def runtime_options(target: Target, variant: dict[str, Any] | None = None) -> dict[str, Any]:
    """The runtime options in force for a cell: the target's, with the variant's (or bench's flags) over them."""
    merged = dict(target.runtime_options)
    merged.update({k: v for k, v in (variant or {}).items() if v is not None})
    return merged


# The evaluation pass (when a job has eval_inputs) runs in batches of this many samples where the model
# allows it and its outputs do not depend on the batch (the runner checks the first batch), else one by one.
EVAL_BATCH = 32


def timing_job(target: Target, artifact: Path, fmt: str, timing_inputs: Path | None, ms: MeasureConfig,
               threads: int | None, affinity: list[int] | None = None, options: dict[str, Any] | None = None,
               batch: int | None = None) -> Job:
    """A timing job for one model file on `target` under measurement settings `ms` (run and bench alike).

    The artifact and the timing inputs are deployed to the target; deploy failures raise its error.
    Runtime options apply to the format they belong to (providers to ONNX, xnnpack to TFLite).
    """
    job = Job(artifact=target.deploy(Path(artifact)), format=fmt,
              timing_inputs=target.deploy(Path(timing_inputs)) if timing_inputs else None,
              runs=ms.runs, warmup=ms.warmup, warmup_until_stable=ms.warmup_until_stable, min_time_s=ms.min_time_s,
              max_time_s=ms.max_time_s, mode=ms.mode, target_rel_ci=ms.target_rel_ci, threads=threads,
              affinity=affinity, timeout_s=ms.timeout_s, profile=ms.profile, batch=batch, eval_batch=EVAL_BATCH)
    return job.with_runtime_options({k: v for k, v in (options or {}).items() if RUNTIME_OPTIONS.get(k) == fmt})
