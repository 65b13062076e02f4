"""Inputs for a model file nobody gave inputs for: shapes and dtypes from its declaration.

Dynamic dimensions get the sizes the user gave (`bench --shape NAME=1,3,320,320`, `--batch N`), else
sensible ones (batch 1, sequence 32, image side 224), and an integer input that indexes an embedding
table stays below the table's row count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from exporters import suffix_formats
from harness.errors import ConfigError, ModelError

BATCH = 1
SEQUENCE = 32
IMAGE_SIDE = 224


@dataclass
class InputSpec:
    """One declared model input; None marks a dynamic dimension."""

    name: str
    shape: list[int | None]
    dtype: str
    high: int | None = None  # exclusive upper bound for integer inputs, when the graph tells


def onnx_inputs(path: Path) -> list[InputSpec]:
    """Declared inputs of an ONNX file, with embedding-table bounds for integer inputs."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model ({_line(e)})") from None
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue  # old exporters list weights as inputs
        t = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise ModelError(f"{path}: input {inp.name!r} is not a tensor; bench supports tensor inputs")
        shape: list[int | None] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        specs.append(InputSpec(inp.name, shape, dtype, _index_bound(model.graph, inp.name, inits)))
    return specs


def _index_bound(graph: object, name: str, inits: dict[str, list[int]]) -> int | None:
    """Smallest table size among Gather/embedding nodes this input (or a cast of it) indexes."""
    names, bounds = {name}, []
    for node in graph.node:  # type: ignore[attr-defined]
        if node.op_type in ("Cast", "Unsqueeze", "Reshape", "Squeeze", "Identity") and node.input[0] in names:
            names.update(node.output)
        elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in names:
            table = inits.get(node.input[0])
            if table:
                bounds.append(table[0])
    return min(bounds) if bounds else None


def tflite_inputs(path: Path) -> list[InputSpec]:
    """Declared inputs of a TFLite file, read with the LiteRT interpreter on this host."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelError("reading a .tflite file's inputs needs ai-edge-litert on this host "
                         "(pip install ai-edge-litert), or pass --inputs FILE.npz") from None
    try:
        interp = Interpreter(model_path=str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a readable TFLite model ({_line(e)})") from None
    specs = []
    for d in interp.get_input_details():
        sig = d.get("shape_signature", d["shape"])
        specs.append(InputSpec(d["name"], [None if s < 0 else int(s) for s in sig], np.dtype(d["dtype"]).name))
    return specs


def torch_inputs(path: Path) -> list[InputSpec]:
    """Declared inputs of a torch.export .pt2 file."""
    try:
        import torch

        ep = torch.export.load(str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a readable torch.export file ({_line(e)})") from None
    specs = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name != "USER_INPUT":
            continue
        node = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
        val = node.meta["val"]
        shape = [int(s) if isinstance(s, int) else None for s in val.shape]
        specs.append(InputSpec(spec.arg.name, shape, str(val.dtype).replace("torch.", "")))
    return specs


def format_of(path: Path) -> str:
    """The format a model file's suffix stands for, from the exporter registry."""
    formats = suffix_formats()
    fmt = formats.get(Path(path).suffix.lower())
    if fmt is None:
        raise ModelError(f"{path}: unknown model format (expected one of {', '.join(formats)})")
    return fmt


def declared_inputs(path: Path, fmt: str) -> list[InputSpec]:
    readers = {"onnx": onnx_inputs, "tflite": tflite_inputs, "torch": torch_inputs}
    return readers[fmt](Path(path))


def with_shapes(specs: list[InputSpec], shapes: dict[str, list[int]] | None = None,
                batch: int | None = None) -> list[InputSpec]:
    """The declared inputs with the user's sizes (`--shape NAME=1,3,320,320`, `--batch N`) in place of their
    dynamic dimensions; a name the model lacks, a wrong rank or a size that contradicts a fixed dimension is
    a one-line ConfigError."""
    shapes = shapes or {}
    names = [s.name for s in specs]
    for name in shapes:
        if name not in names:
            raise ConfigError(f"--shape {name}=...: the model has no input {name!r} (its inputs: {', '.join(names)})")
    out = []
    for s in specs:
        shape: list[int | None] = list(s.shape)
        given = shapes.get(s.name)
        if given is not None:
            if len(given) != len(shape):
                raise ConfigError(f"--shape {s.name}={_dims(given)}: {len(given)} dimensions, but input {s.name!r} "
                                  f"has {len(shape)} ({_dims(shape)})")
            for i, (want, got) in enumerate(zip(shape, given, strict=True)):
                if want is not None and want > 0 and want != got:
                    raise ConfigError(f"--shape {s.name}={_dims(given)}: dimension {i} of input {s.name!r} is fixed "
                                      f"at {want} ({_dims(shape)})")
            shape = list(given)
        if batch is not None and shape:
            fixed = s.shape[0] if s.shape[0] is not None and s.shape[0] > 0 else None
            if fixed is not None and fixed != batch:
                raise ConfigError(f"--batch {batch}: input {s.name!r} has a fixed batch of {fixed} ({_dims(s.shape)})")
            if given is not None and given[0] != batch:
                raise ConfigError(f"--batch {batch} contradicts --shape {s.name}={_dims(given)} (batch {given[0]})")
            shape[0] = batch
        out.append(replace(s, shape=shape))
    return out


def _dims(shape: list[int | None] | list[int]) -> str:
    return ",".join("?" if d is None or d <= 0 else str(d) for d in shape)


def concrete_shape(spec: InputSpec) -> list[int]:
    """Fill dynamic dimensions: batch first, image sides for 4-D, sequence length otherwise."""
    out = []
    rank = len(spec.shape)
    for i, d in enumerate(spec.shape):
        if d is not None and d > 0:
            out.append(d)
        elif i == 0:
            out.append(BATCH)
        elif rank == 4:
            channel_axis = 3 if spec.shape[3] in (1, 3, 4) else 1  # NHWC when the last dim looks like channels
            out.append(3 if i == channel_axis else IMAGE_SIDE)
        else:
            out.append(SEQUENCE)
    return out


def generate(specs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs that match the declarations and stay in a valid range."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = concrete_shape(s)
        dt = np.dtype(s.dtype)
        lname = s.name.lower()
        if dt.kind == "b":
            arr = np.ones(shape, dtype=dt)
        elif dt.kind in "iu":
            if "mask" in lname:
                arr = np.ones(shape, dtype=dt)
            elif "type" in lname or "position" in lname and s.high is None:
                arr = np.zeros(shape, dtype=dt)
            else:
                high = s.high if s.high else 100
                if dt.kind == "u" or dt.itemsize == 1:
                    high = min(high, int(np.iinfo(dt).max) + 1)
                arr = rng.integers(0, high, size=shape).astype(dt)
        else:
            arr = rng.standard_normal(shape).astype(dt)
        feeds[s.name] = arr
    return feeds


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]
