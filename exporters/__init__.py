"""Exporters: turn a torch model into deployable files (ONNX, TFLite, torch .pt2).

Importing this package is cheap: torch, onnx and litert-torch load inside the export
functions, when a format is actually asked for.
"""

from __future__ import annotations

from exporters import onnx, tflite, torch_export  # noqa: F401 - importing registers the exporters
from exporters.base import EXPORTERS, PRECISIONS, Artifact, Exporter, register_exporter, sha256_file, suffix_formats
from exporters.errors import ExportError
from exporters.graph import onnx_graph_stats

__all__ = ["Artifact", "EXPORTERS", "ExportError", "Exporter", "PRECISIONS", "onnx_graph_stats",
           "register_exporter", "sha256_file", "suffix_formats"]
