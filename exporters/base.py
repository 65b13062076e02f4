"""Artifacts and the exporter registry: a format name maps to one export function."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")


class ExportFn(Protocol):
    def __call__(
        self,
        model: Any,
        example: tuple[Any, ...],
        precision: str,
        out_path: Path,
        calibration: np.ndarray | None = None,
    ) -> Path: ...


@dataclass
class Artifact:
    """A path-based handle to an exported model file plus what we know about it."""

    path: str
    format: str
    precision: str
    sha256: str
    size_bytes: int
    params: int | None = None
    sparsity: float | None = None
    macs: int | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        return cls(**d)

    @classmethod
    def from_file(cls, path: Path, format: str, precision: str = "unknown", **extra: Any) -> Artifact:
        """Describe an existing model file: hash and size are read from disk."""
        path = Path(path)
        return cls(path=str(path), format=format, precision=precision,
                   sha256=sha256_file(path), size_bytes=path.stat().st_size, **extra)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


EXPORTERS: dict[str, ExportFn] = {}

# The format a file suffix stands for, used by `bench` on a user's file.
SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "torch"}


def register_exporter(name: str) -> Callable[[ExportFn], ExportFn]:
    """Register an export function under a format name ("onnx", "tflite", "torch")."""

    def wrap(fn: ExportFn) -> ExportFn:
        EXPORTERS[name] = fn
        return fn

    return wrap


def format_of(path: Path) -> str:
    from harness.errors import ModelError

    fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ModelError(f"{path}: unknown model format (expected one of {', '.join(SUFFIX_FORMATS)})")
    return fmt
