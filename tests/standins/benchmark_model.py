"""A stand-in for LiteRT's `benchmark_model`, for tests: it times nothing, it prints what the real tool prints.

Every line comes from a published log in tests/data/benchmark_model/ (TI's AM62x XNNPACK run for the
phases and summary, ChromiumOS's peak-memory line, the meta-tensorflow-lite operator profile); only the
run counts, thread count and graph path follow the flags it is given, as the real tool's do. Each call's
flags are appended as one JSON line to $BENCHMARK_STANDIN_CALLS, so a test can check what the harness asked.
"""

import json
import os
import sys

DATA = os.environ["BENCHMARK_STANDIN_DATA"]


def lines(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read().splitlines()


def main(argv):
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    calls = os.environ.get("BENCHMARK_STANDIN_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(json.dumps({"argv": argv, "flags": flags, "cwd": os.getcwd()}) + "\n")
    graph = flags.get("graph", "")
    if not os.path.isfile(graph):
        sys.stderr.write(f"stand-in benchmark_model: model file {graph} not found\n")
        return 1
    ti = lines("ti_am62x_xnnpack.log")
    runs, warm = int(flags.get("num_runs", 50)), int(flags.get("warmup_runs", 1))
    out = []
    for line in ti:
        if line.startswith("INFO: Graph: "):
            out += [f"INFO: Graph: [{graph}]", f"INFO: Num threads: [{flags.get('num_threads', '-1')}]"]
        elif "Running benchmark for at least 1 iterations" in line:
            out.append(line.replace("at least 1 iterations", f"at least {warm} iterations"))
        elif "Running benchmark for at least 50 iterations" in line:
            out.append(f"INFO: Running benchmark for at least {runs} iterations and at least "
                       f"{flags.get('min_secs', '1')} seconds but terminate if exceeding "
                       f"{flags.get('max_secs', '150')} seconds.")
        elif line.startswith("INFO: count=50 "):
            out.append(line.replace("count=50 ", f"count={runs} "))
        elif line.startswith("INFO: Loaded model "):
            out.append(f"INFO: Loaded model {graph}")
        else:
            out.append(line)
    if flags.get("report_peak_memory_footprint") == "true":
        out += [ln for ln in lines("chromeos_xnnpack_peak.log") if "Overall peak memory footprint" in ln]
    if flags.get("enable_op_profiling") == "true":
        prof = lines("riscv_mobilenet_op_profiling.log")
        out += prof[[i for i, ln in enumerate(prof) if ln.startswith("Profiling Info for Benchmark")][0]:]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
