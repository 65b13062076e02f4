"""Artifacts and the exporter registry: a format name maps to one export function."""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from exporters.errors import ExportError

# Every precision an exporter may make; each exporter registers the ones it supports.
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")


class ExportFn(Protocol):
    def __call__(
        self,
        model: Any,
        example: tuple[Any, ...],
        precision: str,
        out_path: Path,
        calibration: np.ndarray | None = None,
        keep_float: tuple[str, ...] = (),
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
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Exporter:
    """A registered format: its file suffix, the precisions it makes, and its export function."""

    name: str
    suffix: str
    precisions: tuple[str, ...]
    fn: ExportFn
    limits: str = ""  # what the format cannot do, in words for a config error ("runs fp32 only")
    mixed: bool = False  # int8-static can keep named layers in float (`keep_float`)

    def __call__(self, model: Any, example: tuple[Any, ...], precision: str, out_path: Path,
                 calibration: np.ndarray | None = None, keep_float: tuple[str, ...] = ()) -> Path:
        """Export; `keep_float` names torch layers (`blocks.3.conv`) that stay float in an int8-static model."""
        if precision not in self.precisions:
            raise ExportError(f"{self.name} export: unsupported precision {precision!r} "
                              f"({self.name} supports {', '.join(self.precisions)})")
        if not keep_float:
            return self.fn(model, example, precision, out_path, calibration=calibration)
        if not self.mixed or precision != "int8-static":
            raise ExportError(f"{self.name} {precision} export cannot keep layers in float (only int8-static "
                              f"of {', '.join(n for n, e in EXPORTERS.items() if e.mixed) or 'no format'})")
        return self.fn(model, example, precision, out_path, calibration=calibration, keep_float=tuple(keep_float))


# The one list of formats: config validation, file suffixes and `bench` read it.
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str, suffix: str, precisions: tuple[str, ...],
                      limits: str = "", mixed: bool = False) -> Callable[[ExportFn], ExportFn]:
    """Register an export function under a format name ("onnx"), with its suffix and precisions."""

    def wrap(fn: ExportFn) -> ExportFn:
        unknown = set(precisions) - set(PRECISIONS)
        assert not unknown, f"exporter {name}: unknown precisions {sorted(unknown)}"
        EXPORTERS[name] = Exporter(name, suffix, tuple(precisions), fn, limits, mixed)
        return fn

    return wrap


def suffix_formats() -> dict[str, str]:
    """File suffix -> format name, from the registry (".onnx" -> "onnx")."""
    return {e.suffix: e.name for e in EXPORTERS.values()}


def check_calibration(fmt: str, example: tuple[Any, ...], calibration: np.ndarray | None) -> None:
    """Static int8 needs calibration samples shaped like one model input (single-input models)."""
    where = f"{fmt} int8-static export failed"
    if calibration is None or len(calibration) == 0:
        raise ExportError(f"{where}: calibration data is required")
    if len(example) != 1:
        raise ExportError(f"{where}: calibration supports single-input models only")
    want = tuple(example[0].shape[1:])
    if tuple(calibration.shape[1:]) != want:
        raise ExportError(f"{where}: calibration samples have shape {tuple(calibration.shape[1:])}, "
                          f"the model takes {want}")


def carries_quantization(model: Any) -> bool:
    """Whether `model` holds a converted PT2E graph (quantize/dequantize ops from quantization-aware
    training): int8-static then exports those ops and scales as they are, without calibration."""
    for module in getattr(model, "modules", lambda: [])():
        graph = getattr(module, "graph", None)
        nodes = getattr(graph, "nodes", None)
        if nodes is not None and any("quantized_decomposed" in str(getattr(n, "target", "")) for n in nodes):
            return True
    return False


def one_line(e: BaseException) -> str:
    """The root cause of `e` on one short line: converter errors nest and run to pages."""
    inner = e
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(inner))  # torch.onnx colours its messages
    msg = f"{type(inner).__name__}: {' '.join(text.split())}".rstrip(": ")
    if inner is not e:
        msg = f"{type(e).__name__}: {msg}"
    return msg if len(msg) <= 300 else msg[:297] + "..."


# The fp32 conversion is the slow step (seconds) and every precision starts from it: keep the
# bytes per live model, keyed by format, input shapes and the parameters' version counters
# (an in-place update of a weight bumps them, so a changed model is converted again).
_FP32: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], bytes]] = weakref.WeakKeyDictionary()


def fp32_once(fmt: str, model: Any, example: tuple[Any, ...], path: Path,
              convert: Callable[[Any, tuple[Any, ...], Path], None]) -> None:
    """Write the fp32 conversion of `model` to `path`, converting only the first time per model."""
    key = (fmt, tuple(tuple(t.shape) for t in example), tuple(str(t.dtype) for t in example),
           tuple(p._version for p in model.parameters()), tuple(b._version for b in model.buffers()))
    try:
        memo = _FP32.setdefault(model, {})
    except TypeError:  # not weak-referenceable: just convert
        convert(model, example, path)
        return
    if key not in memo:
        convert(model, example, path)
        memo.clear()
        memo[key] = Path(path).read_bytes()
    else:
        Path(path).write_bytes(memo[key])
