#!/usr/bin/env python3
"""The one file that runs on a target: load a model, time it, run the evaluation inputs.

Standard library + numpy + one runtime (onnxruntime, ai-edge-litert or tflite-runtime,
torch only for the eager baseline). Python 3.8 or newer. JSON job in, JSON + .npz out:

    python3 -u runner.py JOB.json            # writes result.json and outputs.npz in job["out"]
    python3 -u runner.py JOB.json --serve    # the same, then stays resident: timed blocks on request
    python3 -u runner.py --probe             # prints the device probe as JSON

Resident (--serve): after result.json is written the runner prints one line `READY` and waits,
blocked on stdin (no CPU), for one JSON command per line: {"cmd": "block", "runs": N, "discard": D}
runs D untimed then N timed iterations and prints {"latencies_ns": [...]} on one line;
{"cmd": "exit"} or the end of stdin ends it. The host keeps one such process per model and times
them one at a time in alternating blocks, so a change of device speed hits every model alike.

Exit status: 0 measured, 2 the job failed for a reason written to result.json, other
values mean the runner itself crashed (the host then reports the exit status).
This file must not import anything from the harness: it is copied alone to devices.
"""

import bisect
import errno
import glob
import json
import os
import platform
import resource
import sys
import time
import traceback
import warnings

RUNNER_VERSION = 1


class JobFailed(Exception):
    """The job cannot run (bad model, wrong inputs, missing runtime); one-line reason."""


def _missing(module, package, e):
    """JobFailed for a runtime this Python cannot import: absent, or present but failing to load."""
    if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == module:
        return JobFailed("%s is not installed for %s on this device (install it: %s -m pip install %s)"
                         % (module, sys.executable, sys.executable, package))
    return JobFailed("%s is installed for %s but cannot be imported: %s" % (module, sys.executable, _first_line(e)))


# ----------------------------------------------------------------------------- probe


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, ValueError):
        return default


def _cpu_model():
    info = _read("/proc/cpuinfo", "") or ""
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _temperatures(root="/"):
    """Thermal zones (millidegrees) and, on phones, the battery (tenths of a degree), in degrees C."""
    temps = {}
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        raw = _read(os.path.join(zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            kind = _read(os.path.join(zone, "type"), os.path.basename(zone))
            # Phones have dozens of zones, several of one type: keep each, not the last of a name.
            temps[kind if kind not in temps else "%s/%s" % (kind, os.path.basename(zone))] = int(raw) / 1000.0
    battery = _read(os.path.join(root, "sys/class/power_supply/battery/temp"))
    if battery and battery.lstrip("-").isdigit():
        temps["battery"] = int(battery) / 10.0
    return temps


def _cpu_frequencies_mhz():
    freqs = {}
    for cpu in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq")):
        raw = _read(os.path.join(cpu, "scaling_cur_freq"))
        if raw and raw.isdigit():
            freqs[cpu.split("/")[-2]] = int(raw) / 1000.0
    return freqs


def cpu_clusters(max_khz):
    """big.LITTLE layout from each CPU's top frequency ({cpu: kHz}): clusters from slowest to fastest.

    Each cluster is {"cpus": [...], "max_mhz": f}. The "big" cores are every cluster but the slowest
    (a phone's mid and prime cores together); with one cluster every core is big.
    """
    by_freq = {}
    for cpu, khz in max_khz.items():
        by_freq.setdefault(int(khz), []).append(int(cpu))
    return [{"cpus": sorted(cpus), "max_mhz": khz / 1000.0} for khz, cpus in sorted(by_freq.items())]


def big_cores(clusters):
    """The CPUs of every cluster but the slowest (all of them when there is one cluster)."""
    if not clusters:
        return []
    keep = clusters[1:] if len(clusters) > 1 else clusters
    return sorted(c for cl in keep for c in cl["cpus"])


def _max_freqs_khz(root="/"):
    freqs = {}
    for cpu in glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq")):
        raw = _read(cpu)
        if raw and raw.isdigit():
            freqs[int(cpu.split("/")[-3][3:])] = int(raw)
    return freqs


def resolve_affinity(affinity, root="/"):
    """CPU numbers for an affinity setting: a list as given, "big" or "little" from the cluster layout."""
    if not isinstance(affinity, str):
        return [int(c) for c in affinity]
    clusters = cpu_clusters(_max_freqs_khz(root))
    if affinity == "big":
        cpus = big_cores(clusters)
    elif affinity == "little":
        cpus = clusters[0]["cpus"] if clusters else []
    else:
        raise JobFailed("affinity %r is neither a list of CPUs nor \"big\" or \"little\"" % affinity)
    if not cpus:
        raise JobFailed("affinity %r: this device shows no per-core frequencies (cpufreq), so its big cores "
                        "are unknown; give a list of CPUs instead" % affinity)
    return cpus


GETPROP_KEYS = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer",
                "soc": "ro.soc.model", "soc_manufacturer": "ro.soc.manufacturer", "board": "ro.board.platform",
                "hardware": "ro.hardware", "android": "ro.build.version.release", "sdk": "ro.build.version.sdk",
                "abi": "ro.product.cpu.abi", "abilist": "ro.product.cpu.abilist"}


def parse_getprop(text):
    """`getprop`'s "[key]: [value]" lines as a dict."""
    props = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("[") and "]: [" in line and line.endswith("]"):
            key, value = line[1:-1].split("]: [", 1)
            props[key] = value
    return props


def android_card(props):
    """The phone's description from its properties: model, SoC, Android version, ABI (None: not Android)."""
    if not props.get("ro.build.version.release"):
        return None
    card = {name: props.get(key) for name, key in GETPROP_KEYS.items()}
    card["soc"] = card["soc"] or card["board"] or card["hardware"]
    return card


def _android():
    """This device's Android card (getprop) and Termux prefix, None off Android."""
    import shutil
    import subprocess

    exe = shutil.which("getprop") or ("/system/bin/getprop" if os.path.exists("/system/bin/getprop") else None)
    if not exe:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    card = android_card(parse_getprop(out))
    if card is None:
        return None
    prefix = os.environ.get("PREFIX") or ""
    card["termux_prefix"] = prefix if "com.termux" in prefix or os.environ.get("TERMUX_VERSION") else None
    return card


def _throttled():
    """Raspberry Pi firmware throttling flags (vcgencmd), None elsewhere."""
    import shutil
    import subprocess

    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip().split("=")[-1] or None
    except (OSError, subprocess.SubprocessError):
        return None


def _mem_total_mb():
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024.0
    return None


def _runtime_versions():
    """Which runtimes this Python can import, without importing them fully."""
    import importlib.util

    found = {}
    for mod, dist in (("onnxruntime", "onnxruntime"), ("ai_edge_litert", "ai-edge-litert"),
                      ("tflite_runtime", "tflite-runtime"), ("torch", "torch"), ("numpy", "numpy")):
        if importlib.util.find_spec(mod) is None:
            continue
        try:
            from importlib import metadata

            found[dist] = metadata.version(dist)
        except Exception:
            found[dist] = "unknown"
    return found


def probe(full=True):
    """Describe the device: CPU, cores, governor, frequency, temperature, Python, runtimes."""
    state = {
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_freq_mhz": _cpu_frequencies_mhz(),
        "temperature_c": _temperatures(),
        "throttled": _throttled(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time": time.time(),
    }
    if not full:
        return state
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    clusters = cpu_clusters(_max_freqs_khz())
    state.update({
        "cpu_clusters": clusters,
        "big_cores": big_cores(clusters) if len(clusters) > 1 else None,
        "android": _android(),
        "hostname": platform.node(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "mem_total_mb": _mem_total_mb(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "runtimes": _runtime_versions(),
        "runner_version": RUNNER_VERSION,
    })
    return state


# ---------------------------------------------------------------------------- memory


def _status_kb(field):
    for line in (_read("/proc/self/status", "") or "").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def memory_mb():
    """Current and peak resident set size of this process, in MB."""
    rss = _status_kb("VmRSS")
    hwm = _status_kb("VmHWM")
    if hwm is None:
        # ru_maxrss is kB on Linux, bytes on macOS.
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            hwm = hwm / 1024.0
    return {"rss": rss / 1024.0 if rss is not None else None, "peak": hwm / 1024.0}


# ---------------------------------------------------------------------------- sessions


class Session:
    """A loaded model: input specs and a call that maps {name: array} -> [arrays]."""

    runtime = "?"
    version = "?"
    inputs = []  # list of (name, shape list with None for dynamic dims, numpy dtype str)
    output_names = []

    def run(self, feeds):
        raise NotImplementedError

    def runtime_memory(self):
        """The runtime's own memory figures, where it has them (MB)."""
        return {}


# onnxruntime's GraphOptimizationLevel by the names its documentation gives the levels.
GRAPH_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                    "all": "ORT_ENABLE_ALL"}


class OnnxSession(Session):
    def __init__(self, path, threads, providers, graph_optimization_level=None, profile_prefix=None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise _missing("onnxruntime", "onnxruntime", e)
        self.runtime, self.version = "onnxruntime", ort.__version__
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        level = graph_optimization_level or "all"  # onnxruntime's own default
        if level not in GRAPH_OPT_LEVELS:
            raise JobFailed("graph_optimization_level %r is not one of %s" % (level, ", ".join(GRAPH_OPT_LEVELS)))
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[level])
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        available = ort.get_available_providers()
        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise JobFailed("onnxruntime %s lacks provider %s (available: %s)"
                            % (ort.__version__, ", ".join(missing), ", ".join(available)))
        try:
            self.sess = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:
            raise JobFailed("cannot load %s with onnxruntime: %s" % (os.path.basename(path), _first_line(e)))
        self.providers = self.sess.get_providers()
        self.options = {"providers": self.providers, "graph_optimization_level": level}
        types = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
                 "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
                 "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
        self.inputs = [(i.name, [d if isinstance(d, int) else None for d in i.shape], types.get(i.type, i.type))
                       for i in self.sess.get_inputs()]
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def run(self, feeds):
        return self.sess.run(None, feeds)


class TfliteSession(Session):
    def __init__(self, path, threads, runtime, xnnpack=True, delegate=None, delegate_options=None):
        interp_cls = None
        errors = []
        for name in ([runtime] if runtime not in (None, "auto") else ["ai-edge-litert", "tflite-runtime"]):
            try:
                if name == "ai-edge-litert":
                    from ai_edge_litert.interpreter import Interpreter as interp_cls  # noqa: N813
                    from ai_edge_litert import interpreter as module
                    from importlib import metadata

                    self.version = metadata.version("ai-edge-litert")
                elif name == "tflite-runtime":
                    import importlib.util

                    import numpy

                    if importlib.util.find_spec("tflite_runtime") is None:
                        raise ImportError("No module named 'tflite_runtime'")
                    if int(numpy.__version__.split(".")[0]) >= 2:
                        raise JobFailed("tflite-runtime needs numpy < 2 but numpy %s is installed; "
                                        "install ai-edge-litert instead" % numpy.__version__)
                    from tflite_runtime.interpreter import Interpreter as interp_cls  # noqa: N813
                    from tflite_runtime import interpreter as module
                    import tflite_runtime

                    self.version = getattr(tflite_runtime, "__version__", "unknown")
                else:
                    raise JobFailed("unknown TFLite runtime %r" % name)
                self.runtime = name
                break
            except ImportError as e:
                errors.append("%s: %s" % (name, e))
        if interp_cls is None:
            raise JobFailed("no TFLite runtime for %s (pip install ai-edge-litert): %s"
                            % (sys.executable, "; ".join(errors)))
        kwargs = {"model_path": path, "num_threads": int(threads) if threads else None}
        self.options = {"xnnpack": bool(xnnpack), "op_resolver": "BUILTIN" if xnnpack else
                        "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "delegate": delegate, "delegate_options": delegate_options}
        if not xnnpack:  # the builtin kernels alone: XNNPACK is the default delegate of the BUILTIN resolver
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if delegate:
            if not os.path.isfile(delegate):
                raise JobFailed("delegate library not found on this device: %s" % delegate)
            try:
                opts = dict((str(k), str(v)) for k, v in (delegate_options or {}).items())
                kwargs["experimental_delegates"] = [module.load_delegate(delegate, opts)]
            except Exception as e:
                raise JobFailed("cannot load delegate %s: %s" % (os.path.basename(delegate), _first_line(e)))
        try:
            self.interp = interp_cls(**kwargs)
            self.interp.allocate_tensors()
        except Exception as e:
            msg = _first_line(e)
            if self.runtime == "tflite-runtime" and "version" in msg:
                msg += " (tflite-runtime %s is too old for this model's ops; use ai-edge-litert)" % self.version
            raise JobFailed("cannot load %s with %s: %s" % (os.path.basename(path), self.runtime, msg))
        self.in_details = self.interp.get_input_details()
        self.out_details = self.interp.get_output_details()
        self.inputs = [(d["name"], [None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])],
                        _np_name(d["dtype"])) for d in self.in_details]
        self.output_names = [d["name"] for d in self.out_details]
        self._shape = {d["index"]: list(d["shape"]) for d in self.in_details}

    def run(self, feeds):
        import numpy as np

        for d, (name, _, _) in zip(self.in_details, self.inputs):
            x = feeds[name]
            if list(x.shape) != self._shape[d["index"]]:
                self.interp.resize_tensor_input(d["index"], list(x.shape))
                # Recorded before allocating: when allocation fails (a fixed-shape graph tried at another batch),
                # the tensor is resized all the same, and the next call must resize it back.
                self._shape[d["index"]] = list(x.shape)
                self.interp.allocate_tensors()
            scale, zero = d.get("quantization", (0.0, 0))
            if d["dtype"] in (np.int8, np.uint8) and x.dtype != d["dtype"] and scale:
                x = np.clip(np.round(x / scale + zero), np.iinfo(d["dtype"]).min,
                            np.iinfo(d["dtype"]).max).astype(d["dtype"])
            self.interp.set_tensor(d["index"], x)
        self.interp.invoke()
        outs = []
        for d in self.out_details:
            y = self.interp.get_tensor(d["index"])
            scale, zero = d.get("quantization", (0.0, 0))
            if y.dtype in (np.int8, np.uint8) and scale:
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y)
        return outs


class TorchSession(Session):
    def __init__(self, path, threads, device):
        try:
            import torch
        except ImportError as e:
            raise _missing("torch", "torch", e)
        self.torch = torch
        self.runtime, self.version = "torch", torch.__version__
        if threads:
            torch.set_num_threads(int(threads))
        self.device = device or "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise JobFailed("torch %s sees no CUDA device" % torch.__version__)
        try:
            self.module = torch.export.load(path).module().to(self.device)
        except Exception as e:
            raise JobFailed("cannot load %s with torch.export: %s" % (os.path.basename(path), _first_line(e)))
        ep_inputs = [n for n in self.module.graph.nodes if n.op == "placeholder"]
        self.inputs = []
        for n in ep_inputs:
            val = n.meta.get("val")
            if val is None:
                continue
            shape = [int(s) if isinstance(s, int) else None for s in val.shape]
            self.inputs.append((n.name, shape, str(val.dtype).replace("torch.", "")))
        self.output_names = ["output_%d" % i for i in range(1)]

    def run(self, feeds):
        torch = self.torch
        args = [torch.from_numpy(feeds[name]).to(self.device) for name, _, _ in self.inputs]
        with torch.no_grad():
            out = self.module(*args)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [o.detach().cpu().numpy() for o in outs]

    def runtime_memory(self):
        if self.device.startswith("cuda"):
            return {"gpu_peak_allocated": self.torch.cuda.max_memory_allocated() / 2 ** 20,
                    "gpu_peak_reserved": self.torch.cuda.max_memory_reserved() / 2 ** 20}
        return {}


def import_runtime(job):
    """Import the runtime module a job needs; a missing one is reported when the session opens."""
    import importlib

    # onnxruntime warns "Unsupported platform (android)" under Termux's Python; it runs all the same.
    warnings.filterwarnings("ignore", message=r"Unsupported platform \(android\)")
    fmt, runtime = job.get("format"), job.get("runtime")
    names = {"onnx": ["onnxruntime"], "torch": ["torch"],
             "tflite": {"ai-edge-litert": ["ai_edge_litert.interpreter"],
                        "tflite-runtime": ["tflite_runtime.interpreter"]}.get(
                 runtime, ["ai_edge_litert.interpreter", "tflite_runtime.interpreter"])}.get(fmt, [])
    for name in names:
        try:
            importlib.import_module(name)
            return
        except Exception:
            continue


def open_session(job):
    fmt = job["format"]
    path = job["artifact"]
    if not os.path.isfile(path):
        raise JobFailed("model file not found: %s" % path)
    if fmt == "onnx":
        return OnnxSession(path, job.get("threads"), job.get("providers"), job.get("graph_optimization_level"))
    if fmt == "tflite":
        xnnpack = job.get("xnnpack")
        return TfliteSession(path, job.get("threads"), job.get("runtime"), xnnpack is None or bool(xnnpack),
                             job.get("delegate"), job.get("delegate_options"))
    if fmt == "torch":
        return TorchSession(path, job.get("threads"), job.get("device"))
    raise JobFailed("unknown model format %r" % fmt)


# ----------------------------------------------------------------------------- inputs


def _np_name(dtype):
    import numpy as np

    return np.dtype(dtype).name


_MEMORY_SIGNS = ("Cannot allocate memory", "bad_alloc", "MemoryError", "failed to map segment", "out of memory")


def _first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # onnxruntime puts the useful part after the last "] "
    line = lines[0] if lines else text
    if len(lines) > 1 and len(line) < 20:
        line = " ".join(lines[:2])
    line = line[:400]
    if isinstance(exc, MemoryError) or any(s in text for s in _MEMORY_SIGNS):
        line += " (out of memory on the device?)"
    return line


def load_inputs(path, session, what):
    """Read an .npz and map its arrays onto the model inputs (by name, else by order)."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
        arrays = [(k, data[k]) for k in data.files]
    except Exception as e:
        raise JobFailed("cannot read %s inputs %s: %s" % (what, os.path.basename(path), _first_line(e)))
    if not arrays:
        raise JobFailed("%s inputs %s hold no arrays" % (what, os.path.basename(path)))
    names = [n for n, _, _ in session.inputs]
    by_name = dict(arrays)
    if all(n in by_name for n in names):
        mapped = [(n, by_name[n]) for n in names]
    elif len(arrays) == len(names):
        mapped = [(n, a) for n, (_, a) in zip(names, arrays)]
    else:
        raise JobFailed("%s inputs have %d arrays (%s) but the model takes %d (%s)"
                        % (what, len(arrays), ", ".join(by_name), len(names), ", ".join(names)))
    feeds = {}
    for (name, shape, dtype), (_, arr) in zip(session.inputs, mapped):
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise JobFailed("%s input %r contains NaN or inf" % (what, name))
        if dtype in ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool") \
                and arr.dtype.name != dtype:
            if arr.dtype.kind == np.dtype(dtype).kind or (arr.dtype.kind in "iu" and np.dtype(dtype).kind in "iu"):
                arr = arr.astype(dtype)
            elif not (dtype in ("int8", "uint8") and arr.dtype.kind == "f"):
                raise JobFailed("input %r expects %s but %s inputs are %s" % (name, dtype, what, arr.dtype.name))
        if shape and len(arr.shape) != len(shape):
            raise JobFailed("input %r expects shape %s but %s inputs have shape %s"
                            % (name, _fmt_shape(shape), what, list(arr.shape)))
        for i, (want, got) in enumerate(zip(shape, arr.shape)):
            if i > 0 and want is not None and got < want and arr.dtype.kind in "iub":
                # token ids / masks shorter than a fixed-length model's: pad with 0 (padding, masked out)
                arr = np.pad(arr, [(0, want - got if j == i else 0) for j in range(arr.ndim)])
                continue
            # dim 0 of evaluation inputs is the sample count; the model sees batch slices
            if want is not None and want != got and not (i == 0 and what == "evaluation"):
                raise JobFailed("input %r expects shape %s but %s inputs have shape %s"
                                % (name, _fmt_shape(shape), what, list(arr.shape)))
        feeds[name] = np.ascontiguousarray(arr)
    return feeds


def rebatch(feeds, session, batch):
    """The timing inputs at batch size `batch`: their samples repeated (or cut) along dimension 0."""
    import numpy as np

    out = {}
    for name, shape, _ in session.inputs:
        x = feeds[name]
        if shape and shape[0] is not None and shape[0] != batch:
            raise JobFailed("input %r has a fixed batch of %d; it cannot run at batch %d" % (name, shape[0], batch))
        if not x.ndim:
            raise JobFailed("input %r is a scalar; it has no batch dimension" % name)
        reps = -(-batch // max(1, x.shape[0]))
        out[name] = np.ascontiguousarray(np.concatenate([x] * reps)[:batch]) if reps > 1 else x[:batch]
    return out


def _fmt_shape(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# --------------------------------------------------------------------------- timing


_EXACT_CI_MAX_N = 1000  # exact binomial ranks up to here (as the host's scipy gives); beyond, the normal approx.


def _median_ci(sorted_vals, confidence=0.95):
    """Distribution-free CI of the median from order statistics: 1-based ranks [k, n + 1 - k] with k the
    largest rank such that P(X < k) <= (1 - confidence) / 2 for X ~ binomial(n, 1/2), as the host's
    median_ci computes it. Up to _EXACT_CI_MAX_N the sum is exact; beyond, the normal approximation with
    continuity correction (at most one rank wider than exact)."""
    import math

    n = len(sorted_vals)
    tail = (1.0 - confidence) / 2.0
    if n <= _EXACT_CI_MAX_N:
        log_all = n * math.log(0.5) + math.lgamma(n + 1)
        cdf, k = 0.0, 0
        for i in range(n // 2 + 1):
            cdf += math.exp(log_all - math.lgamma(i + 1) - math.lgamma(n - i + 1))
            if cdf > tail * (1 + 1e-12):
                break
            k = i + 1  # P(X <= i) <= tail: rank i + 1 may be the lower bound
    else:
        z = 1.959963984540054 if confidence == 0.95 else 2.5758293035489
        k = int(math.floor(n / 2.0 + 0.5 - z * math.sqrt(n) / 2.0))
    if k < 1:
        return sorted_vals[0], sorted_vals[-1]
    return sorted_vals[k - 1], sorted_vals[n - k]


def time_loop(session, feeds, job):
    """Warm up, then time runs until min count and min time (fixed) or CI precision (adaptive)."""
    perf = time.perf_counter_ns
    warmup = int(job.get("warmup", 5))
    runs = int(job.get("runs", 50))
    min_time_ns = int(float(job.get("min_time_s", 0.0)) * 1e9)
    max_time_ns = int(float(job.get("max_time_s", 60.0)) * 1e9)
    max_runs = int(job.get("max_runs", 100000))
    adaptive = job.get("mode", "fixed") == "adaptive"
    target_rel = float(job.get("target_rel_ci", 0.02))
    run = session.run

    warm = []
    stable_warmup = bool(job.get("warmup_until_stable", False))
    max_warmup = int(job.get("max_warmup", 200))
    while len(warm) < (max_warmup if stable_warmup else warmup):
        t0 = perf()
        run(feeds)
        warm.append(perf() - t0)
        # Stable: the median of the last 5 warm-up runs is within 5% of the 5 before them.
        if stable_warmup and len(warm) >= max(warmup, 10):
            a, b = sorted(warm[-10:-5])[2], sorted(warm[-5:])[2]
            if abs(b - a) <= 0.05 * a:
                break
    lat = []
    during = None
    half = max(1, runs // 2)
    start = perf()
    stopped_by = "count"
    while True:
        t0 = perf()
        run(feeds)
        lat.append(perf() - t0)
        n = len(lat)
        if n == half:  # device state mid-run, read between two timed iterations
            during = probe(full=False)
        elapsed = perf() - start
        if n >= max_runs:
            stopped_by = "max_runs"
            break
        if elapsed >= max_time_ns:
            stopped_by = "budget"
            break
        if n >= runs and elapsed >= min_time_ns:
            if not adaptive:
                stopped_by = "count"
                break
            if n % 10 == 0:
                s = sorted(lat)
                lo, hi = _median_ci(s)
                med = s[n // 2]
                if med > 0 and (hi - lo) / med <= target_rel:
                    stopped_by = "precision"
                    break
    return warm, lat, stopped_by, during


def run_eval(session, feeds, batch):
    """Run every evaluation sample in batches of `batch` and stack the outputs; returns (outputs, batch).

    Batching is only a shortcut: the first batch is checked against the same samples run one at a
    time, and a model whose outputs depend on the batch (onnxruntime's dynamic int8 quantizes each
    tensor with one scale over the whole batch), that will not run at that batch (a fixed batch dim,
    a reshape that bakes it in) or that returns other than one row per sample is evaluated one sample
    at a time, as it runs when deployed.
    """
    import numpy as np

    n = len(next(iter(feeds.values())))
    if batch > 1 and n > 1:
        k = min(batch, n)
        try:
            head = {name: v[:k] for name, v in feeds.items()}
            single = _eval_chunks(session, head, 1)
            first = _eval_chunks(session, head, batch)  # one batch, checked before the rest runs batched
            if (all(o.ndim and len(o) == k for o in first) and len(first) == len(single)
                    and all(np.allclose(o, s1, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(s1).max())))
                            for o, s1 in zip(first, single))):
                if k == n:
                    return first, batch
                rest = _eval_chunks(session, {name: v[k:] for name, v in feeds.items()}, batch)
                outs = [np.concatenate([a, b]) for a, b in zip(first, rest)]
                if all(len(o) == n for o in outs):
                    return outs, batch
            if k == n:  # the samples already run one at a time are kept
                return single, 1
            rest = _eval_chunks(session, {name: v[k:] for name, v in feeds.items()}, 1)
            return [np.concatenate([a, b]) for a, b in zip(single, rest)], 1
        except Exception:
            pass
    return _eval_chunks(session, feeds, 1), 1


def _eval_chunks(session, feeds, batch):
    import numpy as np

    n = len(next(iter(feeds.values())))
    chunks = None
    for i in range(0, n, batch):
        outs = session.run({k: v[i:i + batch] for k, v in feeds.items()})
        if chunks is None:
            chunks = [[] for _ in outs]
        for c, o in zip(chunks, outs):
            c.append(np.asarray(o))
    return [np.concatenate(c) for c in chunks or []]


# --------------------------------------------------------------------------- profiles

PROFILE_TOP = 15
# onnxruntime kernels that compute in 8-bit integers, beyond the QLinear* family
ONNX_INT8_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm",
                 "QAttention", "QEmbedLayerNormalization", "QOrderedMatMul", "MulInteger")
ONNX_CONVERT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
_INT_TYPES = ("int8", "uint8", "int4", "uint4")


def onnx_op_kind(op_type, input_types):
    """"int8" (an integer kernel), "convert" (quantize / dequantize) or "float", from an ORT node."""
    if op_type in ONNX_CONVERT_OPS or op_type == "Cast" and input_types and input_types[0].startswith(("int", "uint")):
        return "convert"  # a Cast of ConvInteger's int32 output to float is the dequantization's first half
    if op_type.startswith("QLinear") or op_type in ONNX_INT8_OPS:
        return "int8"
    # Data movement on 8-bit tensors (Reshape, Transpose, MaxPool of a quantized activation) runs quantized too.
    if input_types and input_types[0] in _INT_TYPES:
        return "int8"
    return "float"


def litert_op_kind(tag):
    """The same split from an XNNPACK operator name ("Convolution (NHWC, QC8) IGEMM", "Convert (NC)") or
    a builtin kernel's (its tensors' types are given then as "OP/int8")."""
    if tag.startswith("Convert") or tag.startswith("QUANTIZE") or tag.startswith("DEQUANTIZE"):
        return "convert"
    inside = tag[tag.find("(") + 1:tag.find(")")] if "(" in tag and ")" in tag else ""
    words = [w.strip() for w in inside.replace(",", " ").split()] + tag.split("/")[1:]
    if any(w[:2] in ("QS", "QU", "QC", "QD") or w in ("X8", "int8", "uint8") for w in words):
        return "int8"
    return "float"


def _mean_ms(ns):
    return round(float(sum(ns)) / len(ns) / 1e6, 6) if ns else None


def _median_ms(ns):
    s = sorted(ns)
    return round((s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2.0 / 1e6, 6) if s else None


def fold_ops(events, runs, source, wall_ns, bare_ns):
    """Fold per-operator events [(node, op_type, kind, us, provider, run)] over `runs` runs: the top operators
    by time, the time per op type, and the split between int8 kernels, conversions and float kernels.

    Times are means per run; the median run's operator time is given too (`op_ms_median_run`), for a device
    where other processes preempt some runs (the mean then carries their waits, the median does not)."""
    nodes, types, kinds, providers = {}, {}, {}, {}
    per_run_us = [0.0] * max(1, runs)
    for node, op_type, kind, us, provider, run in events:
        if 0 <= run < len(per_run_us):
            per_run_us[run] += us
        n = nodes.setdefault(node, {"name": node, "op_type": op_type, "kind": kind, "us": 0.0})
        n["us"] += us
        t = types.setdefault(op_type, {"op_type": op_type, "kind": kind, "us": 0.0, "nodes": set()})
        t["us"] += us
        t["nodes"].add(node)
        k = kinds.setdefault(kind, {"us": 0.0, "nodes": set()})
        k["us"] += us
        k["nodes"].add(node)
        if provider:
            providers[provider] = providers.get(provider, 0.0) + us
    total_us = sum(n["us"] for n in nodes.values())
    per_run = float(max(1, runs))

    def ms(us):
        return round(us / per_run / 1000.0, 6)

    def share(us):
        return round(us / total_us, 4) if total_us > 0 else 0.0

    top = sorted(nodes.values(), key=lambda n: -n["us"])[:PROFILE_TOP]
    out = {
        "source": source,
        "runs": runs,
        "op_ms_per_run": ms(total_us),
        "op_ms_median_run": _median_ms([us * 1000.0 for us in per_run_us]),
        "wall_ms_per_run": _mean_ms(wall_ns),  # the profiled runs, profiler overhead included
        "unprofiled_ms_per_run": _mean_ms(bare_ns),  # the timed session's runs, in blocks between them
        "unprofiled_ms_median_run": _median_ms(bare_ns),
        "nodes": len(nodes),
        "top_ops": [{"name": n["name"], "op_type": n["op_type"], "kind": n["kind"], "ms": ms(n["us"]),
                     "share": share(n["us"])} for n in top],
        "by_op_type": [{"op_type": t["op_type"], "kind": t["kind"], "nodes": len(t["nodes"]), "ms": ms(t["us"]),
                        "share": share(t["us"])} for t in sorted(types.values(), key=lambda t: -t["us"])],
        "precision": dict((k, {"nodes": len(v["nodes"]), "ms": ms(v["us"]), "share": share(v["us"])})
                          for k, v in sorted(kinds.items())),
    }
    if providers:
        out["providers_ms"] = dict((p, ms(us)) for p, us in providers.items())
    return out


def _timed_runs(run, feeds, runs):
    perf = time.perf_counter_ns
    wall = []
    for _ in range(runs):
        t0 = perf()
        run(feeds)
        wall.append(perf() - t0)
    return wall


QUIET_S = 0.2  # pause before each block of the profile pass: the last session's worker threads stop spinning
PROFILE_MIN_S = 0.5  # each block lasts at least this long (50 runs of a 0.3 ms model are one preemption's worth)
PROFILE_MAX_RUNS = 600  # and has at most this many runs (onnxruntime's trace: three events per node and run)
PROFILE_DISCARD = 5  # untimed runs after each pause (thread pools and caches wake up)


def _profile_pass(profiled, plain, feeds, runs, start=None):
    """The timed session's own runs, then as many profiled runs, each block alone after a pause; `start()`
    (the profiler's) is called just before the profiled runs that count. Returns (profiled, plain) ns.

    Not run for run in turn: runtimes' worker threads spin for a while after each run, and two sessions'
    pools alternating at short intervals slowed each other about 2x here (onnxruntime, 2 threads)."""
    time.sleep(QUIET_S)
    _timed_runs(plain, feeds, PROFILE_DISCARD)
    bare = _timed_runs(plain, feeds, runs)
    while sum(bare) < PROFILE_MIN_S * 1e9 and len(bare) < PROFILE_MAX_RUNS:
        bare += _timed_runs(plain, feeds, min(runs, PROFILE_MAX_RUNS - len(bare)))
    time.sleep(QUIET_S)
    _timed_runs(profiled, feeds, PROFILE_DISCARD)
    if start is not None:
        start()
    return _timed_runs(profiled, feeds, len(bare)), bare


def profile_onnx(job, feeds, runs, warmup, session):
    """onnxruntime's session profiler in a second session (same options): its chrome-trace file is read
    here, on the device, folded, and deleted."""
    prefix = os.path.join(job["out"], "ort-profile")
    sess = OnnxSession(job["artifact"], job.get("threads"), job.get("providers"), job.get("graph_optimization_level"),
                       profile_prefix=prefix)
    for _ in range(warmup):
        sess.run(feeds)
    wall, bare = _profile_pass(sess.run, session.run, feeds, runs)
    path = sess.sess.end_profiling()
    try:
        with open(path) as f:
            trace = json.load(f)
    finally:
        for p in glob.glob(prefix + "*.json"):
            os.remove(p)
    if isinstance(trace, dict):
        trace = trace.get("traceEvents", [])
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("name") == "model_run")[-len(wall):]
    start = windows[0][0] if windows else 0
    starts = [a for a, _ in windows]
    events = []
    for e in trace:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", 0) < start:
            continue
        args = e.get("args") or {}
        op_type = args.get("op_name", "?")
        types = [list(t)[0] for t in args.get("input_type_shape") or [] if isinstance(t, dict) and t]
        events.append((name[:-len("_kernel_time")], op_type, onnx_op_kind(op_type, types), float(e.get("dur", 0)),
                       args.get("provider"), bisect.bisect_right(starts, e["ts"]) - 1))
    floor_us = onnx_profiler_floor_us(events, wall, bare)
    raw_ms = sum(e[3] for e in events) / max(1, len(windows)) / 1000.0
    if floor_us > 0:
        events = [(n, t, k, max(0.0, us - floor_us), p, r) for n, t, k, us, p, r in events]
    out = fold_ops(events, len(windows), "onnxruntime session profiling (SessionOptions.enable_profiling)", wall,
                   bare)
    out["model_run_ms_per_run"] = round(sum(b - a for a, b in windows) / max(1, len(windows)) / 1000.0, 6)
    out["op_ms_raw_per_run"] = round(raw_ms, 6)
    out["profiler_floor_us"] = round(floor_us, 3)
    out["compensation"] = ("each operator's time less the profiler's own cost inside its window, %.1f us: the "
                           "cheapest operator's median time, at most the profiled runs' extra wall time per "
                           "operator" % floor_us)
    return out


def onnx_profiler_floor_us(events, wall_ns, bare_ns):
    """onnxruntime's profiler builds each node's record (its shapes, sizes and names, as strings) inside the
    node's timed window: about 4-8 us per node here, most of a 10 us kernel of a small model. That cost is
    estimated like a profiler calibration (Python's profile.Profile.bias): the median time of the cheapest
    node (a Reshape or Flatten does next to no work), capped by what profiling added per node to the whole
    run (profiled minus unprofiled wall time), so a graph of only heavy nodes is not robbed of real work."""
    per_node = {}
    for node, _, _, us, _, _ in events:
        per_node.setdefault(node, []).append(us)
    if not per_node or not wall_ns or not bare_ns:
        return 0.0
    cheapest = min(sorted(v)[(len(v) - 1) // 2] for v in per_node.values())
    per_run_nodes = float(len(events)) / len(wall_ns)
    extra_us = (float(sum(wall_ns)) / len(wall_ns) - float(sum(bare_ns)) / len(bare_ns)) / 1000.0
    return max(0.0, min(float(cheapest), extra_us / per_run_nodes if per_run_nodes else 0.0))


# LiteRT's C API (libLiteRt.so, shipped in ai-edge-litert): the Python Interpreter has no op profiler, the
# CompiledModel API has one. Event types from litert_profiler_event.h.
_LRT_OP_EVENT, _LRT_DELEGATE_OP_EVENT, _LRT_DELEGATE_PROFILED_OP_EVENT = 2, 4, 8


class LiteRtProfiler:
    """The model compiled by LiteRT's C API (CPU accelerator, XNNPACK) with its profiler on, through ctypes."""

    def __init__(self, path, threads=None):
        import ctypes

        import ai_edge_litert

        self.C = C = ctypes
        lib_path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
        if not os.path.isfile(lib_path):
            raise JobFailed("this ai-edge-litert has no libLiteRt.so, whose profiler the op profile needs")
        self.lib = lib = C.CDLL(lib_path)
        vp = C.c_void_p
        self.env, self.model, self.opts, self.cm = vp(), vp(), vp(), vp()
        self._ok(lib.LiteRtCreateEnvironment(0, None, C.byref(self.env)), "create an environment")
        self._ok(lib.LiteRtCreateModelFromFile(self.env, path.encode(), C.byref(self.model)), "load the model")
        self._ok(lib.LiteRtCreateOptions(C.byref(self.opts)), "create options")
        self._ok(lib.LiteRtSetOptionsHardwareAccelerators(self.opts, 1), "choose the CPU")
        # Runtime options travel as a TOML string under this identifier (litert/runtime/litert_runtime_options.h).
        self._payload = C.create_string_buffer(b"enable_profiling = true")
        self._keep = C.CFUNCTYPE(None, vp)(lambda p: None)  # the string is ours: nothing to free
        opaque = vp()
        self._ok(lib.LiteRtCreateOpaqueOptions(b"runtime_options_string", C.cast(self._payload, vp), self._keep,
                                               C.byref(opaque)), "create runtime options")
        self._ok(lib.LiteRtAddOpaqueOptions(self.opts, opaque), "add runtime options")
        if threads:
            # The CPU accelerator's own options (identifier "xnnpack", litert_cpu_options.cc): its default is one
            # thread, so without this the profiled runs would be single-threaded beside a 2-thread timed session.
            self._cpu = C.create_string_buffer(b"num_threads = %d" % int(threads))
            cpu = vp()
            self._ok(lib.LiteRtCreateOpaqueOptions(b"xnnpack", C.cast(self._cpu, vp), self._keep, C.byref(cpu)),
                     "create CPU options")
            self._ok(lib.LiteRtAddOpaqueOptions(self.opts, cpu), "add CPU options")
        self._ok(lib.LiteRtCreateCompiledModel(self.env, self.model, self.opts, C.byref(self.cm)), "compile")
        self.prof = vp()
        self._ok(lib.LiteRtCompiledModelGetProfiler(self.cm, C.byref(self.prof)), "get the profiler")
        if not self.prof.value:
            raise JobFailed("LiteRT compiled the model without a profiler")
        sig = vp()
        self._ok(lib.LiteRtGetModelSignature(self.model, 0, C.byref(sig)), "read the signature")
        self.inputs = self._buffers(sig, "Input")
        self.outputs = self._buffers(sig, "Output")
        self._in = (vp * len(self.inputs))(*[b for b, _ in self.inputs])
        self._out = (vp * len(self.outputs))(*[b for b, _ in self.outputs])

    def _ok(self, status, what):
        if status != 0:
            raise JobFailed("LiteRT profiler: cannot %s (LiteRtStatus %d)" % (what, status))

    def _buffers(self, sig, side):
        C, lib = self.C, self.lib
        n = C.c_size_t()
        self._ok(getattr(lib, "LiteRtGetNumSignature%ss" % side)(sig, C.byref(n)), "count the tensors")
        out = []
        for i in range(n.value):
            tensor, req, buf, size = C.c_void_p(), C.c_void_p(), C.c_void_p(), C.c_size_t()
            self._ok(getattr(lib, "LiteRtGetSignature%sTensorByIndex" % side)(sig, i, C.byref(tensor)), "read a tensor")
            ttype = C.create_string_buffer(512)  # LiteRtRankedTensorType, opaque here (about 70 bytes)
            self._ok(lib.LiteRtGetRankedTensorType(tensor, ttype), "read a tensor type")
            self._ok(getattr(lib, "LiteRtGetCompiledModel%sBufferRequirements" % side)(self.cm, 0, i, C.byref(req)),
                     "read buffer requirements")
            self._ok(lib.LiteRtCreateManagedTensorBufferFromRequirements(self.env, ttype, req, C.byref(buf)),
                     "create a buffer")
            self._ok(lib.LiteRtGetTensorBufferSize(buf, C.byref(size)), "size a buffer")
            out.append((buf, size.value))
        return out

    def set_inputs(self, arrays):
        C = self.C
        for (buf, size), arr in zip(self.inputs, arrays):
            data = arr.tobytes()
            if len(data) != size:
                raise JobFailed("LiteRT profiler: an input has %d bytes, the compiled model wants %d"
                                % (len(data), size))
            host = C.c_void_p()
            self._ok(self.lib.LiteRtLockTensorBuffer(buf, C.byref(host), 1), "lock a buffer")
            C.memmove(host, data, size)
            self._ok(self.lib.LiteRtUnlockTensorBuffer(buf), "unlock a buffer")

    def run(self, _feeds=None):
        self._ok(self.lib.LiteRtRunCompiledModel(self.cm, 0, len(self.inputs), self._in, len(self.outputs),
                                                 self._out), "run")

    def events(self):
        """The recorded events as (tag, type, elapsed us, node index, start us)."""
        import struct

        C, lib = self.C, self.lib
        n = C.c_int()
        self._ok(lib.LiteRtGetNumProfilerEvents(self.prof, C.byref(n)), "count events")
        if n.value <= 0:
            return []
        raw = C.create_string_buffer(n.value * 256)  # room for any layout of ProfiledEventData
        self._ok(lib.LiteRtGetProfilerEvents(self.prof, n.value, raw), "read events")
        # ProfiledEventData's size depends on the build's MemoryUsage struct (88, 104 or 120 bytes): take the
        # one under which every event has a valid type and source.
        for stride in (120, 104, 88):
            out = []
            for i in range(n.value):
                off = i * stride
                tag, kind = struct.unpack_from("<Qi", raw, off)
                elapsed = struct.unpack_from("<Q", raw, off + 24)[0]
                meta1, _, source = struct.unpack_from("<QQi", raw, off + stride - 24)
                if kind <= 0 or kind & (kind - 1) or kind > 256 or source not in (0, 1, 2):
                    break
                start = struct.unpack_from("<Q", raw, off + 16)[0]
                out.append((C.string_at(tag).decode("utf-8", "replace") if tag else "", kind, elapsed, meta1, start))
            else:
                return out
        raise JobFailed("LiteRT profiler: its events have a layout this runner does not know")

    def close(self):
        for fn, handle in (("LiteRtDestroyCompiledModel", self.cm), ("LiteRtDestroyOptions", self.opts),
                           ("LiteRtDestroyModel", self.model), ("LiteRtDestroyEnvironment", self.env)):
            if handle.value:
                getattr(self.lib, fn)(handle)


def profile_litert(job, feeds, runs, warmup, session):
    """LiteRT's op profiler (the CompiledModel C API's), on the same inputs; XNNPACK names tell its kernels'
    precision, builtin kernels are labelled from their input tensors' types in the timed interpreter."""
    if session.runtime != "ai-edge-litert":
        raise JobFailed("op profiles of TFLite models need ai-edge-litert (its LiteRT profiler); this device "
                        "runs %s" % session.runtime)
    if not session.options["xnnpack"] or session.options["delegate"]:
        raise JobFailed("op profiles of TFLite models come from LiteRT's CPU path (XNNPACK); this cell runs "
                        "without XNNPACK or with a delegate, so a profile would describe other kernels")
    import numpy as np

    arrays = []
    for d, (name, _, _) in zip(session.in_details, session.inputs):
        x = feeds[name]
        scale, zero = d.get("quantization", (0.0, 0))
        if d["dtype"] in (np.int8, np.uint8) and x.dtype != d["dtype"] and scale:
            x = np.clip(np.round(x / scale + zero), np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
        arrays.append(np.ascontiguousarray(x, dtype=d["dtype"]))
    prof = LiteRtProfiler(job["artifact"], job.get("threads"))
    try:
        prof.set_inputs(arrays)
        for _ in range(warmup):
            prof.run()
        lib = prof.lib

        def start():
            prof._ok(lib.LiteRtResetProfiler(prof.prof), "reset the profiler")
            prof._ok(lib.LiteRtStartProfiler(prof.prof), "start the profiler")

        wall, bare = _profile_pass(prof.run, session.run, feeds, runs, start)
        prof._ok(lib.LiteRtStopProfiler(prof.prof), "stop the profiler")
        raw = prof.events()
    finally:
        prof.close()
    ops = session.interp._get_ops_details() if hasattr(session.interp, "_get_ops_details") else []
    dtypes = {}
    for t in session.interp.get_tensor_details():
        dtypes[t["index"]] = np.dtype(t["dtype"]).name
    delegated = any(kind in (_LRT_DELEGATE_OP_EVENT, _LRT_DELEGATE_PROFILED_OP_EVENT) for _, kind, _, _, _ in raw)
    # Each run opens with one "Invoke" event (type DEFAULT); the operators recorded after it are that run's
    # (XNNPACK's own events carry no start time, so it is their order that tells).
    events, run = [], -1
    for tag, kind, us, index, _ in raw:
        if kind == 1 and tag == "Invoke":
            run += 1
        elif kind in (_LRT_DELEGATE_OP_EVENT, _LRT_DELEGATE_PROFILED_OP_EVENT):
            events.append(("%s:%d" % (tag, index), tag, litert_op_kind(tag), float(us), "XNNPACK", run))
        elif kind == _LRT_OP_EVENT:
            if delegated and "Delegate" in tag:
                continue  # the delegate's own node: its operators are counted one by one
            op = ops[index] if 0 <= index < len(ops) else {}
            first = [i for i in op.get("inputs", []) if i >= 0][:1]
            dtype = dtypes.get(first[0], "") if first else ""
            label = "%s/%s" % (tag, dtype) if dtype else tag
            events.append(("%s:%d" % (tag, index), tag, litert_op_kind(label), float(us), "builtin", run))
    return fold_ops(events, len(wall), "LiteRT profiler (CompiledModel C API, CPU accelerator: XNNPACK)", wall,
                    bare)


def op_profile(job, session, feeds):
    """The per-operator profile of a job that asks for one; a failure is recorded, not fatal."""
    runs = max(1, int(job.get("profile_runs") or 50))
    warmup = max(10, int(job.get("warmup") or 0))  # a fresh session's first runs are slow (arena, thread pool)
    try:
        if job["format"] == "onnx":
            return profile_onnx(job, feeds, runs, warmup, session)
        if job["format"] == "tflite":
            return profile_litert(job, feeds, runs, warmup, session)
        return {"error": "no operator profiler for %s models" % job["format"]}
    except JobFailed as e:
        return {"error": str(e)}
    except Exception as e:  # the timings stand without a profile
        return {"error": "profiling failed: %s" % _first_line(e)}


# ----------------------------------------------------------------------------- main


def execute(job, keep=None):
    """Run one job and return the result dict (raises JobFailed on a job-level error).

    `keep`, a dict, receives the loaded session and timing feeds for resident blocks afterwards.
    """
    try:
        import numpy  # noqa: F401 - the runner's one dependency besides the runtime: a clear error if missing
    except ImportError as e:
        raise _missing("numpy", "numpy", e)

    result = {"runner_version": RUNNER_VERSION, "status": "ok", "error": None}
    if job.get("affinity"):
        try:
            job["affinity"] = resolve_affinity(job["affinity"])
            os.sched_setaffinity(0, set(job["affinity"]))
        except (OSError, AttributeError, ValueError) as e:
            raise JobFailed("cannot pin to CPUs %s: %s" % (job["affinity"], e))
    if not job.get("threads"):
        # Explicit and recorded: default to every CPU this process may use.
        job["threads"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result["device"] = probe()
    # Import the runtime first, so load time and memory are the model's, not the library's.
    t0 = time.perf_counter_ns()
    import_runtime(job)
    result["runtime_import_ns"] = time.perf_counter_ns() - t0
    mem0 = memory_mb()
    t0 = time.perf_counter_ns()
    session = open_session(job)
    load_ns = time.perf_counter_ns() - t0
    mem_load = memory_mb()
    result.update({
        "runtime": session.runtime,
        "runtime_version": session.version,
        "providers": getattr(session, "providers", None),
        "runtime_options": getattr(session, "options", None),
        "inputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in session.inputs],
        "outputs": session.output_names,
        "threads": job.get("threads"),
        "load_ns": load_ns,
    })
    timed = job.get("timing_inputs")
    if timed:
        feeds = load_inputs(timed, session, "timing")
        if job.get("batch"):
            feeds = rebatch(feeds, session, int(job["batch"]))
            result["batch"] = int(job["batch"])
        result["timed_shapes"] = {k: list(v.shape) for k, v in feeds.items()}  # after any padding
        t0 = time.perf_counter_ns()
        try:
            session.run(feeds)
        except JobFailed:
            raise
        except Exception as e:
            raise JobFailed("inference failed: %s" % _first_line(e))
        result["first_inference_ns"] = time.perf_counter_ns() - t0
        mem_first = memory_mb()
        if keep is not None:
            keep.update(session=session, feeds=feeds)
        if int(job.get("runs", 50)) > 0:
            warm, lat, stopped_by, during = time_loop(session, feeds, job)
            result["device_during"] = during
            result.update({"warmup_ns": warm, "latencies_ns": lat, "stopped_by": stopped_by})
    else:
        mem_first = mem_load
    # The model's peak: load, first inference and the timed loop, before evaluation data is read.
    mem_measured = memory_mb()
    eval_path = job.get("eval_inputs")
    if eval_path and keep is not None and job.get("defer_eval"):
        # A resident runner evaluates on the host's command, after every runner's load and first inference
        # were timed one at a time: the host may then run several evaluation passes at once.
        def deferred():
            evaluate(job, session, eval_path, result)
            result["memory_mb"].update(rss_end=memory_mb()["rss"], peak_rss_with_eval=memory_mb()["peak"])

        keep["evaluate"] = deferred
    elif eval_path:
        evaluate(job, session, eval_path, result)
    mem_end = memory_mb()
    result["memory_mb"] = {
        "rss_before_load": mem0["rss"],
        "rss_after_load": mem_load["rss"],
        "rss_after_first_inference": mem_first["rss"],
        "rss_end": mem_end["rss"],
        "peak_rss": mem_measured["peak"],
        "peak_rss_with_eval": mem_end["peak"],
        "method": "VmRSS/VmHWM from /proc/self/status (ru_maxrss where absent), whole process; peak_rss "
                  "covers load, first inference and the timed runs, before the evaluation set is loaded",
    }
    result["memory_mb"].update(session.runtime_memory())
    result["device_after"] = probe(full=False)
    if job.get("profile") and timed:
        # Last, in its own session: the timings, memory and device state above are the profiler-free run's.
        result["op_profile"] = op_profile(job, session, feeds)
    return result


def evaluate(job, session, eval_path, result):
    """The evaluation pass: every evaluation sample's outputs to outputs.npz (the timing feeds stay, for the
    profile)."""
    import numpy as np

    eval_feeds = load_inputs(eval_path, session, "evaluation")
    try:
        outs, result["eval_batch"] = run_eval(session, eval_feeds, int(job.get("eval_batch", 1)))
    except JobFailed:
        raise
    except Exception as e:
        raise JobFailed("inference on evaluation inputs failed: %s" % _first_line(e))
    np.savez(os.path.join(job["out"], "outputs.npz"), **{"output_%d" % i: o for i, o in enumerate(outs)})
    result["eval_n"] = int(len(next(iter(eval_feeds.values()))))


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


_NO_ROOM = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


def _no_room(folder, e):
    return ("cannot write the results in %s: %s; free space there or set the target's workdir to a writable "
            "folder" % (folder, e.strerror or e))


def serve(session, feeds, stdin, stdout, evaluate_pass=None):
    """Resident mode: time blocks on request until told to exit (or stdin closes); `{"cmd": "eval"}` runs a
    deferred evaluation pass (`evaluate_pass`, which rewrites result.json) and answers ok or its error."""
    perf = time.perf_counter_ns
    run = session.run
    stdout.write("READY\n")
    stdout.flush()
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd.get("cmd") == "eval":
            try:
                if evaluate_pass is None:
                    raise JobFailed("this runner has no evaluation pass to run")
                evaluate_pass()
                reply = {"eval": "ok"}
            except JobFailed as e:
                reply = {"error": str(e)}
            except MemoryError:
                reply = {"error": "out of memory on the device"}
            except Exception as e:
                reply = {"error": "runner error: %s: %s" % (type(e).__name__, _first_line(e))}
            stdout.write(json.dumps(reply) + "\n")
            stdout.flush()
            continue
        if cmd.get("cmd") != "block":
            break
        for _ in range(int(cmd.get("discard", 0))):  # caches and thread pools wake up after a switch
            run(feeds)
        lat = []
        for _ in range(int(cmd.get("runs", 1))):
            t0 = perf()
            run(feeds)
            lat.append(perf() - t0)
        stdout.write(json.dumps({"latencies_ns": lat}) + "\n")
        stdout.flush()
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "--probe":
        print(json.dumps(probe()))
        return 0
    resident = len(argv) == 3 and argv[2] == "--serve"
    if len(argv) != 2 and not resident:
        sys.stderr.write("usage: runner.py JOB.json [--serve] | --probe\n")
        return 64
    with open(argv[1]) as f:
        job = json.load(f)
    out_json = os.path.join(job["out"], "result.json")
    keep = {} if resident else None
    try:
        os.makedirs(job["out"], exist_ok=True)
        result = execute(job, keep)
        code = 0
    except JobFailed as e:
        result = {"runner_version": RUNNER_VERSION, "status": "failed", "error": str(e)}
        code = 2
    except MemoryError:
        result = {"runner_version": RUNNER_VERSION, "status": "failed", "error": "out of memory on the device"}
        code = 2
    except Exception as e:
        if isinstance(e, OSError) and e.errno in _NO_ROOM:  # a full or read-only workdir
            result = {"runner_version": RUNNER_VERSION, "status": "failed", "error": _no_room(job["out"], e)}
            code = 2
        else:  # a runtime bug: keep the traceback for the host's log
            result = {"runner_version": RUNNER_VERSION, "status": "failed",
                      "error": "runner error: %s: %s" % (type(e).__name__, _first_line(e)),
                      "traceback": traceback.format_exc()}
            code = 3
    try:
        write_json(out_json, result)
    except OSError as e:  # not even the result fits: say so on stderr, which the host shows
        sys.stderr.write("edge-harness runner: %s\n" % _no_room(job["out"], e))
        return 4
    if resident and code == 0 and keep.get("session") is not None:
        try:
            deferred = keep.get("evaluate")

            def evaluate_pass():
                deferred()
                write_json(out_json, result)

            return serve(keep["session"], keep["feeds"], sys.stdin, sys.stdout, evaluate_pass if deferred else None)
        except Exception as e:  # a block that fails: the host sees the process end with this line
            sys.stderr.write("edge-harness runner: block failed: %s\n" % _first_line(e))
            return 3
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
