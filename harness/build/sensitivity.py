"""Per-layer int8 sensitivity: each conv/linear layer quantized alone, simulated in torch.

A layer is quantized the way the static int8 exporters quantize it (weights int8 symmetric per
output channel, its input uint8 per tensor over the calibration range); every other layer stays
float. The output's signal-to-quantization-noise ratio against fp32 ranks the layers (low SQNR:
int8 hurts there most); top-1 agreement with fp32 and the accuracy drop come beside it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.build.training import predict

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every conv/linear layer, in definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


@torch.no_grad()
def input_ranges(model: nn.Module, x: np.ndarray, batch_size: int = 64) -> dict[str, tuple[float, float]]:
    """Min and max of each quantizable layer's input over `x` (MinMax calibration)."""
    ranges: dict[str, tuple[float, float]] = {}

    def record(name: str) -> Any:
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            lo, hi = float(inputs[0].min()), float(inputs[0].max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(lo, old[0]), max(hi, old[1]))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in quantizable_layers(model)]
    try:
        predict(model, x, batch_size)
    finally:
        for h in hooks:
            h.remove()
    return ranges


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Int8 symmetric per-output-channel quantize + dequantize."""
    scale = (w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127.0).clamp_min(1e-12)
    return (w / scale).round().clamp(-127, 127) * scale


def fake_quant_input(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Uint8 asymmetric per-tensor quantize + dequantize over [lo, hi] (widened to include 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-12)
    zero = int(round(-lo / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def sqnr_db(reference: np.ndarray, quantized: np.ndarray) -> float:
    """10 log10(signal power / noise power) of `quantized` against `reference`; 99 when identical."""
    noise = float(np.sum((reference.astype(np.float64) - quantized) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return 99.0 if noise == 0 else min(99.0, 10 * math.log10(max(signal, 1e-30) / noise))


@torch.no_grad()
def layer_sensitivity(model: nn.Module, x_calib: np.ndarray, x_eval: np.ndarray,
                      y_eval: np.ndarray) -> list[dict[str, Any]]:
    """One row per conv/linear layer quantized alone, most sensitive (lowest SQNR) first."""
    model = copy.deepcopy(model).eval()
    ranges = input_ranges(model, x_calib)
    reference = predict(model, x_eval)
    ref_top1 = float(np.mean(reference.argmax(1) == y_eval))
    rows = []
    for name, layer in quantizable_layers(model):
        if name not in ranges:
            continue  # never ran on these inputs
        lo, hi = ranges[name]
        weight = layer.weight.data
        layer.weight.data = fake_quant_weight(weight)
        hook = layer.register_forward_pre_hook(lambda _m, inp, lo=lo, hi=hi: (fake_quant_input(inp[0], lo, hi),))
        try:
            out = predict(model, x_eval)
        finally:
            hook.remove()
            layer.weight.data = weight
        top1 = float(np.mean(out.argmax(1) == y_eval))
        rows.append({"layer": name, "kind": type(layer).__name__, "params": int(weight.numel()),
                     "sqnr_db": round(sqnr_db(reference, out), 2),
                     "agreement": float(np.mean(out.argmax(1) == reference.argmax(1))),
                     "top1_drop": ref_top1 - top1, "n": int(len(y_eval))})
    return sorted(rows, key=lambda r: r["sqnr_db"])
