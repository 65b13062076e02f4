"""The adb target (kind "adb"): a phone over USB without Python, timed by LiteRT's own `benchmark_model`.

The user's binary (built for the phone's ABI) is pushed once, each artifact once (named by its content),
and each cell runs the tool with the cell's threads, warm-up and run counts under `taskset`. The tool
prints summary figures, not samples, so the report's latency has no p50 CI; it makes its own random
inputs and returns no outputs, so accuracy is not measured here (use a Termux target for that).
ONNX cells run `onnxruntime_perf_test` when its path is given, and are skipped otherwise.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from targets.adb.bridge import Adb, q
from targets.adb.device import probe_phone
from targets.adb.tool_output import parse_benchmark_model, parse_perf_test
from targets.base import Job, RawResult, Target, register_target
from targets.errors import TargetError, TargetSettingError

NOT_MEASURED = ("accuracy: not measured (the tool feeds its own random inputs and returns no outputs; measure "
                "accuracy on a Termux (ssh) target or on the host)")


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@register_target("adb")
class AdbTarget(Target):
    """A phone reached with `adb -s SERIAL`; TFLite cells timed by benchmark_model, ONNX by onnxruntime_perf_test."""

    SETTINGS = {"serial": (str,), "benchmark_model": (str,), "adb": (str,), "onnxruntime_perf_test": (str,),
                "affinity": (str, list), "run_timeout_s": (int, float)}
    REQUIRED = ("serial", "benchmark_model")

    def __init__(self, name: str, serial: str, benchmark_model: str, adb: str | None = None,
                 onnxruntime_perf_test: str | None = None, workdir: str = "/data/local/tmp/edge-harness",
                 threads: int | None = None, affinity: list[int] | str | None = None,
                 run_timeout_s: float | None = None, python: str | None = None, **settings: Any) -> None:
        super().__init__(name, threads, **settings)
        self.tools = {"tflite": self._host_tool(name, "benchmark_model", benchmark_model),
                      "onnx": self._host_tool(name, "onnxruntime_perf_test", onnxruntime_perf_test)}
        if not workdir.startswith("/"):
            raise TargetSettingError(f"target {name}: workdir must be an absolute path on the phone, got {workdir!r}")
        self.workdir = workdir.rstrip("/")
        self.affinity = affinity
        self.run_timeout_s = run_timeout_s
        self.adb = Adb(name, serial, adb)
        self.stats = {"bytes_sent": 0, "files_sent": 0, "files_reused": 0}
        self._lock = threading.RLock()  # one adb job at a time on this phone
        self._on_phone: dict[str, str] = {}  # host digest -> path on the phone, pushed this session
        self._closed = False

    @staticmethod
    def _host_tool(name: str, key: str, path: str | None) -> Path | None:
        if path is None:
            return None
        p = Path(path).expanduser()
        if not p.is_file():
            raise TargetSettingError(f"target {name}: {key} {path!r} not found on this machine (give the path of "
                                     f"the binary built for the phone's ABI)")
        return p

    @property
    def host(self) -> str:
        return f"adb:{self.adb.serial}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "workdir": self.workdir, "transfer": self.stats,
                "tools": {k: str(v) if v else None for k, v in self.tools.items()}}

    # ------------------------------------------------------------------ probe, deploy

    def probe(self) -> dict[str, Any]:
        with self._lock:
            probe = probe_phone(self.adb, self.workdir)
        probe["runtimes"] = {f"{'litert-' if k == 'tflite' else ''}{v.name}": f"sha256 {_digest(v)[:12]}"
                             for k, v in self.tools.items() if v is not None}
        return probe

    def deploy(self, path: Path) -> str:
        """Push a model once (content-addressed); input files stay here: the tools make their own inputs."""
        path = Path(path)
        if path.suffix == ".npz":
            return str(path)
        suffix = path.suffix if path.suffix[1:].isalnum() else ""
        with self._lock:
            return self._push(path, "blobs", f"{suffix}")

    def _push(self, path: Path, folder: str, suffix: str, mode: str | None = None) -> str:
        digest = _digest(path)
        if digest in self._on_phone:
            return self._on_phone[digest]
        remote = f"{self.workdir}/{folder}/{digest}{suffix}"
        size = path.stat().st_size
        code, out = self.adb.shell(f"stat -c %s {q(remote)} 2>/dev/null")
        if code == 0 and out.strip() == str(size):
            self.stats["files_reused"] += 1
        else:
            part = f"{remote}.part"
            self.adb.shell(f"mkdir -p {q(f'{self.workdir}/{folder}')}")
            self.adb.push(path, part)
            chmod = f" && chmod {mode} {q(remote)}" if mode else ""
            code, out = self.adb.shell(f"mv -f {q(part)} {q(remote)}{chmod}")
            if code != 0:
                raise TargetError(f"target {self.name}: cannot place {path.name} in {self.workdir} on the phone: "
                                  f"{out.strip()[-200:]}")
            self.stats["bytes_sent"] += size
            self.stats["files_sent"] += 1
        self._on_phone[digest] = remote
        return remote

    # ---------------------------------------------------------------------- run

    def run(self, job: Job) -> RawResult:
        """Time one cell with the phone's native tool; a lost phone fails the cell in one line."""
        if self._closed:
            return RawResult.failed(f"target {self.name} was closed (interrupted run); job not started")
        if job.format not in self.tools:
            return RawResult(status="skipped", error=f"{job.format} models need the Python runner: use a Termux "
                                                     "(ssh) target for them")
        tool = self.tools[job.format]
        if tool is None:
            return RawResult(status="skipped", error="ONNX on an adb target needs onnxruntime_perf_test: set "
                                                     f"onnxruntime_perf_test in [targets.{self.name}]")
        with self._lock:
            try:
                return self._run(job, tool)
            except TargetError as e:
                return RawResult.failed(str(e))

    def _run(self, job: Job, tool: Path) -> RawResult:
        binary = self._push(tool, "bin", "", mode="755")
        before = probe_phone(self.adb, self.workdir)
        cpus = self._cpus(job.affinity if job.affinity is not None else self.affinity, before)
        threads = int(job.threads or self.threads or len(cpus or []) or before.get("cores") or 1)
        timeout = float(self.run_timeout_s or job.timeout_s)
        pin = f"taskset {sum(1 << c for c in cpus):x} " if cpus else ""
        options = tool_options(job)
        if job.format == "tflite":
            cmd = (f"{q(binary)} --graph={q(job.artifact)} --num_threads={threads} --warmup_runs={job.warmup} "
                   f"--num_runs={job.runs} --min_secs={job.min_time_s:g} --max_secs={job.max_time_s:g} "
                   f"--enable_op_profiling=true --report_peak_memory_footprint=true{options['flags']}")
        else:
            cmd = f"{q(binary)} -e {options['ep']} -m times -r {job.runs} -x {threads}{options['flags']} -I " \
                  f"{q(job.artifact)}"
        code, out = self.adb.shell(f"cd {q(self.workdir)} && timeout {timeout:g} {pin}{cmd}", timeout=timeout + 30)
        name = tool.name
        if code != 0:
            return RawResult.failed(f"{name} exited with status {code} on the phone: {_last_line(out)}",
                                    exit_code=code, log=out)
        try:
            figures = _tflite_figures(out) if job.format == "tflite" else _onnx_figures(out)
        except ValueError as e:
            return RawResult.failed(f"{e}: {_last_line(out)}", exit_code=code, log=out)
        figures.update({
            "status": "ok", "error": None, "device": before, "device_after": probe_phone(self.adb, self.workdir,
                                                                                       full=False),
            "runtime": f"{'litert-' if job.format == 'tflite' else ''}{name}",
            "runtime_version": f"{name} sha256 {_digest(tool)[:12]}", "threads": threads,
            "affinity": cpus, "runtime_import_ns": 0,
        })
        figures["tool_settings"].update(affinity=cpus, command=f"{pin}{cmd}", **options["settings"])
        return RawResult(status="ok", data=figures, exit_code=code, log=out)

    def _cpus(self, affinity: list[int] | str | None, probe: dict[str, Any]) -> list[int] | None:
        if affinity is None or isinstance(affinity, list):
            return [int(c) for c in affinity] if affinity else None
        clusters = probe.get("cpu_clusters") or []
        if affinity == "big":
            cpus = probe.get("big_cores") or [c for cl in clusters for c in cl["cpus"]]
        elif affinity == "little":
            cpus = clusters[0]["cpus"] if clusters else []
        else:
            raise TargetSettingError(f"target {self.name}: affinity {affinity!r} is neither a list of CPUs nor "
                                     "\"big\" or \"little\"")
        if not cpus:
            raise TargetError(f"target {self.name}: the phone shows no per-core frequencies, so its big cores are "
                              "unknown; give affinity as a list of CPUs")
        return list(cpus)

    def close(self) -> None:
        self._closed = True  # models stay in the phone's workdir: pushed once, reused next time


def _tflite_figures(out: str) -> dict[str, Any]:
    """benchmark_model's log as the runner's result fields (ns, MB) plus a summary in ms for the report."""
    f = parse_benchmark_model(out)
    runs, warm = f["runs"], f["warmup"] or {}
    us = 1e-3  # us -> ms
    summary = {"n": int(runs["count"]), "p50": _scaled(runs.get("median"), us), "p95": _scaled(runs.get("p95"), us),
               "mean": f["avg_us"] * us, "std": _scaled(runs.get("std"), us), "min": _scaled(runs.get("min"), us),
               "max": _scaled(runs.get("max"), us),
               "source": "benchmark_model summary (no per-run samples: no p50 CI, no p90/p99)"}
    fp = f["footprint_mb"] or {}
    return {"load_ns": int(f["init_us"] * 1e3), "first_inference_ns": int(f["first_us"] * 1e3),
            "warmup_runs": int(warm.get("count", 0)), "latency_summary_ms": summary, "stopped_by": "count",
            "memory_mb": {"peak_rss": f["peak_mb"], "footprint_delta_init": fp.get("init"),
                          "footprint_delta_overall": fp.get("overall"),
                          "method": "benchmark_model: peak by periodic monitoring (--report_peak_memory_footprint), "
                                    "footprint deltas from the tool's start; approximate, the tool's own memory "
                                    "included"},
            "tool_settings": {"measured_by": "benchmark_model", "op_profile": f["op_profile"],
                              "warmup_avg_ms": f["warmup_avg_us"] * us, "timing_inputs": "random (benchmark_model)",
                              "not_measured": [NOT_MEASURED]}}


def _onnx_figures(out: str) -> dict[str, Any]:
    """onnxruntime_perf_test's log as the runner's result fields (it prints percentiles, no std)."""
    f = parse_perf_test(out)
    s = 1e3  # s -> ms
    summary = {"n": int(f["requests"] or 0), "p50": _scaled(f["p50_s"], s), "p90": _scaled(f["p90_s"], s),
               "p95": _scaled(f["p95_s"], s), "p99": _scaled(f["p99_s"], s), "p999": _scaled(f["p999_s"], s),
               "mean": f["avg_ms"], "min": _scaled(f["min_s"], s), "max": _scaled(f["max_s"], s),
               "source": "onnxruntime_perf_test summary (no per-run samples: no p50 CI)"}
    return {"load_ns": int((f["session_s"] or 0) * 1e9), "first_inference_ns": int((f["first_ms"] or 0) * 1e6),
            "warmup_runs": 1, "latency_summary_ms": summary, "stopped_by": "count",
            "memory_mb": {"peak_rss": _scaled(f["peak_bytes"], 1 / 2**20),
                          "method": "onnxruntime_perf_test: peak working set of the process"},
            "tool_settings": {"measured_by": "onnxruntime_perf_test", "timing_inputs": "generated (-I)",
                              "not_measured": [NOT_MEASURED]}}


def _scaled(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


# onnxruntime_perf_test's -e names for the providers, and its -o numbers for the optimisation levels.
PERF_TEST_PROVIDERS = {"CPUExecutionProvider": "cpu", "XnnpackExecutionProvider": "xnnpack",
                       "NnapiExecutionProvider": "nnapi", "QNNExecutionProvider": "qnn",
                       "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt",
                       "OpenVINOExecutionProvider": "openvino", "CoreMLExecutionProvider": "coreml"}
PERF_TEST_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


def tool_options(job: Job) -> dict[str, Any]:
    """A job's runtime options as the native tools' flags: benchmark_model's --use_xnnpack and
    --external_delegate_*, onnxruntime_perf_test's -e (its first provider) and -o."""
    if job.format == "tflite":
        flags = " --use_xnnpack=false" if job.xnnpack is False else ""
        if job.delegate:
            flags += f" --external_delegate_path={q(job.delegate)}"
            if job.delegate_options:
                flags += " --external_delegate_options=" + q(";".join(f"{k}:{v}" for k, v in
                                                                     job.delegate_options.items()))
        return {"flags": flags, "settings": {"xnnpack": job.xnnpack is not False, "delegate": job.delegate,
                                             "delegate_options": job.delegate_options}}
    provider = (job.providers or ["CPUExecutionProvider"])[0]
    if provider not in PERF_TEST_PROVIDERS:
        raise TargetError(f"onnxruntime_perf_test has no -e name for provider {provider} (known: "
                          f"{', '.join(PERF_TEST_PROVIDERS)})")
    level = job.graph_optimization_level
    return {"ep": PERF_TEST_PROVIDERS[provider], "flags": f" -o {PERF_TEST_LEVELS[level]}" if level else "",
            "settings": {"providers": [provider], "graph_optimization_level": level or "all"}}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
