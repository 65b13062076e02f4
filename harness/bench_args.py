"""`edge-harness bench`'s options and its terminal summary, named as the tools users know name them
(onnxruntime_perf_test's free-dimension override, LiteRT benchmark_model's --input_layer_shape)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from harness.errors import ConfigError
from targets.base import GRAPH_OPTIMIZATION_LEVELS


def shape_arg(v: str) -> tuple[str, list[int]]:
    """NAME=1,3,320,320 -> ("NAME", [1, 3, 320, 320])."""
    name, sep, dims = v.rpartition("=")
    try:
        sizes = [int(d) for d in dims.split(",")] if sep and name.strip() else []
    except ValueError:
        sizes = []
    if not sizes or any(d < 1 for d in sizes):
        raise argparse.ArgumentTypeError(f"{v!r} is not NAME=D0,D1,... with sizes >= 1 (e.g. input=1,3,320,320)")
    return name.strip(), sizes


def option_arg(v: str) -> tuple[str, str]:
    """KEY=VALUE -> ("KEY", "VALUE") (a delegate option)."""
    key, sep, value = v.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{v!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def add_bench_arguments(b: argparse.ArgumentParser, positive: Callable[[str], int],
                        non_negative: Callable[[str], int], non_negative_float: Callable[[str], float]) -> None:
    """Every option of `bench`, each with its help line."""
    b.add_argument("model", type=Path, help="the model file: .onnx, .tflite or .pt2")
    b.add_argument("--target", action="append", default=None,
                   help="measure on this target: local-cpu, local-gpu or a name from --targets (repeatable; "
                        "several write a summary across them; default local-cpu)")
    b.add_argument("--inputs", type=Path, help=".npz with one array per model input (default: generated)")
    b.add_argument("--shape", type=shape_arg, action="append", default=[], metavar="NAME=D0,D1,...",
                   help="sizes of a generated input, for its dynamic dimensions (repeatable, e.g. "
                        "--shape pixel_values=1,3,320,320); a fixed dimension must keep its size")
    b.add_argument("--batch", type=positive, default=None,
                   help="batch size: dimension 0 of generated inputs, or the samples of --inputs repeated to it")
    b.add_argument("--runs", type=positive, default=50, help="timed runs, at least (default 50)")
    b.add_argument("--warmup", type=non_negative, default=5, help="untimed runs first (default 5)")
    b.add_argument("--threads", type=positive, default=None,
                   help="runtime threads (default: the target's, else every CPU the runner may use)")
    b.add_argument("--min-time", type=non_negative_float, default=0.5, help="minimum timed seconds (default 0.5)")
    b.add_argument("--adaptive", action="store_true", help="run until the p50 CI is within 2%%")
    b.add_argument("--profile", action="store_true",
                   help="then a per-operator profile from the runtime's own profiler: top operators, time per "
                        "op type, int8 kernels vs float (in report.json as op_profile)")
    b.add_argument("--provider", action="append", default=None, metavar="NAME",
                   help="onnxruntime execution provider, in order of preference (repeatable, e.g. "
                        "--provider XnnpackExecutionProvider --provider CPUExecutionProvider)")
    b.add_argument("--graph-opt", choices=GRAPH_OPTIMIZATION_LEVELS, default=None,
                   help="onnxruntime graph_optimization_level (default: all, onnxruntime's own)")
    b.add_argument("--no-xnnpack", action="store_true",
                   help="LiteRT: builtin kernels only, no XNNPACK (op resolver BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    b.add_argument("--delegate", default=None, metavar="PATH",
                   help="LiteRT: an external delegate library on the device, loaded with load_delegate")
    b.add_argument("--delegate-option", type=option_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="an option for --delegate (repeatable)")
    b.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/bench/<model>-<time>, a new one each run)")
    b.add_argument("--overwrite", action="store_true", help="replace reports already in --out")
    b.add_argument("-v", "--verbose", action="store_true", help="print the Markdown report")
    b.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt2 file: torch.export.load unpickles it, which runs any code it holds")


def bench_options(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of BenchSettings that the flags give: shapes, batch, profile and runtime options."""
    shapes: dict[str, list[int]] = {}
    for name, dims in args.shape:
        if name in shapes and shapes[name] != dims:
            raise ConfigError(f"--shape {name} given twice with different sizes")
        shapes[name] = dims
    if args.delegate_option and not args.delegate:
        raise ConfigError("--delegate-option needs --delegate PATH")
    options = {"providers": args.provider, "graph_optimization_level": args.graph_opt,
               "xnnpack": False if args.no_xnnpack else None, "delegate": args.delegate,
               "delegate_options": dict(args.delegate_option) or None}
    return {"shapes": shapes, "batch": args.batch, "profile": args.profile,
            "options": {k: v for k, v in options.items() if v is not None}}


def num(v: float | None, spec: str = ".3f") -> str:
    """A figure, or "-" where the measuring tool gives none (a phone's benchmark_model: no p99, no CI)."""
    return "-" if v is None else format(v, spec)


def summary_line(model: str, report: Any) -> str:
    """One cell's figures on one line, as the terminal shows them."""
    m = report.measurements[0]
    if not m.ok:
        return f"{model} on {report.target['name']}: {m.status}: {m.error}"
    lat = m.latency_ms or {}
    ci = lat.get("p50_ci")
    batch = f", batch {m.settings['batch']}" if m.settings.get("batch") else ""
    return (f"{model} on {report.target['name']}: p50 {num(lat.get('p50'))} ms "
            + (f"[95% CI {ci[0]:.3f}-{ci[1]:.3f}]" if ci else "[no CI: the tool gave no samples]")
            + f", p99 {num(lat.get('p99'))} ms, mean {num(lat.get('mean'))} ms, n={lat.get('n')}{batch}, "
            f"cold start {m.cold_start_ms['total']:.1f} ms, peak RSS {num(m.memory_mb.get('peak_rss'), '.1f')} MB "
            f"({m.settings.get('runtime')} {m.settings.get('runtime_version')}, {m.settings.get('threads')} threads)")


def profile_line(report: Any) -> str | None:
    """The op profile of a cell in one line: operator time against the mean, the top op types, int8 vs float."""
    p = report.measurements[0].op_profile
    if not p:
        return None
    if p.get("error"):
        return f"  op profile: not made: {p['error']}"
    top = ", ".join(f"{t['op_type']} {100 * t['share']:.0f}%" for t in p.get("by_op_type", [])[:4])
    split = ", ".join(f"{k} {100 * v['share']:.0f}%" for k, v in (p.get("precision") or {}).items())
    ratio, median = p.get("vs_mean_latency"), p.get("median_vs_p50_latency")
    return (f"  op profile: {p['op_ms_per_run']:.3f} ms of operators per run"
            + (f" ({ratio:.2f}x the mean latency" if ratio else " (")
            + (f"; median run {median:.2f}x the p50)" if median else ")") + f"; {top}; {split}"
            + (f"\n  op profile caveat: {p['caveat']}" if p.get("caveat") else ""))
