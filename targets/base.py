"""The target interface: where a job runs, and the plain data that goes in and comes back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from targets.errors import TargetSettingError

# The files that run on a device, each copied there alone.
RUNNER_PATH = Path(__file__).with_name("runner.py")
WATCHDOG_PATH = Path(__file__).with_name("watchdog.py")


@dataclass
class Job:
    """One measurement: an artifact, its inputs, and how to time it. Paths are host paths."""

    artifact: str
    format: str
    timing_inputs: str | None = None
    eval_inputs: str | None = None
    runs: int = 50
    warmup: int = 5
    warmup_until_stable: bool = False
    min_time_s: float = 0.5
    max_time_s: float = 60.0
    mode: str = "fixed"  # "fixed" or "adaptive"
    target_rel_ci: float = 0.02
    threads: int | None = None
    affinity: list[int] | None = None
    runtime: str = "auto"
    providers: list[str] | None = None
    graph_optimization_level: str | None = None  # onnxruntime: "disable" | "basic" | "extended" | "all"
    xnnpack: bool | None = None  # LiteRT: False = the BUILTIN_WITHOUT_DEFAULT_DELEGATES op resolver
    delegate: str | None = None  # LiteRT: an external delegate library (a device path), via load_delegate
    delegate_options: dict[str, Any] | None = None
    batch: int | None = None  # time at this batch size (the timing inputs' samples repeated along dim 0)
    profile: bool = False  # then a per-operator profile from the runtime's profiler, after the timed runs
    profile_runs: int = 50
    device: str | None = None
    eval_batch: int = 1
    defer_eval: bool = False  # resident runners: the evaluation pass waits for the host's command
    timeout_s: float = 600.0

    def with_runtime_options(self, options: dict[str, Any]) -> Job:
        """This job with runtime options (RUNTIME_OPTIONS keys) set where `options` gives them."""
        for key, value in options.items():
            if key in RUNTIME_OPTIONS and value is not None:
                setattr(self, key, value)
        return self

    def to_runner(self, artifact: str, timing: str | None, evaluation: str | None, out: str) -> dict[str, Any]:
        """The JSON the runner reads, with paths as the device sees them."""
        d = asdict(self)
        d.update(artifact=artifact, timing_inputs=timing, eval_inputs=evaluation, out=out)
        return d


@dataclass
class RawResult:
    """What a runner returned: raw timings in ns, memory, device state, evaluation outputs."""

    status: str
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    outputs: list[np.ndarray] | None = None
    exit_code: int | None = None
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, error: str, **kw: Any) -> RawResult:
        return cls(status="failed", error=error, **kw)


# Runtime options, named as the runtimes name them, with the format each applies to; a variant or a
# target may set them (the variant wins).
RUNTIME_OPTIONS: dict[str, str] = {"providers": "onnx", "graph_optimization_level": "onnx", "xnnpack": "tflite",
                                   "delegate": "tflite", "delegate_options": "tflite"}
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def runtime_option_error(key: str, value: Any) -> str | None:
    """Why a runtime option's value is wrong (one line), or None when it is right."""
    if key not in RUNTIME_OPTIONS:
        return f"unknown runtime option {key!r} (known: {', '.join(RUNTIME_OPTIONS)})"
    if key == "providers" and not (isinstance(value, list) and value and all(isinstance(p, str) and p.strip()
                                                                              for p in value)):
        return f"providers must be a non-empty list of onnxruntime provider names, got {value!r}"
    if key == "graph_optimization_level" and value not in GRAPH_OPTIMIZATION_LEVELS:
        return f"graph_optimization_level {value!r} is not one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}"
    if key == "xnnpack" and not isinstance(value, bool):
        return f"xnnpack must be true or false, got {value!r}"
    if key == "delegate" and not (isinstance(value, str) and value.strip()):
        return f"delegate must be the path of a delegate library on the device, got {value!r}"
    if key == "delegate_options" and not (isinstance(value, dict) and all(
            isinstance(v, (str, int, float, bool)) for v in value.values())):
        return f"delegate_options must be a table of names to strings or numbers, got {value!r}"
    return None


# Settings every target kind takes, with the types a targets file may give them.
COMMON_SETTINGS: dict[str, tuple[type, ...]] = {
    "kind": (str,), "threads": (int,), "python": (str,), "workdir": (str,), "affinity": (list,),
    "providers": (list,), "graph_optimization_level": (str,), "xnnpack": (bool,), "delegate": (str,),
    "delegate_options": (dict,),
}


class Target(ABC):
    """A place where artifacts run. Subclasses register by kind with `register_target`.

    `SETTINGS` names the keys (and their TOML types) this kind takes beside `COMMON_SETTINGS`;
    `REQUIRED` the ones it cannot do without. The targets file is validated against them.
    """

    kind: str = "?"
    SETTINGS: ClassVar[dict[str, tuple[type, ...]]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def setting_types(cls) -> dict[str, tuple[type, ...]]:
        """Every key a targets-file table of this kind may hold, with its allowed types."""
        return {**COMMON_SETTINGS, **cls.SETTINGS}

    @classmethod
    def replicas(cls, name: str, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The targets one targets-file table stands for (several identical boards for a lab target)."""
        return {name: spec}

    def __init__(self, name: str, threads: int | None = None, **settings: Any) -> None:
        self.name = name
        self.threads = threads
        self.settings = settings
        for key in RUNTIME_OPTIONS:
            why = runtime_option_error(key, settings[key]) if key in settings else None
            if why:
                raise TargetSettingError(f"target {name}: {why}")

    @property
    def runtime_options(self) -> dict[str, Any]:
        """The runtime options this target's table sets (a variant's own replace them)."""
        return {k: self.settings[k] for k in RUNTIME_OPTIONS if k in self.settings}

    @property
    def host(self) -> str:
        return "localhost"

    @abstractmethod
    def probe(self) -> dict[str, Any]:
        """Describe the device (CPU, cores, runtimes, ...) by running the runner's probe."""

    def deploy(self, path: Path) -> str:
        """Make a file available on the device; return the device-side path."""
        return str(path)

    @abstractmethod
    def run(self, job: Job) -> RawResult:
        """Run one job with the runner in a fresh process and return its raw result."""

    # Whether `open_resident` works here: a model kept loaded in a runner process, timed in blocks.
    resident: bool = False

    def open_resident(self, job: Job, lifetime_s: float | None = None) -> Any:
        """A resident runner (a targets.resident.Resident) for `job`, on targets that keep one. `lifetime_s`:
        how long it may live at most (the whole race), where the target enforces one (the SSH watchdog)."""
        raise NotImplementedError(f"target kind {self.kind} runs each job in a fresh process only")

    def acquire(self) -> None:
        """Hold the device for this process until close(), so no other harness run measures there meanwhile
        (waits while one does, or raises targets.device_lock.DeviceBusy under `--no-wait`)."""

    def close(self) -> None:
        """Release connections and temporary files."""

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "host": self.host}


TARGETS: dict[str, type[Target]] = {}


def register_target(kind: str) -> Callable[[type[Target]], type[Target]]:
    """Register a Target class under a kind ("local", "gpu", "ssh")."""

    def wrap(cls: type[Target]) -> type[Target]:
        cls.kind = kind
        TARGETS[kind] = cls
        return cls

    return wrap
