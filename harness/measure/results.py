"""Result dataclasses: one Measurement per (variant, format) cell, one TargetReport per target."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

SCHEMA_VERSION = 1


@dataclass
class Measurement:
    """One cell of the variant x format matrix on one target. Units are in the key names."""

    variant: str
    format: str
    status: str  # "ok" | "failed" | "skipped"
    error: str | None = None
    artifact: dict[str, Any] | None = None
    latency_ms: dict[str, Any] | None = None
    cold_start_ms: dict[str, Any] | None = None
    memory_mb: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    device_state: dict[str, Any] | None = None
    raw_latencies_ms: list[float] | None = None
    derived: dict[str, Any] = field(default_factory=dict)  # compression ratio, speed-up, accuracy change
    threads_sweep: list[dict[str, Any]] | None = None  # p50 per thread count, when asked for
    batch_sweep: list[dict[str, Any]] | None = None  # p50 and items/s per batch size, when asked for
    # Per-operator profile from the runtime's profiler (top ops, time per op type, int8 vs float), when asked for
    op_profile: dict[str, Any] | None = None
    # Interleaved measurement: the cell's median in each round's block, in round order (None: not timed
    # that round, e.g. stopped early by racing). Cells of one target share the rounds, so two cells'
    # lists pair up round by round (harness.measure.stats.paired_ratio).
    block_p50_ms: list[float | None] | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.format}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """A cell from report.json; a malformed one is a HarnessError naming the field."""
        if not isinstance(d, dict):
            raise HarnessError(f"a measurement must be an object, got {type(d).__name__}")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for f in fields(cls):
            if f.name in known:
                _check_shape(known[f.name], str(f.type), f"measurement {d.get('variant')!r}.{f.name}")
            elif f.default is MISSING and f.default_factory is MISSING:
                raise HarnessError(f"a measurement lacks {f.name!r}")
        if not known["variant"] or not known["format"]:
            raise HarnessError("a measurement has an empty variant or format")
        if known["status"] not in ("ok", "failed", "skipped"):
            raise HarnessError(f"measurement {known['variant']!r}: status {known['status']!r} is not ok, failed "
                               "or skipped")
        if known["status"] == "ok" and not _number((known.get("latency_ms") or {}).get("p50")):
            raise HarnessError(f"measurement {known['variant']!r}: status ok without a latency_ms.p50")
        return cls(**known)


@dataclass
class TargetReport:
    """Everything measured on one target; report.json is this, Markdown and HTML render it."""

    target: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    harness_version: str = ""
    schema_version: int = SCHEMA_VERSION
    recommendation: dict[str, Any] | None = None  # the decision (pick, tied, limits, reason), set by the report stage
    measurement: dict[str, Any] = field(default_factory=dict)  # how the target was measured (rounds, racing, budget)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measurements"] = [m.to_dict() for m in self.measurements]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetReport:
        """A report from report.json; every malformed shape is a HarnessError naming what is wrong."""
        if not isinstance(d, dict):
            raise HarnessError(f"a report must be a JSON object, got {type(d).__name__}")
        if d.get("schema_version") != SCHEMA_VERSION or isinstance(d.get("schema_version"), bool):
            raise HarnessError(f"report schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}")
        target = d.get("target")
        if not isinstance(target, dict) or not isinstance(target.get("name"), str) or not target["name"]:
            raise HarnessError("report target must be an object with a name")
        for key in ("kind", "host"):
            if not isinstance(target.get(key, ""), str):
                raise HarnessError(f"report target.{key} must be a string")
        if not isinstance(target.get("device") or {}, dict):
            raise HarnessError("report target.device must be an object")
        cells = d.get("measurements", [])
        if not isinstance(cells, list):
            raise HarnessError("report measurements must be a list")
        for key, want in (("task", dict), ("created", str), ("harness_version", str), ("measurement", dict)):
            if d.get(key) is not None and not isinstance(d[key], want):
                raise HarnessError(f"report {key} must be {'an object' if want is dict else 'a string'}")
        if d.get("recommendation") is not None and not isinstance(d["recommendation"], dict):
            raise HarnessError("report recommendation must be an object or null")
        measurements = [Measurement.from_dict(m) for m in cells]
        seen: set[str] = set()
        for m in measurements:
            if m.key in seen:
                raise HarnessError(f"report lists the cell {m.key} twice")
            seen.add(m.key)
        return cls(
            target=target,
            measurements=measurements,
            task=d.get("task") or {},
            created=d.get("created") or "",
            harness_version=d.get("harness_version") or "",
            recommendation=d.get("recommendation"),
            measurement=d.get("measurement") or {},
        )

    def cell(self, variant: str, fmt: str) -> Measurement | None:
        for m in self.measurements:
            if m.variant == variant and m.format == fmt:
                return m
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary name and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_report(report: TargetReport, path: Path) -> None:
    write_atomic(path, json.dumps(report.to_dict(), indent=1, default=_json_default))


def load_report(path: Path) -> TargetReport:
    """Read a report.json; unreadable or malformed, it is one HarnessError line naming the file."""
    try:
        return TargetReport.from_dict(json.loads(Path(path).read_text(), parse_constant=_no_constant))
    except HarnessError as e:
        raise HarnessError(f"{path}: not a valid report.json ({e})") from None
    except (OSError, ValueError, RecursionError) as e:
        raise HarnessError(f"{path}: not a readable report.json ({e})") from None


def _no_constant(name: str) -> float:
    """JSON's NaN / Infinity are not in the standard; harness reports never hold them."""
    raise ValueError(f"non-finite number {name}")


def _check_shape(value: Any, hint: str, where: str) -> None:
    """The shape a Measurement field's annotation promises: strings, objects, lists of numbers."""
    if value is None:
        if "None" in hint:
            return
        raise HarnessError(f"{where} must not be null")
    base = hint.removesuffix(" | None")
    ok = {"str": isinstance(value, str), "dict[str, Any]": isinstance(value, dict),
          "list[str]": isinstance(value, list) and all(isinstance(x, str) for x in value),
          "list[float]": isinstance(value, list) and all(_number(x) for x in value),
          "list[float | None]": isinstance(value, list) and all(x is None or _number(x) for x in value),
          "list[dict[str, Any]]": isinstance(value, list) and all(isinstance(x, dict) for x in value)}.get(base)
    if ok is False:
        raise HarnessError(f"{where} has the wrong shape ({type(value).__name__}; expected {hint})")
    if where.endswith(_FIGURES):
        for k, v in value.items():  # the figures readers compute with: numbers >= 0, or [lo, hi] intervals
            if k.endswith("_ci") and not (v is None or isinstance(v, list) and len(v) == 2
                                          and all(_number(x) for x in v)):
                raise HarnessError(f"{where}.{k} must be [lo, hi], got {str(v)[:40]}")
            signed = "increase" in k  # memory growth may be negative
            if not k.endswith("_ci") and k not in _TEXT and not (v is None or _number(v) and (v >= 0 or signed)):
                raise HarnessError(f"{where}.{k} must be a number >= 0, got {str(v)[:40]}")
    for key, want in _NESTED.get(where.rsplit(".", 1)[-1], {}).items():
        if value.get(key) is not None and not (_number(value[key]) if want is float else isinstance(value[key], want)):
            raise HarnessError(f"{where}.{key} has the wrong shape ({type(value[key]).__name__})")
    if where.endswith(".device_state"):
        for when in ("before", "during", "after"):
            state = value.get(when)
            if isinstance(state, dict):
                for key, want in _STATE.items():
                    if state.get(key) is not None and not isinstance(state[key], want):
                        raise HarnessError(f"{where}.{when}.{key} has the wrong shape ({type(state[key]).__name__})")


_FIGURES = (".latency_ms", ".cold_start_ms", ".memory_mb")
_TEXT = {"method", "source", "note", "unit"}  # the few words among the figures
_NESTED: dict[str, dict[str, Any]] = {
    "artifact": {"path": str, "format": str, "precision": str, "sha256": str, "size_bytes": float, "params": float,
                 "sparsity": float, "macs": float, "lineage": dict, "parity": dict},
    "device_state": {"before": dict, "during": dict, "after": dict},
    "accuracy": {"n": float, "top1": float, "agreement": float, "max_abs_diff": float},
}
_STATE: dict[str, Any] = {"governor": str, "cpu_freq_mhz": (dict, list, int, float), "temperature_c": dict,
                          "loadavg": list, "affinity": list, "time": (int, float)}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
