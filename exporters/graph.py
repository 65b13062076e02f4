"""Static facts about an ONNX graph: parameter counts and multiply-accumulates at batch 1.

Parameter rule: a parameter is an element of an initializer (or Constant node) that holds
weights. Counted: floating-point initializers and integer initializers that are the data input
of DequantizeLinear or the weight input of an integer op (int8/uint8 weights, int32 biases).
Not counted: scales and zero points of quantization ops (including the weight scale that
quantize_dynamic multiplies in after MatMulInteger/ConvInteger), int64/int32 shape, axis and index
constants, and 0-d scalars (eps, exponents). So a quantized weight counts once, as its int8
tensor, and an fp32, fp16 and int8 export of one model give the same count.

MACs: Conv/ConvInteger/QLinearConv = output elements x (C_in / group) x kernel area;
ConvTranspose = input elements x (C_out / group) x kernel area; Gemm/MatMul/MatMulInteger/
QLinearMatMul = output elements x K. Elementwise ops, pooling and normalisation count zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exporters.errors import ExportError

# Inputs (by position) of quantization-related ops that hold scales or zero points.
_QPARAM_SLOTS = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "MatMulInteger": {2, 3},
    "ConvInteger": {2, 3},
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
}
# Inputs that are quantized weights (data, not parameters of the quantization).
_INT_WEIGHT_SLOTS = {
    "DequantizeLinear": {0},
    "MatMulInteger": {1},
    "ConvInteger": {1},
    "QLinearConv": {3, 8},
    "QLinearMatMul": {3},
}
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx.TensorProto codes)


def onnx_graph_stats(path: Path) -> dict[str, int]:
    """Parameters, non-zero parameters and batch-1 MACs of an ONNX file (see module doc for the rules)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - an unreadable file is a user error
        raise ExportError(f"{path}: cannot read ONNX model: {e}") from e
    params, nonzero = _count_params(model)
    return {"params": params, "macs": _count_macs(model, path), "nonzero_params": nonzero}


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return arrays


def _count_params(model: Any) -> tuple[int, int]:
    graph = model.graph
    arrays = _constants(graph)
    qparams: set[str] = set()
    int_weights: dict[str, np.ndarray | None] = {}  # name -> zero point to compare against
    # quantize_dynamic rescales integer results with Mul(activation scale, weight scale): the
    # weight scale there is a quantization parameter too.
    dynamic_scales = {n.output[1] for n in graph.node if n.op_type == "DynamicQuantizeLinear"}
    for node in graph.node:
        if node.op_type == "Mul" and dynamic_scales.intersection(node.input):
            qparams.update(node.input)
        for slot in _QPARAM_SLOTS.get(node.op_type, ()):
            if slot < len(node.input):
                qparams.add(node.input[slot])
        for slot in _INT_WEIGHT_SLOTS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot] in arrays:
                int_weights[node.input[slot]] = _zero_point_of(node, slot, arrays)
    params = nonzero = 0
    for name, arr in arrays.items():
        if name in qparams or arr.ndim == 0:
            continue
        if np.issubdtype(arr.dtype, np.floating):
            params += arr.size
            nonzero += int(np.count_nonzero(arr))
        elif name in int_weights:
            zp = int_weights[name]
            params += arr.size
            # A quantized zero is the stored zero point, not the integer 0.
            nonzero += int(np.count_nonzero(arr.astype(np.int64) - (0 if zp is None else zp)))
    return params, nonzero


def _zero_point_of(node: Any, slot: int, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """The zero point that goes with the quantized weight at `slot`, shaped to broadcast."""
    zp_slot = {"DequantizeLinear": 2, "MatMulInteger": 3, "ConvInteger": 3, "QLinearConv": 5,
               "QLinearMatMul": 5}.get(node.op_type)
    if node.op_type == "QLinearConv" and slot == 8 or zp_slot is None or zp_slot >= len(node.input):
        return None  # int32 biases have no zero point
    zp = arrays.get(node.input[zp_slot])
    if zp is None or zp.ndim == 0 or zp.size == 1:
        return None if zp is None else zp.reshape(()).astype(np.int64)
    weight = arrays[node.input[slot]]
    axis = 0  # per-output-channel for Conv weights
    if node.op_type == "DequantizeLinear":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    elif node.op_type == "MatMulInteger":
        axis = weight.ndim - 1  # per-column of B
    shape = [1] * weight.ndim
    shape[axis % weight.ndim] = zp.size
    return zp.astype(np.int64).reshape(shape)


def _count_macs(model: Any, path: Path) -> int:
    import onnx

    shaped = _batch1_shapes(model)
    arrays = _constants(model.graph)

    def shape(name: str, node: Any) -> list[int]:
        if name in arrays:
            return list(arrays[name].shape)
        dims = shaped.get(name)
        if dims is None or any(d is None for d in dims):
            raise ExportError(f"{path}: cannot infer the shape of {name!r} ({node.op_type} "
                              f"{node.name or node.output[0]}) at batch 1")
        return dims

    total = 0
    for node in model.graph.node:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape(node.input[3 if op == "QLinearConv" else 1], node)
            out = shape(node.output[0], node)
            total += int(np.prod(out)) * w[1] * int(np.prod(w[2:]))
        elif op == "ConvTranspose":
            x, w = shape(node.input[0], node), shape(node.input[1], node)
            total += int(np.prod(x)) * w[1] * int(np.prod(w[2:]))
        elif op == "Gemm":
            a = shape(node.input[0], node)
            k = a[0] if attrs.get("transA", 0) else a[1]
            total += int(np.prod(shape(node.output[0], node))) * k
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a = shape(node.input[0], node)
            total += int(np.prod(shape(node.output[0], node))) * a[-1]
    return total


def _batch1_shapes(model: Any) -> dict[str, list[int | None]]:
    """Shapes of every value with the inputs' first dimension fixed to 1."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    init_names = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name in init_names or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_value = 1
    # Stored shapes still carry the symbolic batch; drop them so inference recomputes them.
    del m.graph.value_info[:]
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    result: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            result[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return result
