"""A stand-in for `onnxruntime_perf_test`, for tests: prints the published SpacemiT K1 log
(tests/data/onnxruntime_perf_test/spacemit_k1.log) with its request count set by `-r`, as the real tool's is."""

import os
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    runs = args[args.index("-r") + 1] if "-r" in args else "1000"
    if not os.path.isfile(args[-1]):
        sys.stderr.write(f"stand-in onnxruntime_perf_test: model file {args[-1]} not found\n")
        sys.exit(1)
    path = os.path.join(os.environ["BENCHMARK_STANDIN_DATA"], "..", "onnxruntime_perf_test", "spacemit_k1.log")
    for line in open(path).read().splitlines():
        if line.startswith("using SpaceMIT"):
            continue  # the stand-in runs the CPU provider (-e cpu)
        print(f"Total inference requests: {runs}" if line.startswith("Total inference requests") else line)
