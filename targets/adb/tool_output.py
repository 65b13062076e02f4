"""What LiteRT's `benchmark_model` and onnxruntime's `onnxruntime_perf_test` print, read into numbers.

Neither tool prints raw per-run samples, only summary figures; what a tool does not print stays None
(its version decides which lines appear: `p5=`/`median=`/`p95=` and the peak-memory line are recent).
Lines may carry a logger prefix (`INFO: `, logcat's `I tflite  : `); it is ignored.
"""

from __future__ import annotations

import re
from typing import Any

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_STATS = re.compile(rf"\bcount=(\d+)((?:\s+\w+={_NUM})*)")
_PAIR = re.compile(rf"(\w+)=({_NUM})")
_TIMINGS = re.compile(rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
                      rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})")
_FOOTPRINT = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                        rf"init=({_NUM}) overall=({_NUM})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_RUNS_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_BY_TYPE = "Summary by node type"


def _stats_line(line: str) -> dict[str, float] | None:
    """`count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]` as {key: value}."""
    m = _STATS.search(line)
    if m is None or "Timings (microseconds)" in line or "Memory (bytes)" in line:
        return None
    out = {"count": float(m.group(1))}
    out.update({k: float(v) for k, v in _PAIR.findall(m.group(2))})
    return out


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Figures from benchmark_model's log; raises ValueError when the run's timing lines are missing.

    Returns `init_us`, `first_us`, `warmup_avg_us`, `avg_us`, `warmup` and `runs` (the stats lines of the
    warm-up and timed phases, in microseconds), `footprint_mb` (init/overall deltas), `peak_mb`, and
    `op_profile` (per node type, from the timed runs' profile) where the log has them.
    """
    stats = [s for s in (_stats_line(ln) for ln in text.splitlines()) if s is not None]
    timings = _TIMINGS.search(text)
    if timings is None or not stats:
        raise ValueError("no 'Inference timings in us' line in benchmark_model's output")
    init, first, warm_avg, avg = (float(x) for x in timings.groups())
    # The last stats line before the summary is the timed phase; one before it, the warm-up.
    runs = stats[-1]
    warm = stats[-2] if len(stats) > 1 else None
    out: dict[str, Any] = {"init_us": init, "first_us": first, "warmup_avg_us": warm_avg, "avg_us": avg,
                           "runs": runs, "warmup": warm, "footprint_mb": None, "peak_mb": None,
                           "op_profile": op_profile(text)}
    fp = _FOOTPRINT.search(text)
    if fp:
        out["footprint_mb"] = {"init": float(fp.group(1)), "overall": float(fp.group(2))}
    peak = _PEAK.search(text)
    if peak:
        out["peak_mb"] = float(peak.group(1))
    return out


def op_profile(text: str) -> list[dict[str, Any]] | None:
    """The timed runs' "Summary by node type" table: node type, count, avg ms, share of the time (%)."""
    start = text.find(_RUNS_SECTION)
    if start < 0:
        return None
    at = text.find(_BY_TYPE, start)
    if at < 0:
        return None
    rows = []
    for line in text[at:].splitlines()[2:]:
        cells = [c for c in re.split(r"\t+|\s{2,}", _strip_prefix(line).strip()) if c]
        if len(cells) < 4 or not cells[1].isdigit():
            break
        try:
            rows.append({"node_type": cells[0], "count": int(cells[1]), "avg_ms": float(cells[2]),
                         "percent": float(cells[3].rstrip("%"))})
        except ValueError:
            break
    return rows or None


def _strip_prefix(line: str) -> str:
    """A log line without a logger prefix (`INFO: `, `I tflite  : `)."""
    return re.sub(r"^(?:INFO: |[VDIWE] \w+\s*: )", "", line)


_PERF = {"session_s": r"Session creation time cost: ({n}) s", "first_ms": r"First inference time cost: ({n}) ms",
         "requests": r"Total inference requests: ({n})", "avg_ms": r"Average inference time cost(?: total)?: ({n}) ms",
         "peak_bytes": r"Peak working set size: ({n}) bytes", "min_s": r"Min Latency: ({n}) s",
         "max_s": r"Max Latency: ({n}) s", "p50_s": r"P50 Latency: ({n}) s", "p90_s": r"P90 Latency: ({n}) s",
         "p95_s": r"P95 Latency: ({n}) s", "p99_s": r"P99 Latency: ({n}) s", "p999_s": r"P999 Latency: ({n}) s"}


def parse_perf_test(text: str) -> dict[str, float | None]:
    """Figures from onnxruntime_perf_test's log (seconds, ms or bytes as printed); ValueError without timings."""
    out: dict[str, float | None] = {}
    for key, pattern in _PERF.items():
        m = re.search(pattern.format(n=_NUM), text)
        out[key] = float(m.group(1)) if m else None
    if out["avg_ms"] is None or out["requests"] is None:
        raise ValueError("no 'Average inference time cost' line in onnxruntime_perf_test's output")
    return out
