"""Quantization-aware training through PT2E: fine-tune with fake quantization, convert to int8 q/dq.

The model is captured with `torch.export` (dynamic batch), prepared for QAT with the XNNPACK
quantizer's scheme (int8 per-channel symmetric weights, int8 per-tensor activations: what
onnxruntime's QDQ kernels and TFLite's int8 kernels run), trained with BatchNorm folded into the
simulated convolutions, then converted: every quantized op sits between quantize/dequantize nodes
whose scales were learned. The exporters write that graph as it is (ONNX QDQ, TFLite int8).
torchao loads only when a QAT recipe runs (its import takes seconds and logs about optional kernels).
"""

from __future__ import annotations

import copy
import io
import logging
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.build.data import Dataset
from harness.build.training import Progress, random_flips
from harness.errors import ConfigError


class QuantizedModel(nn.Module):
    """A converted PT2E graph (int8 quantize/dequantize around each op) as a module that .eval() accepts."""

    def __init__(self, graph: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.quantized = graph
        self.example = example  # a plain attribute (not in the state dict): what __getstate__ exports with

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantized(x)

    def train(self, mode: bool = True) -> QuantizedModel:
        # Exported graphs refuse train()/eval(); this one is converted and runs in inference mode only.
        self.training = mode
        return self

    def __getstate__(self) -> dict[str, Any]:
        # An exported graph does not pickle; its ExportedProgram saves (the variant cache pickles models).
        program = torch.export.export(self.quantized, (self.example,),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        buf = io.BytesIO()
        torch.export.save(program, buf)
        return {"program": buf.getvalue(), "example": self.example}

    def __setstate__(self, state: dict[str, Any]) -> None:
        nn.Module.__init__(self)
        _pt2e()  # registers the quantized_decomposed ops the saved graph calls (a cached variant loads first)
        self.quantized = torch.export.load(io.BytesIO(state["program"])).module()
        self.example = state["example"]


aten = torch.ops.aten
_CONV_OPS = {F.conv1d: aten.conv1d.default, F.conv2d: aten.conv2d.default,
             F.conv_transpose1d: aten.conv_transpose1d.default, F.conv_transpose2d: aten.conv_transpose2d.input}


def _pt2e() -> Any:
    """torchao's PT2E module, imported on first use with its optional-kernel warnings silenced."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)  # "Failed to load ..._C_mxfp8...so": CUDA kernels this CPU build lacks
    try:
        import torchao.quantization.pt2e as pt2e
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401 - prepare_qat_pt2e, convert_pt2e
        import torchao.testing.pt2e._xnnpack_quantizer  # noqa: F401 - the XNNPACK int8 scheme
    finally:
        log.setLevel(level)
    return pt2e


@contextmanager
def _conv_kinds_present_only() -> Iterator[None]:
    """Skip torchao's conv+BN rewrites for conv kinds the graph does not have.

    Each rewrite traces 24 small patterns with torch.export (about 0.7 s each here) whether or not
    the model has that kind of conv: four kinds made convert_pt2e take 50-70 s for any model.
    """
    qat_utils = _pt2e().qat_utils
    names = ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper")
    originals = {name: getattr(qat_utils, name, None) for name in names}

    def skipping(original: Any) -> Any:
        def helper(m: Any, conv_fn: Any, *args: Any, **kwargs: Any) -> Any:
            op = _CONV_OPS.get(conv_fn)
            if op is not None and not any(n.target == op for n in m.graph.nodes):
                return m
            return original(m, conv_fn, *args, **kwargs)
        return helper

    for name, original in originals.items():
        if original is not None:
            setattr(qat_utils, name, skipping(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            if original is not None:
                setattr(qat_utils, name, original)


def _quantizer() -> Any:
    import torchao.testing.pt2e._xnnpack_quantizer as xnnpack

    return xnnpack.XNNPACKQuantizer().set_global(
        xnnpack.get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


def prepare(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The model captured with a dynamic batch and fake-quantized for training; errors name the cause."""
    model = copy.deepcopy(model).train()
    try:
        graph = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
        with _conv_kinds_present_only():
            return _pt2e().quantize_pt2e.prepare_qat_pt2e(graph, _quantizer())
    except Exception as e:  # noqa: BLE001 - capture or annotation failed: the cell says why
        why = " ".join(str(e).split())[:300]
        raise ConfigError(f"qat: cannot capture the model for quantization-aware training: "
                          f"{type(e).__name__}: {why}") from None


@torch.no_grad()
def _accuracy(prepared: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> float:
    _pt2e().move_exported_model_to_eval(prepared)
    xt = torch.from_numpy(x)
    pred = torch.cat([prepared(xt[i:i + batch_size]) for i in range(0, len(xt), batch_size)]).argmax(1)
    return float((pred.numpy() == y).mean())


def quantization_aware_training(model: nn.Module, data: Dataset, s: dict[str, Any],
                                progress: Progress | None = None) -> QuantizedModel:
    """Fine-tune `model` with fake quantization for s["epochs"]; return the converted int8 graph.

    Keeps the epoch (or the start) with the best validation accuracy; the observers stop moving
    the scales for the last s["freeze_epochs"] epochs, so the weights settle on fixed grids. With
    s["freeze_bn"] the graph trains in inference mode: BatchNorm statistics (folded into the
    simulated convs) and dropout stay as in the reference, as when the reference was fine-tuned.
    """
    if s["epochs"] < 1:
        raise ConfigError("qat needs epochs >= 1")
    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    prepared = prepare(model, torch.from_numpy(data.x_train[:2]))
    pt2e = _pt2e()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(prepared.parameters(), lr=s["lr"])
    best = (_accuracy(prepared, data.x_val, data.y_val), copy.deepcopy(prepared.state_dict()))
    if progress:
        progress(f"qat start (fake-quantized reference): val accuracy {best[0]:.3f}")
    bs = s["batch_size"]
    for epoch in range(s["epochs"]):
        # Fake quantization and its observers work in either mode; the mode only switches BN and dropout.
        (pt2e.move_exported_model_to_eval if s["freeze_bn"] else pt2e.move_exported_model_to_train)(prepared)
        if epoch > 0 and epoch >= s["epochs"] - s["freeze_epochs"]:  # the first epoch always calibrates
            prepared.apply(pt2e.fake_quantize.disable_observer)
        total = 0.0
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = order[i:i + bs]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(prepared(random_flips(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        val = _accuracy(prepared, data.x_val, data.y_val)
        if progress:
            progress(f"qat epoch {epoch + 1}/{s['epochs']}: loss {total / len(x):.4f}, val accuracy {val:.3f}")
        if val > best[0]:
            best = (val, copy.deepcopy(prepared.state_dict()))
    prepared.load_state_dict(best[1])
    pt2e.move_exported_model_to_eval(prepared)
    # Quantize ops stay in the graph (fold_quantize=False): the TFLite converter reads them as they are.
    with _conv_kinds_present_only():
        return QuantizedModel(pt2e.quantize_pt2e.convert_pt2e(prepared, fold_quantize=False),
                              torch.from_numpy(data.x_train[:2]))
