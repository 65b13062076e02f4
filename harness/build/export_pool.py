"""Exports side by side: the converters are single-threaded Python (torch.export, onnxscript, litert-torch's
lowering), so on a machine with two cores two export processes do about twice the work of one (two fp32
TFLite conversions of EfficientNet-Lite0 at once: 17.1 and 17.8 s, against 18.6 s for one alone, here).

Work comes as groups: every export of one model (by content) in one format, since each precision starts from
the same fp32 conversion, which the exporters keep in memory for the next (exporters.base.fp32_once). Groups go
to a pool of fresh ("spawn") processes, started at the first export the cache does not hold so that they
import the converters while the host trains, the largest group first; each export's converter output goes to its own log
(harness.logs.capture, in the worker) and its outcome comes back as plain data. A worker that dies fails
nothing by itself: the groups it had not finished run again here, one after another.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from exporters import EXPORTERS
from harness.errors import ExportError
from harness.logs import capture

WORKERS_ENV = "EDGE_HARNESS_EXPORT_WORKERS"  # 0 or 1: every export in this process; N: at most N processes
MAX_WORKERS = 4  # each holds torch and the converters (1-2 GB)
MIN_GROUPS = 4  # fewer groups than this run here: a worker's start (torch, converters) costs seconds
# Rough cost of a group by format, to start the longest first (TFLite's lowering is the slowest converter).
FORMAT_WEIGHT = {"tflite": 3.0, "onnx": 1.5, "torch": 1.0}


@dataclass
class ExportTask:
    """One export: what the exporter is called with, where its converter output goes, and who asked."""

    fmt: str
    model: Any
    example: tuple[Any, ...]
    precision: str
    path: Path
    kwargs: dict[str, Any]
    log: Path | None = None
    tag: Any = None  # the caller's handle (a cell), not sent to the worker
    cache_to: Path | None = None  # where the caller keeps the artifact once made, not sent either


@dataclass
class ExportOutcome:
    ok: bool
    error: str | None
    seconds: float
    cpu_s: float


def workers_for(groups: int) -> int:
    """How many export processes to use for `groups` groups: none (run here) for a few, else one per core."""
    env = os.environ.get(WORKERS_ENV)
    if env is not None:
        try:
            want = int(env)
        except ValueError:
            want = 1
        return 0 if want <= 1 or groups < 2 else min(want, groups, MAX_WORKERS)
    if groups < MIN_GROUPS:
        return 0
    return max(0, min(os.cpu_count() or 1, groups, MAX_WORKERS)) if (os.cpu_count() or 1) > 1 else 0


def export_one(task: ExportTask, tee: Any = None) -> ExportOutcome:
    """Run one export (here or in a worker), its converter output in its log (and `tee`, under -v); failures
    are outcomes."""
    t0, c0 = time.monotonic(), time.process_time()
    error = None
    try:
        with capture(task.log, tee=tee):
            EXPORTERS[task.fmt](task.model, task.example, task.precision, task.path, **task.kwargs)
    except ExportError as e:
        error = f"export failed: {e}"
    except Exception as e:  # noqa: BLE001 - a converter bug must not stop the other exports
        error = f"export failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return ExportOutcome(error is None, error, time.monotonic() - t0, time.process_time() - c0)


def _run_group(tasks: list[ExportTask]) -> list[ExportOutcome]:
    return [export_one(t) for t in tasks]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: the pool is as wide as the machine


def _warm() -> None:
    """Import the converters (seconds: torch.onnx's onnxscript, litert-torch) while the host still trains."""
    import importlib

    for name in ("onnxscript", "onnxruntime.quantization", "litert_torch"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an export that needs it says so itself
            pass


def group_cost(tasks: list[ExportTask]) -> float:
    return FORMAT_WEIGHT.get(tasks[0].fmt, 1.0) * (1 + 0.2 * (len(tasks) - 1))


class ExportPool:
    """Worker processes for exports, started early (`start`, at the first export the cache does not hold) so
    that they import the converters while the host trains the next recipe; `run` then hands them the groups."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self.workers and self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"),
                                             initializer=_init_worker)
            for _ in range(self.workers):
                self._pool.submit(_warm)

    def close(self, wait: bool = True) -> None:
        """Stop the workers (`wait=False`: let them finish warming up and exit on their own)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def run(self, groups: list[list[ExportTask]], done: Callable[[ExportTask, ExportOutcome], None],
            tee: Any = None) -> int:
        """Run every group's exports, in the workers if the pool was started (else here, one after another),
        calling `done(task, outcome)` for each export as it finishes, in the calling thread; returns the
        number of worker processes used (0: all here)."""
        if self._pool is None:
            for group in groups:
                for task in group:
                    done(task, export_one(task, tee))
            return 0
        left: list[list[ExportTask]] = []
        futures: dict[Future[list[ExportOutcome]], list[ExportTask]] = {}
        for group in sorted(groups, key=group_cost, reverse=True):  # the longest first
            sent = [ExportTask(t.fmt, t.model, t.example, t.precision, t.path, t.kwargs, t.log) for t in group]
            futures[self._pool.submit(_run_group, sent)] = group
        for future in as_completed(futures):
            group = futures[future]
            try:
                outcomes = future.result()
            except BrokenProcessPool:
                left.append(group)
                continue
            except Exception:  # noqa: BLE001 - e.g. a model that does not pickle: it runs here instead
                left.append(group)
                continue
            for task, outcome in zip(group, outcomes, strict=True):
                done(task, outcome)
        for group in left:  # a worker died (or a model would not travel): these run here, one after another
            for task in group:
                done(task, export_one(task, tee))
        return self.workers

    def __enter__(self) -> ExportPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
