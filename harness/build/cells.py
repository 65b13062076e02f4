"""What the build stage hands to the measure stage: cells (a variant in a format) and their artifacts.

Plain data, free of torch, so the measure stage and `bench` load without the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exporters.base import Artifact
from harness.config.run import VariantConfig


@dataclass
class Cell:
    """One variant in one format: its artifact once exported, or why it has none."""

    variant: VariantConfig
    format: str
    artifact: Artifact | None = None
    error: str | None = None
    status: str = "pending"  # pending | ready | failed | skipped

    @property
    def key(self) -> str:
        return f"{self.variant.name}/{self.format}"


@dataclass
class TorchVariant:
    """A compressed torch model (before any export) and what the recipe reported."""

    key: str
    recipe: str
    settings: dict[str, Any]
    model: Any
    info: dict[str, Any]
    outputs: np.ndarray | None = None  # logits on the evaluation inputs
    graph: dict[str, Any] = field(default_factory=dict)  # params / MACs from the fp32 ONNX graph
    digest: str = ""  # content hash of architecture + weights: the key of cached exports
    load: Callable[[], Any] | None = None  # a cached variant's model, read only when a step needs it

    def torch_model(self) -> Any:
        """The torch model (in eval mode), read from the cache on first use: a rerun whose exports, parity
        verdicts and outputs are all cached never unpickles it (a QAT graph takes seconds to)."""
        if self.model is None and self.load is not None:
            self.model = self.load()
            self.model.eval()
        return self.model


class Prepared:
    """What `prepare` built: data, reference, variants, checked cells and evaluation inputs."""

    def __init__(self) -> None:
        self.task: dict[str, Any] = {}
        self.cells: list[Cell] = []
        self.torch_variants: dict[str, TorchVariant] = {}
        self.eval_inputs: Path | None = None
        self.timing_inputs: Path | None = None
        self.labels: np.ndarray | None = None
        self.n_clean = 0
        self.reference_outputs: np.ndarray | None = None
