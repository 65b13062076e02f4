"""Artifacts and the exporter registry: a format name maps to one export function."""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from collections import OrderedDict
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
                 calibration: np.ndarray | None = None, keep_float: tuple[str, ...] = (), **inputs: Any) -> Path:
        """Export; `keep_float` names torch layers (`blocks.3.conv`) that stay float in an int8-static model.
        `inputs` (named-input models: `input_names`, `dynamic_dims`) go to exporters that take them."""
        if precision not in self.precisions:
            raise ExportError(f"{self.name} export: unsupported precision {precision!r} "
                              f"({self.name} supports {', '.join(self.precisions)})")
        if inputs:
            taken = inspect.signature(self.fn).parameters
            inputs = {k: v for k, v in inputs.items() if k in taken}
        if not keep_float:
            return self.fn(model, example, precision, out_path, calibration=calibration, **inputs)
        if not self.mixed or precision != "int8-static":
            raise ExportError(f"{self.name} {precision} export cannot keep layers in float (only int8-static "
                              f"of {', '.join(n for n, e in EXPORTERS.items() if e.mixed) or 'no format'})")
        return self.fn(model, example, precision, out_path, calibration=calibration, keep_float=tuple(keep_float),
                       **inputs)


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
# bytes of the last few conversions, keyed by format, input shapes, conversion settings and the
# model's content (architecture and every tensor), so a changed model is converted again and two
# models with the same content (a recipe that keeps the reference's weights) share one conversion.
# Not the tensors' version counters: the TFLite converter bumps them all without changing a value,
# which made every ONNX precision after a TFLite export convert fp32 again (~10 s each in the demo).
FP32_KEEP = 6  # conversions kept in memory (the demo's network: about 17 MB each)
_FP32: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
_FP32_LOCK = threading.Lock()


def state_digest(model: Any) -> str:
    """Content hash of a torch module: its layers' classes (qualified: two `Net`s differ), repr, traced code
    where it has some (fx graphs), and every parameter and buffer (about 0.1 s for 5M weights)."""
    h = hashlib.sha256(repr(model).encode())
    for m in model.modules():
        h.update(f"{type(m).__module__}.{type(m).__qualname__}".encode())
        code = getattr(m, "code", None)
        if isinstance(code, str):
            h.update(code.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.is_quantized:
            t = t.dequantize()
        h.update(t.contiguous().view(-1).view(torch_uint8()).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def torch_uint8() -> Any:
    import torch  # exporters load torch lazily (bench imports this module without a model)

    return torch.uint8


def _options(convert: Callable[..., Any]) -> str:
    """What a conversion function is and what it was bound with (a functools.partial's settings)."""
    func = getattr(convert, "func", convert)
    bound = (getattr(convert, "args", ()), sorted(getattr(convert, "keywords", {}).items()))
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}{bound!r}"


def fp32_once(fmt: str, model: Any, example: tuple[Any, ...], path: Path,
              convert: Callable[[Any, tuple[Any, ...], Path], None]) -> None:
    """Write the fp32 conversion of `model` to `path`, converting only once per model content and settings."""
    key = (fmt, tuple(tuple(t.shape) for t in example), tuple(str(t.dtype) for t in example), state_digest(model),
           _options(convert))
    with _FP32_LOCK:
        data = _FP32.get(key)
        if data is not None:
            _FP32.move_to_end(key)
    if data is not None:
        Path(path).write_bytes(data)
        return
    convert(model, example, path)
    with _FP32_LOCK:
        _FP32[key] = Path(path).read_bytes()
        while len(_FP32) > FP32_KEEP:
            _FP32.popitem(last=False)
