"""torch -> ONNX (dynamo exporter, dynamic batch) and onnxruntime's post-training quantizers.

Precisions:
  fp32          torch.onnx.export(dynamo=True, external_data=False), batch dim dynamic.
  fp16          onnxconverter-common convert_float_to_float16(keep_io_types=True): weights and
                compute fp16, inputs/outputs stay float32 so the same arrays feed every variant.
  int8-dynamic  onnxruntime quantize_dynamic on Conv/MatMul/Gemm, uint8 weights, per-tensor.
  int8-static   onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations,
                MinMax calibration over `calibration` (batch 1 each, at most 64 samples).
                `keep_float` (torch layer names) become `nodes_to_exclude`: mixed precision.
                A model from quantization-aware training (PT2E q/dq ops) is exported as it is:
                its QuantizeLinear/DequantizeLinear pairs carry the learned scales.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from exporters.base import PRECISIONS, carries_quantization, check_calibration, fp32_once, one_line, register_exporter
from exporters.errors import ExportError

SUFFIX = ".onnx"
FORMAT = "onnx"
MAX_CALIBRATION_SAMPLES = 64


@register_exporter(FORMAT, SUFFIX, PRECISIONS, mixed=True)
def export_onnx(
    model: Any,
    example: tuple[Any, ...],
    precision: str,
    out_path: Path,
    calibration: np.ndarray | None = None,
    keep_float: tuple[str, ...] = (),
    dynamic_dims: tuple[dict[int, str], ...] | None = None,
    input_names: tuple[str, ...] | None = None,
) -> Path:
    """Export `model` to ONNX at `precision`, validate it in onnxruntime, write `out_path` atomically.

    `dynamic_dims`: per input, more dimensions kept dynamic beside the batch ({1: "seq"}: a sequence
    length; inputs naming the same dim share it). `input_names`: the graph's input names."""
    prequantized = carries_quantization(model)
    if prequantized and (precision != "int8-static" or keep_float):
        raise ExportError(f"onnx {precision} export failed: a quantization-aware-trained model exports as "
                          f"int8-static only, with every layer quantized")
    if precision == "int8-static" and not prequantized:
        check_calibration("onnx", example, calibration)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Intermediates and the final file live beside out_path so os.replace is atomic and a
        # failure leaves nothing behind.
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".onnx-export-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            # Keyed by the input options too: a static graph of the same model (for MAC counts) is another file.
            fp32_once(f"onnx{dynamic_dims or ''}{input_names or ''}", model, example, fp32,
                      functools.partial(_export_fp32, dynamic_dims=dynamic_dims, input_names=input_names))
            final = Path(tmp) / "final.onnx"
            if prequantized:
                _fold_weight_quantization(fp32)
            if precision == "fp32" or prequantized:
                final = fp32
            elif precision == "fp16":
                _to_fp16(fp32, final)
            elif precision == "int8-dynamic":
                _quantize_dynamic(fp32, final)
            else:
                _quantize_static(fp32, final, calibration, keep_float)  # type: ignore[arg-type]
            _validate(final, example, dynamic_dims)
            os.replace(final, out_path)
    except ExportError as e:  # a validation finding: say which export it was
        raise ExportError(f"onnx {precision} export failed: {e}") from e
    except Exception as e:  # noqa: BLE001 - any converter/runtime failure is a failed artifact
        raise ExportError(f"onnx {precision} export failed: {one_line(e)}") from e
    return out_path


def _export_fp32(model: Any, example: tuple[Any, ...], path: Path,
                 dynamic_dims: tuple[dict[int, str], ...] | None = None,
                 input_names: tuple[str, ...] | None = None) -> None:
    import torch

    model = model.eval()
    # A batch-1 example can silently specialise the batch dim to 1 (NOTES), so trace at batch 2.
    example2 = tuple(torch.cat([t, t], dim=0) for t in example)
    batch = torch.export.Dim("batch")
    named: dict[str, Any] = {}  # one Dim per name: ids and mask share their sequence length
    extra = dynamic_dims or tuple({} for _ in example)
    shapes = tuple({0: batch, **{ax: named.setdefault(n, torch.export.Dim(n, min=1, max=4096))
                                 for ax, n in dims.items()}} for dims in extra)
    with torch.no_grad():
        n_out = len(torch.utils._pytree.tree_leaves(model(*example)))
    single_in, single_out = len(example) == 1, n_out == 1
    torch.onnx.export(
        model,
        example2,
        str(path),
        dynamo=True,
        external_data=False,
        input_names=list(input_names) if input_names else ["input"] if single_in else
        [f"input_{i}" for i in range(len(example))],
        output_names=["logits"] if single_out else [f"output_{i}" for i in range(n_out)],
        dynamic_shapes=shapes,
        verbose=False,
    )


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model16 = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model16, str(dst))


def _quantize_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # uint8 weights: ORT's CPU ConvInteger has a fast kernel only for uint8 x uint8; with int8
    # weights a small CNN ran 5-8x slower than fp32 here, with uint8 at fp32 speed.
    # MatMulInteger is as fast either way.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul", "Gemm"], per_channel=False)


def _fold_weight_quantization(path: Path) -> None:
    """Store weights int8: a PT2E graph quantizes its float weights at run time (QuantizeLinear on an
    initializer), which onnxruntime neither folds nor fuses (3x slower than fp32 here, fp32-sized file);
    and its int8 activations become uint8 (S8S8 ran 4x slower than U8S8 here)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep, folded = [], {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(i in inits for i in node.input[:3]) or len(node.input) < 3:
            keep.append(node)
            continue
        w, scale, zero = (numpy_helper.to_array(inits[i]) for i in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:  # per channel: broadcast along `axis`
            shape = [1] * w.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.round(w / scale) + zero.astype(np.int64), info.min, info.max).astype(zero.dtype)
        folded[node.output[0]] = numpy_helper.from_array(q, node.output[0])
    if not folded:
        return
    # Activations: int8 -> uint8 with the zero point moved by 128 (the same grid, exactly): the U8S8
    # pairing onnxruntime's x86 kernels are fast for, as in int8-static.
    shifted: dict[str, Any] = {}
    flipped: set[str] = set()  # outputs of activation QuantizeLinear nodes now uint8
    for node in keep:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and len(node.input) > 2 \
                and node.input[2] in inits:
            flipped.add(node.output[0])
    for node in keep:
        quantize = node.op_type == "QuantizeLinear" and node.output[0] in flipped
        dequantize = node.op_type == "DequantizeLinear" and node.input[0] in flipped
        if not (quantize or dequantize) or len(node.input) < 3 or node.input[2] not in inits:
            continue
        zero = numpy_helper.to_array(inits[node.input[2]])
        if zero.dtype != np.int8:
            flipped.discard(node.output[0] if quantize else node.input[0])
            continue
        name = f"{node.input[2]}_u8"
        shifted[name] = numpy_helper.from_array((zero.astype(np.int16) + 128).astype(np.uint8), name)
        node.input[2] = name
    for vi in graph.value_info:  # the exporter declared the int8 output types
        if vi.name in flipped:
            vi.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + list(folded.values()) + list(shifted.values()))
    onnx.save(model, str(path))


def float_nodes(graph: Any, layers: tuple[str, ...]) -> list[str]:
    """ONNX node names of torch layers: the Conv/Gemm/MatMul reading `<layer>.weight` (dynamo keeps that
    initializer name through BatchNorm folding); a layer that is not found is an error naming it."""
    by_weight = {n.input[1]: n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
                 and len(n.input) > 1}
    missing = [layer for layer in layers if f"{layer}.weight" not in by_weight]
    if missing:
        raise ExportError(f"layer {missing[0]} has no Conv/Gemm/MatMul node in the ONNX graph")
    return [by_weight[f"{layer}.weight"] for layer in layers]


def _quantize_static(src: Path, dst: Path, calibration: np.ndarray, keep_float: tuple[str, ...] = ()) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(src), load_external_data=False).graph
    input_name = graph.input[0].name
    exclude = float_nodes(graph, keep_float) if keep_float else []
    samples = _calibration_samples(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    # U8S8 is onnxruntime's recommended CPU pairing (fastest on x86 here, fine on ARM); QDQ is
    # the format ORT's CPU kernels fuse.
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)


def _calibration_samples(calibration: np.ndarray) -> list[np.ndarray]:
    """At most MAX_CALIBRATION_SAMPLES batch-1 arrays, spread evenly over `calibration`."""
    n = len(calibration)
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_CALIBRATION_SAMPLES)).round().astype(int))
    return [np.ascontiguousarray(calibration[i:i + 1], dtype=np.float32) for i in idx]



def _validate(path: Path, example: tuple[Any, ...], dynamic_dims: tuple[dict[int, str], ...] | None = None) -> None:
    """The file must pass the checker, load in onnxruntime and run at batch 4 (dynamic batch), and with
    every other dynamic dim 3 longer (zero-padded, as sequence inputs are)."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.concatenate([t.detach().cpu().numpy()] * 4, axis=0)
             for i, t in zip(sess.get_inputs(), example, strict=True)}
    outs = sess.run(None, feeds)
    if outs[0].shape[0] != 4:
        raise ExportError(f"batch dim is not dynamic (batch 4 gave {outs[0].shape})")
    if dynamic_dims and any(dynamic_dims):
        longer = {i.name: np.pad(feeds[i.name], [(0, 3 if ax in dims else 0) for ax in range(feeds[i.name].ndim)])
                  for i, dims in zip(sess.get_inputs(), dynamic_dims, strict=True)}
        outs = outs + sess.run(None, longer)
    if not all(np.isfinite(o).all() for o in outs if np.issubdtype(o.dtype, np.floating)):
        raise ExportError("the exported model produced non-finite outputs")
