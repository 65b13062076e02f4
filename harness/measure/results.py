"""Result dataclasses: one Measurement per (variant, format) cell, one TargetReport per target."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
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
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
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
        if d.get("schema_version") != SCHEMA_VERSION:
            raise HarnessError(f"report schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}")
        return cls(
            target=d["target"],
            measurements=[Measurement.from_dict(m) for m in d.get("measurements", [])],
            task=d.get("task", {}),
            created=d.get("created", ""),
            harness_version=d.get("harness_version", ""),
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
    try:
        return TargetReport.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise HarnessError(f"{path}: not a readable report.json ({e})") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
