"""What a run shows while it works, and how long each part took.

On a terminal: a live line (stage, cell i/N, elapsed, ETA) under the finished steps, drawn with
`rich`. Elsewhere (CI, a pipe): plain lines, `[  12.3s] step: detail`. Converter and library
chatter goes to per-step logs under OUT/logs/ (harness.logs), and a failed step's line names its log.
Every step's duration is kept (`timings()`) and written to OUT/timings.json by the run.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, TextIO

from harness.logs import capture, console, log_name

QUIET, NORMAL, VERBOSE = 0, 1, 2


class Progress:
    """Progress lines and step timings. quiet=True prints nothing (tests, API use) but still times.

    verbose=True also shows the converters' own output (still written to the logs) and uses plain
    lines. `logs` (a folder, usually OUT/logs) turns on capture per step; None leaves output alone.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, verbose: bool = False,
                 live: bool | None = None) -> None:
        # The terminal copy survives the fd redirection of captures; a replaced sys.stderr (pytest's
        # capsys, a notebook) is written to as it is.
        self.stream = stream or (console() if sys.stderr is sys.__stderr__ else sys.stderr)
        self.level = QUIET if quiet else VERBOSE if verbose else NORMAL
        self.start = time.monotonic()
        self.logs: Path | None = None
        self._lock = threading.RLock()
        self._steps: list[dict[str, Any]] = []
        self._phases: dict[str, float] = {}
        self._phases_cpu: dict[str, float] = {}  # this process's CPU seconds (all threads; not its children)
        isatty = getattr(self.stream, "isatty", lambda: False)()
        use_live = isatty if live is None else live
        self._live = _LiveBar(self.stream) if use_live and self.level == NORMAL else None

    @property
    def quiet(self) -> bool:
        return self.level == QUIET

    # ------------------------------------------------------------------ lines
    def __call__(self, msg: str) -> None:
        if self.level == QUIET:
            return
        with self._lock:
            if self._live is not None:
                self._live.line(msg)
            else:
                self.stream.write(f"[{time.monotonic() - self.start:7.1f}s] {msg}\n")
                self.stream.flush()

    def log_path(self, name: str) -> Path | None:
        """Where the step `name` logs (OUT/logs/<name>.log), or None when logs are off."""
        return None if self.logs is None else self.logs / log_name(name)

    def tee(self) -> TextIO | None:
        """Where captured converter output is copied as well: the terminal under -v, else nowhere."""
        return self.stream if self.level == VERBOSE else None

    def capture(self, name: str) -> Any:
        """Capture converter output into the log `name` (a context manager; nothing when logs are off)."""
        path = self.log_path(name)
        if path is None:
            return nullcontext(None)
        return capture(path, tee=self.tee())

    # ------------------------------------------------------------------ steps
    @contextmanager
    def step(self, what: str, stage: str | None = None, log: str | None = None) -> Iterator[None]:
        """Announce a step, capture its output into its log, and report its duration (or failure and log)."""
        if self._live is not None:
            self._live.status(what)
        else:
            self(f"{what} ...")
        t0, c0 = time.monotonic(), time.process_time()
        ok = False
        try:
            with self.capture(log or what):
                yield
            ok = True
        finally:
            dt = time.monotonic() - t0
            self._record(stage or what, what, dt, ok, time.process_time() - c0)
            where = self.log_path(log or what)
            tail = "" if ok or where is None else f" (log: {where})"
            self(f"{what}: {'done' if ok else 'FAILED'} in {dt:.1f}s{tail}")

    @contextmanager
    def timed(self, stage: str, name: str, log: str | None = None) -> Iterator[None]:
        """Time (and capture) a part of the work without lines of its own."""
        t0, c0 = time.monotonic(), time.process_time()
        ok = False
        try:
            with self.capture(log or f"{stage}-{name}"):
                yield
            ok = True
        finally:
            self._record(stage, name, time.monotonic() - t0, ok, time.process_time() - c0)

    @contextmanager
    def stage(self, name: str, total: int | None = None, eta_s: float | None = None) -> Iterator[None]:
        """A phase of the run (build, measuring, reports): its wall time, and the live line's i/N and ETA."""
        if self._live is not None:
            self._live.begin(name, total, eta_s)
        elif total or eta_s:
            self(f"{name}: " + ", ".join(x for x in (f"{total} cells" if total else "",
                                                       f"ETA about {eta_s:.0f}s" if eta_s else "") if x))
        t0, c0 = time.monotonic(), time.process_time()
        try:
            with self.capture(name):  # chatter between steps
                yield
        finally:
            with self._lock:
                self._phases[name] = self._phases.get(name, 0.0) + time.monotonic() - t0
                self._phases_cpu[name] = self._phases_cpu.get(name, 0.0) + time.process_time() - c0
            if self._live is not None:
                self._live.end()

    def expect(self, total: int) -> None:
        """The current stage has `total` cells (the live line's N)."""
        if self._live is not None:
            self._live.expect(total)
        else:
            self(f"{total} cells to build")

    def advance(self, n: int = 1) -> None:
        """One more cell of the current stage is done (moves the live line's i/N and ETA)."""
        if self._live is not None:
            self._live.advance(n)

    def close(self) -> None:
        """Stop the live line (the terminal is left as plain text)."""
        if self._live is not None:
            self._live.stop()

    # ------------------------------------------------------------------ timings
    def record(self, stage: str, name: str, seconds: float, ok: bool, cpu_s: float) -> None:
        """A step timed elsewhere (an export in a worker process): kept like the steps timed here."""
        self._record(stage, name, seconds, ok, cpu_s)

    def _record(self, stage: str, name: str, seconds: float, ok: bool, cpu_s: float) -> None:
        with self._lock:
            self._steps.append({"stage": stage, "name": name, "seconds": round(seconds, 3), "ok": ok,
                                "cpu_s": round(cpu_s, 3)})

    def timings(self) -> dict[str, Any]:
        """Durations so far: total, per phase, per stage (summed over its steps), and every step; wall
        seconds, and this process's CPU seconds beside them (less moved by other work on the machine)."""
        with self._lock:
            stages: dict[str, float] = {}
            stages_cpu: dict[str, float] = {}
            for s in self._steps:
                stages[s["stage"]] = round(stages.get(s["stage"], 0.0) + s["seconds"], 3)
                stages_cpu[s["stage"]] = round(stages_cpu.get(s["stage"], 0.0) + s["cpu_s"], 3)
            return {"total_s": round(time.monotonic() - self.start, 3),
                    "phases_s": {k: round(v, 3) for k, v in self._phases.items()},
                    "phases_cpu_s": {k: round(v, 3) for k, v in self._phases_cpu.items()},
                    "stages_s": stages, "stages_cpu_s": stages_cpu, "steps": list(self._steps)}


class _LiveBar:
    """The rich display: finished lines scroll above one live line (stage, step, i/N, elapsed, ETA)."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self.bar = RichProgress(TextColumn("[bold]{task.fields[stage]}[/]"), BarColumn(bar_width=24),
                                MofNCompleteColumn(), TextColumn("{task.fields[step]}", markup=False),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=self.console, transient=True, redirect_stdout=False,
                                redirect_stderr=False, refresh_per_second=4)
        self.task = self.bar.add_task("", total=None, stage="starting", step="")
        self.started = False

    def _ensure(self) -> None:
        if not self.started:
            self.bar.start()
            self.started = True

    def line(self, msg: str) -> None:
        self._ensure()
        self.console.print(msg, markup=False)

    def status(self, step: str) -> None:
        self._ensure()
        self.bar.update(self.task, step=step[:60])

    def begin(self, stage: str, total: int | None, eta_s: float | None) -> None:
        self._ensure()
        # An ETA from a budget: the bar counts seconds of it.
        self.bar.reset(self.task, total=total or eta_s, completed=0, stage=stage,
                       step="" if total or not eta_s else f"seconds of a {eta_s:.0f} s budget")
        self._budget = None if total else eta_s
        self._t0 = time.monotonic()
        if self._budget:
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        budget, t0 = self._budget, self._t0
        while self._budget is budget and self._t0 == t0 and budget:
            self.bar.update(self.task, completed=min(budget, time.monotonic() - t0))
            time.sleep(0.5)

    def expect(self, total: int) -> None:
        self._budget = None
        self.bar.update(self.task, total=total, completed=0)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def end(self) -> None:
        self._budget = None
        self.bar.update(self.task, step="")

    def stop(self) -> None:
        if self.started:
            self.bar.stop()
            self.started = False
