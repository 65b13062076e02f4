"""torch -> TFLite through litert-torch, quantized with ai-edge-quantizer (AEQ).

Precisions (all keep the torch model's NCHW float32 inputs and float32 outputs):
  fp32          litert_torch.convert(model, example).export(path).
  fp16          AEQ float casting, weight-only: Conv/FC weights stored fp16 and dequantized
                to fp32 in the graph, compute fp32.
  int8-dynamic  AEQ recipe dynamic_wi8_afp32: per-channel symmetric int8 weights, activations
                quantized on the fly by the kernels (dynamic range).
  int8-static   AEQ recipe static_wi8_ai8 (int8 weights per channel, int8 activations per tensor)
                calibrated on `calibration`, with the model's INPUT/OUTPUT left unquantized so
                QUANTIZE/DEQUANTIZE ops sit at the edges and the I/O stays float32. `keep_float`
                (torch layer names) get per-op NO_QUANTIZE recipes: mixed precision.
                A model from quantization-aware training (PT2E q/dq ops) converts in litert-torch's
                static q/dq mode with its learned scales; its input and output are int8 (the
                runner quantizes inputs and dequantizes outputs with the tensors' parameters).
The batch size is the example's (1): TFLite models here have a fixed batch.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from exporters.base import PRECISIONS, carries_quantization, check_calibration, fp32_once, one_line, register_exporter
from exporters.errors import ExportError

SUFFIX = ".tflite"
FORMAT = "tflite"
MAX_CALIBRATION_SAMPLES = 64


@register_exporter(FORMAT, SUFFIX, PRECISIONS, mixed=True)
def export_tflite(
    model: Any,
    example: tuple[Any, ...],
    precision: str,
    out_path: Path,
    calibration: np.ndarray | None = None,
    keep_float: tuple[str, ...] = (),
    dynamic_dims: tuple[dict[int, str], ...] | None = None,
    input_names: tuple[str, ...] | None = None,
) -> Path:
    """Convert `model` to TFLite at `precision`, run it once in ai-edge-litert, write `out_path` atomically.

    TFLite files here have fixed shapes, the example's: `dynamic_dims` are accepted and not kept (litert-torch
    0.10 fails on a dynamic sequence length through an embedding), so a sequence model is converted at the
    example's (padded) length and the runner pads shorter inputs to it. Inputs are named `args_<i>`
    (`input_names` unused): the runner maps input files onto them by order."""
    del dynamic_dims, input_names
    prequantized = carries_quantization(model)
    if prequantized and (precision != "int8-static" or keep_float):
        raise ExportError(f"tflite {precision} export failed: a quantization-aware-trained model exports as "
                          f"int8-static only, with every layer quantized")
    if precision == "int8-static" and not prequantized:
        check_calibration("tflite", example, calibration)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".tflite-export-") as tmp:
            fp32 = Path(tmp) / "fp32.tflite"
            if prequantized:
                _convert_fp32(model, example, fp32, qdq=True)
            else:
                fp32_once("tflite", model, example, fp32, _convert_fp32)
            final = fp32
            if precision != "fp32" and not prequantized:
                final = Path(tmp) / "final.tflite"
                _quantize(fp32, final, precision, example, calibration, _float_scopes(model, fp32, keep_float))
            _validate(final, example, int_io=prequantized)
            os.replace(final, out_path)
    except ExportError as e:  # a validation finding: say which export it was
        raise ExportError(f"tflite {precision} export failed: {e}") from e
    except Exception as e:  # noqa: BLE001 - any converter/runtime failure is a failed artifact
        raise ExportError(f"tflite {precision} export failed: {one_line(e)}") from e
    return out_path


def _convert_fp32(model: Any, example: tuple[Any, ...], path: Path, qdq: bool = False) -> None:
    # The converter prints a progress tree per stage; keep the harness output readable
    # unless the user asked for it.
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    import litert_torch  # slow to import (seconds): only when a TFLite export is asked for

    quant_config = None
    if qdq:  # the graph already holds q/dq ops; the quantizer only tells the converter to keep them
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        quant_config = QuantConfig(pt2e_quantizer=PT2EQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True)))
    litert_torch.convert(model.eval(), tuple(example), quant_config=quant_config).export(str(path))


def _layer_scope(model: Any, layer: str) -> str:
    """The name litert-torch gives a torch layer's scope: `pkg.Net/pkg.Block_b/torch...Conv2d_c1`."""
    def qualified(m: Any) -> str:
        return f"{type(m).__module__}.{type(m).__qualname__}"

    parts, module, scope = layer.split("."), model, qualified(model)
    for part in parts:
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
        scope += f"/{qualified(module)}_{part}"
    return scope


def _float_scopes(model: Any, fp32: Path, layers: tuple[str, ...]) -> list[str]:
    """AEQ scope regexes of the CONV/FC ops that compute `layers` (found by their tensors' names)."""
    if not layers:
        return []
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(fp32))
    tensors = interpreter.get_tensor_details()
    ops = [op for op in interpreter._get_ops_details()  # noqa: SLF001 - the only op list LiteRT exposes
           if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")]
    regexes = []
    for layer in layers:
        scope = _layer_scope(model, layer) + ";"
        hits = [op for op in ops if any(scope in tensors[i]["name"] for i in [*op["outputs"], *op["inputs"][1:2]]
                                        if i >= 0)]
        if len(hits) != 1:
            raise ExportError(f"layer {layer} maps to {len(hits)} ops in the TFLite graph, not one")
        # AEQ matches a scope regex against the op's output tensor names joined by ';'.
        names = [tensors[i]["name"] for i in hits[0]["outputs"] if i >= 0]
        regexes.append("^" + re.escape(";".join(names) + ";") + "$")
    return regexes


def _quantize(src: Path, dst: Path, precision: str, example: tuple[Any, ...],
              calibration: np.ndarray | None, float_scopes: list[str] | None = None) -> None:
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe

    algo = algorithm_manager.AlgorithmName
    q = quantizer.Quantizer(str(src))
    if precision == "fp16":
        fp16_weights = qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        )
        q.update_quantization_recipe(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     op_config=fp16_weights, algorithm_key=algo.FLOAT_CASTING)
    elif precision == "int8-dynamic":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    else:
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        # Without this the graph's input and output tensors become int8 and the runner would
        # have to quantize inputs itself; float edges let one input array feed every variant.
        for edge in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            q.update_quantization_recipe(regex=".*", operation_name=edge, algorithm_key=algo.NO_QUANTIZE)
        for scope in float_scopes or []:  # mixed precision: these ops stay float
            q.update_quantization_recipe(regex=scope, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                         algorithm_key=algo.NO_QUANTIZE)
    calibration_result = None
    if q.need_calibration:
        assert calibration is not None  # checked by _check_calibration
        calibration_result = q.calibrate(_calibration_data(src, example, calibration),
                                         num_threads=os.cpu_count() or 1)
    q.quantize(calibration_result, enable_progress_report=False).export_model(str(dst), overwrite=True)


def _calibration_data(model_path: Path, example: tuple[Any, ...],
                      calibration: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """AEQ calibration feeds: batches shaped like the example, keyed by the model's signature."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(model_path)).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    batch = int(example[0].shape[0])
    n = len(calibration)
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_CALIBRATION_SAMPLES)).round().astype(int))
    samples = np.asarray(calibration[idx], dtype=np.float32)
    # The converted model has a fixed batch, so calibration batches must match it.
    feeds = [{name: samples[i:i + batch]} for i in range(0, len(samples) - batch + 1, batch)]
    return {key: feeds}



def _validate(path: Path, example: tuple[Any, ...], int_io: bool = False) -> None:
    """The file must load in ai-edge-litert, take the example's dtypes as they are (`int_io`: or int8
    with quantization parameters), and run once."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    details = runner.get_input_details()
    feeds = {}
    for i, t in enumerate(example):
        name = f"args_{i}"  # litert-torch names signature inputs after the positional args
        arr = t.detach().cpu().numpy()
        want = details[name]["dtype"]
        scale, zero = details[name].get("quantization", (0.0, 0))
        if int_io and want in (np.int8, np.uint8) and scale:
            arr = np.clip(np.round(arr / scale + zero), np.iinfo(want).min, np.iinfo(want).max)
        elif np.issubdtype(arr.dtype, np.floating) and want != arr.dtype:
            raise ExportError(f"input {name} became {np.dtype(want).name}, "
                              f"the torch model takes {arr.dtype.name}")
        # int64 ids are narrowed to int32 by the converter; feed what the model takes.
        feeds[name] = arr.astype(want)
    outs = runner(**feeds)
    for name, out in outs.items():
        if out.dtype in (np.int8, np.uint8) and not int_io:
            raise ExportError(f"output {name} became {out.dtype.name}, expected float")
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise ExportError(f"output {name} has non-finite values")
