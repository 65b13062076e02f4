"""The ONNX graphs made only to count a variant's params and MACs, when none of its cells is a static fp32 ONNX
file (a QAT model, a config without ONNX cells): fixed shapes (sequences at the padded length: shape
inference counts the MACs of a static graph), cached by the model's content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporters.base import carries_quantization
from harness.build import samples as S
from harness.build import task as TK
from harness.build.cells import Cell, TorchVariant
from harness.build.export_pool import ExportTask
from harness.config.run import VariantConfig
from harness.progress import Progress


def graph_path(cache: Path, tv: TorchVariant, data: Any) -> Path:
    return cache / "graphs" / f"{tv.digest}{'-static' if S.is_named(data.x_test) else ''}.onnx"


def graph_task(cache: Path, tv: TorchVariant, data: Any, progress: Progress) -> ExportTask:
    """The graph's export; a QAT model exports only as its int8 graph."""
    precision = "int8-static" if carries_quantization(tv.torch_model()) else "fp32"
    return ExportTask("onnx", tv.torch_model(), TK.export_example(data), precision, graph_path(cache, tv, data),
                      TK.export_options(data, dynamic=False), log=progress.log_path(f"graph-{tv.recipe}"))


def plan_graphs(built: list[tuple[VariantConfig, TorchVariant, list[Cell]]], data: Any, cache: Path,
                progress: Progress) -> list[ExportTask]:
    """Graph exports for the variants none of whose cells (over every variant sharing the model) is a static
    fp32 ONNX file, and whose graph is not cached: they run with the other exports."""
    dynamic = any(TK.export_options(data).get("dynamic_dims") or ())
    has_fp32 = {tv.digest for _, tv, cells in built for c in cells
                if c.format == "onnx" and c.variant.precision == "fp32" and not dynamic}
    out, seen = [], set()
    for _, tv, _ in built:
        if tv.digest in has_fp32 or tv.digest in seen or tv.graph or graph_path(cache, tv, data).exists():
            continue
        seen.add(tv.digest)
        try:
            out.append(graph_task(cache, tv, data, progress))
        except Exception as e:  # noqa: BLE001 - the MAC count is optional
            progress(f"MAC count for {tv.recipe} unavailable: {type(e).__name__}: {e}")
    return out
