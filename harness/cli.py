"""The `edge-harness` command line. User mistakes print one line and exit non-zero."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable

from harness import __version__
from harness.bench_args import add_bench_arguments
from harness.errors import USER_ERRORS, ConfigError
from harness.logs import terminal
from harness.progress import Progress
from targets import device_lock

DEBUG_ENV = "EDGE_HARNESS_DEBUG"  # =1: an unexpected exception propagates with its traceback (tests set it)
INTERNAL_ERROR = 3  # the exit status of a bug, apart from user mistakes (2) and findings (1)


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes also get the one-line error form (sub-commands inherit the class)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"edge-harness: error: {message} (see `{self.prog} --help`)\n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than `lo`."""

    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{v!r} is not an integer") from None
        if n < lo:
            raise argparse.ArgumentTypeError(f"{v!r} must be >= {lo}")
        return n

    return parse


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def writable_folder(out: Path | None) -> None:
    """Fail in one line before any work when the output folder cannot be created or written."""
    if out is None:
        return
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"cannot write to the output folder {out} ({e.strerror or e}); choose another with "
                          "--out") from None


def run_progress(args: argparse.Namespace) -> Progress:
    """demo/run: a live display on a terminal, plain lines elsewhere; -q none, -v the converters' output too."""
    if args.quiet and args.verbose:
        raise ConfigError("-q (no progress lines) and -v (more output) contradict each other: pass one")
    return Progress(quiet=args.quiet, verbose=args.verbose)


def cmd_demo(args: argparse.Namespace) -> int:
    from harness.api import demo_config, run_config

    args.out = args.out or Path("reports/demo" if args.task == "image" else f"reports/demo-{args.task}")
    writable_folder(args.out)
    cfg = demo_config(quick=args.quick, task=args.task)
    result = run_config(cfg, out=args.out, targets_file=args.targets, target_names=args.target,
                        progress=run_progress(args), resume=args.resume, overwrite=args.overwrite)
    print(result.summary_text())
    return 0 if result.any_ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from harness.api import run_config
    from harness.config.run import load_config

    cfg = load_config(args.config)
    writable_folder(args.out or Path(cfg.out or f"reports/{cfg.name}"))
    result = run_config(cfg, out=args.out, targets_file=args.targets, target_names=args.target,
                        only=args.only, progress=run_progress(args), resume=args.resume,
                        overwrite=args.overwrite)
    print(result.summary_text())
    return 0 if result.any_ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import BenchSettings, bench
    from harness.bench_args import bench_options, profile_line, summary_line
    from harness.report.cells import safe_name
    from harness.report.files import guard_out
    from harness.report.markdown import render_markdown

    settings = BenchSettings(runs=args.runs, warmup=args.warmup, threads=args.threads,
                             min_time_s=args.min_time, mode="adaptive" if args.adaptive else "fixed",
                             trust_pickle=args.trust_pickle, **bench_options(args))
    if args.out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = Path("reports/bench") / f"{safe_name(Path(args.model).stem)}-{stamp}"
    elif not args.overwrite:
        guard_out(args.out, resume=False, overwrite=False)
    writable_folder(args.out)
    reports, folder = bench(args.model, target=args.target or ["local-cpu"], targets_file=args.targets,
                            inputs=args.inputs, settings=settings, out=args.out, progress=Progress(quiet=args.quiet))
    for report in reports:
        print(summary_line(Path(args.model).name, report))
        line = profile_line(report)
        if line:
            print(line)
        if args.verbose:
            print(render_markdown(report))
    print(f"report: {folder / 'summary.md'}" if len(reports) > 1 else
          f"report: {folder / safe_name(str(reports[0].target['name'])) / 'report.json'}")
    return 0 if all(r.measurements[0].ok for r in reports) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.rerender import rerender

    constraints = {"max_latency_ms": args.max_latency_ms, "max_accuracy_drop": args.max_accuracy_drop,
                   "max_size_mb": args.max_size_mb, "max_memory_mb": args.max_memory_mb}
    written = rerender(Path(args.dir), constraints)
    for p in written:
        print(p)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import compare_runs, render_text, write_comparison

    comp = compare_runs(args.old, args.new, alpha=args.alpha, min_change=args.min_change,
                        max_accuracy_drop=args.max_accuracy_drop)
    print(render_text(comp))
    print(f"written: {write_comparison(comp, args.out or args.new)}")
    return 1 if comp.regressions else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from harness.report.schema import write_schemas

    writable_folder(args.out)
    for path in write_schemas(args.out):
        print(path)
    return 0


def _float_where(ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: a number for which `ok` holds; `rule` says which numbers those are."""

    def parse(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
        if not ok(x):
            raise argparse.ArgumentTypeError(f"{v!r} {rule}")
        return x

    return parse


_fraction = _float_where(lambda x: 0 <= x < 1, "must be a fraction in [0, 1) (0.01 = 1 point / 1%)")
_non_negative_float = _float_where(lambda x: x >= 0, "must be >= 0")
_positive_float = _float_where(lambda x: x > 0, "must be > 0")


def cmd_targets_check(args: argparse.Namespace) -> int:
    from harness.doctor import check_targets

    return check_targets(args.names, args.targets)


def cmd_targets_setup(args: argparse.Namespace) -> int:
    from harness.doctor import setup_target

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    setup_target(args.name, args.targets, formats, wheels=args.wheels)
    return 0


def cmd_targets_trust(args: argparse.Namespace) -> int:
    from harness.doctor import trust_target

    return trust_target(args.name, args.targets, replace=args.replace, expect=args.expect, yes=args.yes)


def cmd_targets_clean(args: argparse.Namespace) -> int:
    from harness.doctor import clean_target

    return clean_target(args.name, args.targets)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="edge-harness", description="Export, deploy and measure compressed models "
                                "on the devices they will ship to.")
    p.add_argument("--version", action="version", version=f"edge-harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--targets", type=Path, help="targets file (TOML)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    def runlike(sp: argparse.ArgumentParser) -> None:
        common(sp)
        sp.add_argument("-v", "--verbose", action="store_true",
                        help="also show converter and library output (always kept in OUT/logs/)")
        sp.add_argument("--target", action="append", help="measure on this target (repeatable; default local-cpu)")
        sp.add_argument("--resume", action="store_true", help="run only cells missing or failed in OUT")
        sp.add_argument("--overwrite", action="store_true", help="replace an earlier run's reports in OUT")
        no_wait(sp)

    def no_wait(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--no-wait", action="store_true",
                        help="fail at once when another run holds a target (default: wait for it)")

    d = sub.add_parser("demo", help="the default evaluation, offline, on this machine")
    d.add_argument("--quick", action="store_true", help="fewer variants, data and runs (under 90 s)")
    d.add_argument("--out", type=Path, default=None, help="output folder (default reports/demo, reports/demo-text)")
    d.add_argument("--task", choices=("image", "text"), default="image",
                   help="image: EfficientNet-Lite0 on textures; text: all-MiniLM-L6-v2 classifying sentences")
    runlike(d)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="run a config file")
    r.add_argument("config", type=Path)
    r.add_argument("--out", type=Path, default=None, help="output folder (default: the config's, or reports/run)")
    r.add_argument("--only", action="append", help="only this variant (repeatable)")
    runlike(r)
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="measure one .onnx / .tflite / .pt2 file")
    add_bench_arguments(b, _positive, _non_negative, _non_negative_float)
    common(b)
    no_wait(b)
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("targets", help="check or set up targets")
    tsub = t.add_subparsers(dest="targets_command", required=True)
    tc = tsub.add_parser("check", help="probe targets and say what is missing")
    tc.add_argument("names", nargs="*")
    tc.add_argument("--targets", type=Path, help="targets file (TOML)")
    tc.set_defaults(func=cmd_targets_check)
    ts = tsub.add_parser("setup", help="create a venv on an ssh device and install the runtimes")
    ts.add_argument("name")
    ts.add_argument("--formats", default="onnx,tflite", help="runtimes for these formats (default onnx,tflite)")
    ts.add_argument("--wheels", type=Path, help="download wheels for the device here and copy them over "
                    "(for boards without internet)")
    ts.add_argument("--targets", type=Path, help="targets file (TOML)")
    ts.set_defaults(func=cmd_targets_setup)
    tt = tsub.add_parser("trust", help="show an ssh device's host key and add it to known_hosts")
    tt.add_argument("name")
    tt.add_argument("--replace", action="store_true", help="replace a different key already recorded")
    tt.add_argument("--expect", metavar="SHA256:...", help="refuse unless the key has this fingerprint")
    tt.add_argument("--yes", action="store_true", help="record the key shown without asking (check the "
                    "fingerprint printed against the device's own)")
    tt.add_argument("--targets", type=Path, help="targets file (TOML)")
    tt.set_defaults(func=cmd_targets_trust)
    tk = tsub.add_parser("clean", help="remove uploaded models, inputs and job folders from an ssh device")
    tk.add_argument("name")
    tk.add_argument("--targets", type=Path, help="targets file (TOML)")
    tk.set_defaults(func=cmd_targets_clean)

    rp = sub.add_parser("report", help="re-render Markdown/HTML/CSV from report.json files",
                        description="Re-render report.md/report.html beside every report.json under DIR, and "
                        "summary.md/summary.html/cells.csv per run folder. Limits given here replace the run's "
                        "(and are stored in report.json).")
    rp.add_argument("dir")
    rp.add_argument("--max-latency-ms", type=_positive_float, help="recommend only cells with p50 at most this")
    rp.add_argument("--max-accuracy-drop", type=_fraction,
                    help="top-1 drop against the fp32 reference, as a fraction (0.01 = 1 point)")
    rp.add_argument("--max-size-mb", type=_positive_float, help="artifact size limit (MB, 10^6 bytes)")
    rp.add_argument("--max-memory-mb", type=_positive_float, help="peak RSS limit (MB)")
    rp.set_defaults(func=cmd_report)

    cp = sub.add_parser("compare", help="regression check between two runs (exit 1 on a regression)",
                        description="Match cells (target + variant + format) of two run folders. A cell regresses "
                        "when it is slower with one-sided Mann-Whitney p < ALPHA on the raw timings AND its median "
                        "rose more than MIN_CHANGE, when its top-1 fell more than MAX_ACCURACY_DROP, or when it "
                        "no longer runs. Exit 0: no regression, 1: a regression, 2: unreadable input.")
    cp.add_argument("old", type=Path, help="the baseline run folder (with */report.json)")
    cp.add_argument("new", type=Path, help="the run folder to check")
    cp.add_argument("--alpha", type=_fraction, default=0.01, help="significance level (default 0.01)")
    cp.add_argument("--min-change", type=_non_negative_float, default=0.05,
                    help="smallest median change that counts, as a fraction (default 0.05 = 5%%)")
    cp.add_argument("--max-accuracy-drop", type=_fraction, default=0.01,
                    help="top-1 drop that counts, as a fraction (default 0.01 = 1 point)")
    cp.add_argument("--out", type=Path, help="where to write compare.md/.json: a folder or a .md file "
                    "(default: NEW)")
    cp.set_defaults(func=cmd_compare)

    sc = sub.add_parser("schema", help="write the JSON Schemas of report.json, summary.json and the run config",
                        description="Generate the JSON Schemas of the file contracts from the dataclasses that "
                        "write them: report.schema.json, summary.schema.json, config.schema.json.")
    sc.add_argument("--out", type=Path, default=Path("reports/schema"),
                    help="folder to write them into (default reports/schema)")
    sc.set_defaults(func=cmd_schema)
    return p


def main(argv: list[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _sigterm_as_interrupt()
    device_lock.POLICY.wait = not getattr(args, "no_wait", False)
    # terminal(): the terminal even while a step's output is captured into its log.
    device_lock.POLICY.say = lambda line: print(f"edge-harness: {line}", file=terminal(), flush=True)
    try:
        return int(args.func(args))
    except USER_ERRORS as e:
        print(f"edge-harness: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print("edge-harness: interrupted; finished cells are on disk (use --resume to complete)", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG_ENV) == "1":
            raise  # tests (and developers) see a bug as a bug
        print(f"edge-harness: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              f"({_crash_log()}; please report it)", file=sys.stderr)
        return INTERNAL_ERROR
    finally:
        device_lock.POLICY.wait, device_lock.POLICY.say = True, None
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _crash_log() -> str:
    """Write the current exception's traceback to a log file; returns where, for the one-line message."""
    try:
        fd, path = tempfile.mkstemp(prefix=f"edge-harness-crash-{datetime.now():%Y%m%d-%H%M%S}-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(f"edge-harness {__version__}, argv {sys.argv!r}\n")
            traceback.print_exc(file=f)
        return f"traceback in {path}"
    except OSError:
        return "the traceback could not be saved"


def _sigterm_as_interrupt() -> object:
    """SIGTERM (kill, a CI timeout, systemd) stops a run like Ctrl-C: runners killed, finished cells kept."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
