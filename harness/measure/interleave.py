"""Interleaved, raced measurement of one target's cells: resident runners timed in alternating blocks.

Every ready cell's model is loaded once in its own runner process: load and first inference (the cold
start) one runner at a time, then the evaluation passes on command (`start_lanes`). Then, round after
round, each cell still in the race times one short block, in a random order per round, one process
active at a time: a device that slows down (another process, heat) slows every cell of that round
alike, and two cells' block medians of the same round pair up into a ratio (harness.measure.stats.paired_ratio).

Racing: after `min_rounds` (at least 8), a cell whose paired ratio to the best cell that meets the limits is
above 1 with 99% confidence cannot be the pick and stops; the rounds end when every other cell
has stopped (the pick is separated), at `max_rounds`, or when `budget_s` is spent.
"""

from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness.build.cells import Cell, Prepared
from harness.config.run import RunConfig
from harness.errors import USER_ERRORS
from harness.measure.fold import score, to_measurement
from harness.measure.jobs import cell_job
from harness.measure.results import Measurement, TargetReport
from harness.measure.stats import paired_ratio
from harness.progress import Progress
from targets.base import Job, RawResult, Target
from targets.resident import Resident

RACING_CONFIDENCE = 0.99  # stricter than the report's 95%: a cell stopped early is never looked at again
# The median's order-statistic interval has its nominal 99% coverage from 8 paired rounds on (with
# fewer it is the range of the ratios, whose coverage is 1 - 2 / 2**n: 87.5% at 4 rounds).
RACING_MIN_ROUNDS = 8
MAX_BLOCK_RUNS = 5000
DISCARD_MAX_S = 0.02
MEM_RESERVE_MB = 512  # never start another resident runner with less than this available
# After a block, wait until that process stops using CPU before the next cell's block starts: runtimes'
# worker threads spin for a while after their last run (onnxruntime's pool: about 55 ms here, with pauses
# of several ms in between: a 3 ms quiet window let ~30 ms of its spinning fall into the next block), and
# that must not fall into another cell's block. Quiet means no CPU for SETTLE_QUIET_S by the runner's
# per-thread nanosecond counters (local runners), or for two clock ticks where only ticks are readable.
SETTLE_QUIET_S = 0.010
SETTLE_POLL_S = 0.002
SETTLE_MAX_S = 0.3

# Whether a measured cell can be the pick (meets size, memory and accuracy limits); the face passes
# the report stage's rule, so racing and the recommendation agree on what "within the limits" means.
Feasible = Callable[[TargetReport, Measurement], bool]


@dataclass
class Lane:
    """One cell in the race: its resident runner, the blocks it timed, and why it stopped."""

    cell: Cell
    job: Job
    runner: Resident
    initial: RawResult
    accuracy: dict[str, Any] | None
    runs: int = 0  # timed runs per block, set from a calibration block
    discard: int = 0  # untimed runs at the start of each block, likewise
    blocks: list[list[int] | None] = field(default_factory=list)
    stopped: str | None = None
    idle_cpu_s: float = 0.0  # CPU this process used while another cell was being timed
    idle_wall_s: float = 0.0

    @property
    def block_p50_ms(self) -> list[float | None]:
        return [float(np.median(b)) / 1e6 if b else None for b in self.blocks]

    def pooled_ns(self) -> list[int]:
        return [x for b in self.blocks if b for x in b]


def lifetime_s(n_cells: int, cfg: RunConfig) -> float:
    """How long a resident runner may live at most (the SSH watchdog's deadline): every cell's load and
    warm-up block, the rounds' budget, and the last round, which may overrun it (each step within timeout_s)."""
    ms = cfg.measure
    return ms.budget_s + 3 * max(1, n_cells) * ms.timeout_s


MAX_EVAL_PARALLEL = 4  # evaluation passes at once, at most: as many as the device's cores hold at the cells' threads


def start_lanes(target: Target, cells: list[Cell], prep: Prepared, cfg: RunConfig, progress: Progress,
                stop: threading.Event | None) -> tuple[list[Lane], list[Measurement], list[Cell]]:
    """Load every cell in its own resident runner; cells that fail to load become failed rows.

    Each runner's load and first inference (its cold start) run alone, one runner after another; then the
    evaluation passes run side by side where the device's cores hold their threads (outputs do not depend on
    what else runs; on 2 cores at 2 threads they run one at a time: two onnxruntime passes at once, each
    pool spinning, took 14.9 s against 9.2 s one after the other here).

    Resident runners cost memory (tens to hundreds of MB each): once MemAvailable of the device (read
    where the runners live: this machine, or the SSH device's /proc/meminfo) falls below twice the
    largest runner's peak (and MEM_RESERVE_MB), the remaining cells are returned as `left`, to be timed
    one after another in fresh processes instead.
    """
    opened, failed, left = [], [], []
    ms = cfg.measure
    for i, cell in enumerate(cells):
        if stop is not None and stop.is_set():
            break
        free = opened[-1][2].mem_available_mb() if opened else None
        biggest = max((float((r.initial.data.get("memory_mb") or {}).get("peak_rss") or 0) for _, _, r in opened),
                      default=0.0)
        if free is not None and opened and free < max(MEM_RESERVE_MB, 2 * biggest):
            progress(f"{target.name}: {free:.0f} MB available: the other {len(cells) - i} cells are timed "
                     f"sequentially (not resident)")
            left = cells[i:]
            break
        try:
            job = cell_job(target, cell, prep, cfg, cell.variant.threads or ms.threads or target.threads)
            job.eval_inputs = target.deploy(prep.eval_inputs) if prep.eval_inputs else None
            job.runs, job.warmup = 0, 0  # the blocks do the timing
            job.defer_eval = job.eval_inputs is not None
            runner = target.open_resident(job, lifetime_s(len(cells), cfg))
        except USER_ERRORS as e:
            failed.append(failed_cell(cell, f"deploy failed: {e}"))
            continue
        if not runner.initial.ok:
            runner.close()
            failed.append(to_measurement(cell.variant.name, cell.artifact, runner.initial, job, target))  # type: ignore[arg-type]
            continue
        opened.append((cell, job, runner))
    if any(job.defer_eval for _, job, _ in opened):
        progress(f"{target.name}: {len(opened)} models loaded, their cold starts timed one at a time; "
                 f"evaluation passes ...")
    results = evaluations(opened, ms.timeout_s, eval_parallel(opened))
    lanes = []
    for (cell, job, runner), raw in zip(opened, results, strict=True):
        if not raw.ok:
            runner.close()
            failed.append(to_measurement(cell.variant.name, cell.artifact, raw, job, target))  # type: ignore[arg-type]
            continue
        try:
            accuracy = score(raw.outputs[0], prep) if raw.outputs else None
        except ValueError as e:  # outputs that cannot be compared must not pass as measured
            runner.close()
            failed.append(failed_cell(cell, f"device outputs do not match the reference: {e}"))
            continue
        lanes.append(Lane(cell, job, runner, raw, accuracy))
        progress(f"{target.name}: {cell.key}: loaded (resident runner)")
    return lanes, failed, left


def eval_parallel(opened: list[tuple[Cell, Job, Resident]]) -> int:
    """How many evaluation passes fit the device at once: its cores (from the runner's probe) over the
    cells' largest thread count."""
    if not opened:
        return 1
    cores = int((opened[0][2].initial.data.get("device") or {}).get("cores") or 1)
    threads = max(int(job.threads or cores) for _, job, _ in opened)
    return max(1, min(MAX_EVAL_PARALLEL, cores // max(1, threads)))


def evaluations(opened: list[tuple[Cell, Job, Resident]], timeout_s: float, parallel: int = 1) -> list[RawResult]:
    """Each opened runner's result after its deferred evaluation pass (its initial one if it has none)."""
    def one(item: tuple[Cell, Job, Resident]) -> RawResult:
        _, job, runner = item
        if not job.defer_eval:
            return runner.initial
        try:
            return runner.evaluate(timeout_s)
        except USER_ERRORS as e:
            return RawResult.failed(f"evaluation failed: {e}")

    if parallel <= 1 or len(opened) <= 1:
        return [one(item) for item in opened]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, opened))


def calibrate(lane: Lane, cfg: RunConfig) -> None:
    """Warm the model up and size its blocks: at least block_runs runs, lasting about block_min_s."""
    ms = cfg.measure
    warm = lane.runner.block(max(ms.block_runs, ms.warmup), discard=ms.warmup, timeout_s=ms.timeout_s)
    per_run_s = float(np.median(warm)) / 1e9 if warm else 0.0
    want = math.ceil(ms.block_min_s / per_run_s) if per_run_s > 0 else ms.block_runs
    lane.runs = int(min(MAX_BLOCK_RUNS, max(ms.block_runs, want)))
    # A slow model's caches are warm after a run or two; its discarded runs need not cost more than
    # DISCARD_MAX_S a block (10 runs of a 90 ms model would be most of its block).
    fit = math.ceil(DISCARD_MAX_S / per_run_s) if per_run_s > 0 else ms.block_discard
    lane.discard = int(min(ms.block_discard, max(min(2, ms.block_discard), fit)))


def race(lanes: list[Lane], cfg: RunConfig, feasible: Feasible, target: Target, report: TargetReport,
         progress: Progress, stop: threading.Event | None, seed: int = 0) -> dict[str, Any]:
    """Time the lanes round after round in random order; returns how the rounds went (for the report)."""
    ms = cfg.measure
    rng = random.Random(seed)
    t_start = time.monotonic()
    stopped_by, rounds = "max_rounds", 0
    for r in range(ms.max_rounds):
        if stop is not None and stop.is_set():
            stopped_by = "interrupted"
            break
        active = [ln for ln in lanes if ln.stopped is None]
        order = active[:]
        rng.shuffle(order)
        for ln in lanes:
            ln.blocks.append(None)
        for ln in order:
            others = [o for o in active if o is not ln]
            before = [o.runner.cpu_seconds() for o in others]
            t0 = time.monotonic()
            try:
                ln.blocks[r] = ln.runner.block(ln.runs, discard=ln.discard, timeout_s=ms.timeout_s)
            except USER_ERRORS as e:
                ln.stopped = f"failed in round {r + 1}: {e}"
                continue
            wall = time.monotonic() - t0
            settle(ln.runner)
            for o, b in zip(others, before, strict=True):
                after = o.runner.cpu_seconds()
                if b is not None and after is not None:
                    o.idle_cpu_s += max(0.0, after - b)  # a thread that ended takes its time out of the sum
                    o.idle_wall_s += wall
        rounds = r + 1
        if ms.racing and rounds >= max(ms.min_rounds, RACING_MIN_ROUNDS):
            decided = cut_losers(lanes, feasible, target, report, rounds, cfg.report.tie_margin)
            for ln in decided:
                progress(f"{target.name}: {ln.cell.key}: {ln.stopped}")
            if sum(ln.stopped is None for ln in lanes) <= 1:
                stopped_by = "separated"
                break
            if equivalent(lanes, cfg.report.tie_margin):
                stopped_by = "equivalent"
                break
        if time.monotonic() - t_start > ms.budget_s:
            stopped_by = "budget"
            break
    idle = [ln.idle_cpu_s / ln.idle_wall_s for ln in lanes if ln.idle_wall_s > 0]
    return {"strategy": "interleaved", "rounds": rounds, "max_rounds": ms.max_rounds, "min_rounds": ms.min_rounds,
            "stopped_by": stopped_by, "budget_s": ms.budget_s, "elapsed_s": round(time.monotonic() - t_start, 3),
            "block_min_s": ms.block_min_s, "block_discard": ms.block_discard, "racing": ms.racing,
            "racing_confidence": RACING_CONFIDENCE, "order_seed": seed,
            "idle_cpu_max_fraction": max(idle) if idle else None}


def settle(runner: Resident) -> None:
    """Return once `runner` has used no CPU for SETTLE_QUIET_S (twice the CPU clock's step where that is
    coarser), polled every SETTLE_POLL_S (or every step); at most SETTLE_MAX_S."""
    step = runner.cpu_resolution_s()
    quiet, poll = max(SETTLE_QUIET_S, 2 * step), max(SETTLE_POLL_S, step)
    deadline = time.monotonic() + SETTLE_MAX_S
    now = runner.cpu_seconds()
    if now is None:
        return
    seen = [(time.monotonic(), now)]  # (when, CPU seconds so far)
    while time.monotonic() < deadline:
        time.sleep(poll)
        t, now = time.monotonic(), runner.cpu_seconds()
        if now is None:
            return
        seen.append((t, now))
        while len(seen) > 1 and seen[1][0] <= t - quiet:
            seen.pop(0)  # keep the newest sample at least `quiet` old, and the ones after it
        if seen[0][0] <= t - quiet and seen[0][1] == now:
            return


def cut_losers(lanes: list[Lane], feasible: Feasible, target: Target, report: TargetReport,
               rounds: int, margin: float = 0.0) -> list[Lane]:
    """Stop the lanes that cannot be the pick (slower than the best candidate by more than `margin`, at
    RACING_CONFIDENCE); returns the ones stopped now."""
    live = [ln for ln in lanes if ln.blocks and ln.pooled_ns()]
    candidates = [ln for ln in live if feasible(report, lane_measurement(ln, target))]
    if not candidates:
        return []
    best = min(candidates, key=lambda ln: float(np.median(ln.pooled_ns())))
    now = []
    for ln in live:
        if ln is best or ln.stopped is not None:
            continue
        if ln not in candidates:
            ln.stopped = f"stopped after {rounds} rounds: does not meet the limits, cannot be the pick"
            now.append(ln)
            continue
        pr = paired_ratio(ln.block_p50_ms, best.block_p50_ms, RACING_CONFIDENCE)
        if pr is not None and pr["ci"][0] > 1.0 + margin:
            ln.stopped = (f"stopped after {rounds} rounds: slower than {best.cell.key} (ratio {pr['ratio']:.2f}, "
                          f"{100 * RACING_CONFIDENCE:.0f}% CI {pr['ci'][0]:.2f}-{pr['ci'][1]:.2f})")
            now.append(ln)
    return now


def equivalent(lanes: list[Lane], margin: float) -> bool:
    """Whether every lane still racing is shown (at RACING_CONFIDENCE) within `margin` of the fastest
    of them: the tie-break decides among them, so more rounds cannot change the pick."""
    live = [ln for ln in lanes if ln.stopped is None and ln.pooled_ns()]
    if margin <= 0 or len(live) < 2:
        return False
    best = min(live, key=lambda ln: float(np.median(ln.pooled_ns())))
    for ln in live:
        if ln is best:
            continue
        pr = paired_ratio(ln.block_p50_ms, best.block_p50_ms, RACING_CONFIDENCE)
        if pr is None or pr["ci"][0] < 1.0 / (1.0 + margin) or pr["ci"][1] > 1.0 + margin:
            return False
    return True


def lane_measurement(ln: Lane, target: Target) -> Measurement:
    """The lane's cell as measured so far: the initial result with the pooled block timings."""
    raw = RawResult(status="ok", data=dict(ln.initial.data), outputs=ln.initial.outputs)
    raw.data.update(latencies_ns=ln.pooled_ns(), warmup_ns=[], stopped_by=ln.stopped or "rounds")
    m = to_measurement(ln.cell.variant.name, ln.cell.artifact, raw, ln.job, target, ln.accuracy)  # type: ignore[arg-type]
    m.block_p50_ms = ln.block_p50_ms
    m.settings.update(strategy="interleaved", runs_per_block=ln.runs, block_discard=ln.discard, stopped=ln.stopped,
                      rounds_timed=sum(b is not None for b in ln.blocks),
                      round_p50_ms=[x for x in ln.block_p50_ms if x is not None])
    if ln.idle_wall_s > 0:
        m.settings["idle_cpu_fraction"] = ln.idle_cpu_s / ln.idle_wall_s
    return m


DRIFT_ROUNDS = 3  # rounds at each end of the run whose block medians are compared
STABILITY_LIMIT = 0.10


def device_drift(lanes: list[Lane]) -> dict[str, Any] | None:
    """How much the device's speed moved during the rounds: the longest-timed cell's first vs last rounds.

    Interleaving makes such a drift hit every cell of a round alike, so the paired comparisons hold;
    the absolute figures of the run are then an average over the drift, which the warning says.
    """
    timed = [ln for ln in lanes if sum(b is not None for b in ln.blocks) >= 2 * DRIFT_ROUNDS]
    if not timed:
        return None
    ln = max(timed, key=lambda x: sum(b is not None for b in x.blocks))
    p50s = [x for x in ln.block_p50_ms if x is not None]
    first, last = float(np.median(p50s[:DRIFT_ROUNDS])), float(np.median(p50s[-DRIFT_ROUNDS:]))
    change = last / first - 1
    out: dict[str, Any] = {"cell": ln.cell.key, "p50_first_ms": first, "p50_again_ms": last, "change": change,
                           "stable": abs(change) <= STABILITY_LIMIT, "basis": f"median of the first and last "
                           f"{DRIFT_ROUNDS} interleaved rounds"}
    if not out["stable"]:
        out["warning"] = (f"the device's speed moved {100 * change:+.0f}% during the run ({ln.cell.key}: "
                          f"{first:.3f} -> {last:.3f} ms p50 between the first and last rounds); cells were "
                          f"interleaved, so their ratios are paired, but absolute figures average over the drift")
    return out


def measure_interleaved(target: Target, cells: list[Cell], prep: Prepared, cfg: RunConfig, report: TargetReport,
                        feasible: Feasible, progress: Progress, stop: threading.Event | None
                        ) -> tuple[list[Measurement], list[Cell]]:
    """Measure `cells` on `target` interleaved and raced: one Measurement per cell, and the cells left
    for sequential timing (no memory to keep them resident)."""
    lanes, failed, left = start_lanes(target, cells, prep, cfg, progress, stop)
    try:
        for ln in list(lanes):
            try:
                calibrate(ln, cfg)
            except USER_ERRORS as e:
                lanes.remove(ln)
                ln.runner.close()
                failed.append(failed_cell(ln.cell, f"warm-up block failed: {e}"))
        report.measurement = race(lanes, cfg, feasible, target, report, progress, stop, seed=cfg.seed)
        report.target["stability"] = device_drift(lanes)
        out = []
        for ln in lanes:
            if not ln.pooled_ns():
                out.append(failed_cell(ln.cell, ln.stopped or "no block was timed"))
                continue
            out.append(lane_measurement(ln, target))
    finally:
        for ln in lanes:
            ln.runner.request_exit()  # all of them first: each takes a moment to tear its runtime down
        for ln in lanes:
            ln.runner.close()
    return out + failed, left


def failed_cell(cell: Cell, error: str) -> Measurement:
    """A cell's row when it could not be measured: the reason, and the artifact it had."""
    return Measurement(variant=cell.variant.name, format=cell.format, status="failed", error=error,
                       artifact=cell.artifact.to_dict() if cell.artifact else None)
