"""Every recipe and precision on two architectures written here (tests/archs.py), through the real pipeline:
ONNX and TFLite artifacts, parity checked; structured pruning shrinks the exported graph; QAT exports int8
graphs; mixed precision keeps the most sensitive layers float; a failing recipe fails its cells only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tiny import tiny_config

from harness.api import run_config
from harness.build.pipeline import Pipeline
from harness.config.run import RunConfig
from harness.errors import ConfigError

pytestmark = pytest.mark.slow

BOTH = ["onnx", "tflite"]
VARIANTS = [
    {"name": "fp32", "formats": BOTH},
    {"name": "fp16", "precision": "fp16", "formats": BOTH},
    {"name": "int8-dynamic", "precision": "int8-dynamic", "formats": BOTH},
    {"name": "int8-static", "precision": "int8-static", "formats": BOTH},
    {"name": "pruned", "recipe": "prune", "formats": BOTH, "settings": {"sparsity": 0.5, "finetune_epochs": 1}},
    {"name": "structured", "recipe": "prune_structured", "formats": BOTH,
     "settings": {"ratio": 0.5, "finetune_epochs": 1}},
    {"name": "distilled", "recipe": "distill", "formats": BOTH,
     "settings": {"student": "pruned", "student_ratio": 0.5, "epochs": 1}},
    {"name": "qat", "recipe": "qat", "precision": "int8-static", "formats": BOTH, "settings": {"epochs": 1}},
    {"name": "mixed", "recipe": "mixed_precision", "precision": "int8-static", "formats": BOTH,
     "settings": {"float_layers": 2, "samples": 16}},
]


def _config(factory: str, **sections) -> RunConfig:
    base = {"model": {"builtin": None, "factory": factory, "pretrained": None},
            "finetune": {"epochs": 2, "lr": 3e-3}, "variants": VARIANTS}
    base.update(sections)
    return RunConfig.from_dict(tiny_config(**base))


@pytest.fixture(scope="module", params=["archs:resnet", "archs:mobilenet"])
def prepared(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    prep = Pipeline(_config(request.param), out, cache_dir=out / "cache").prepare()
    return {c.key: c for c in prep.cells}, prep


def test_every_recipe_and_precision_exports_with_parity(prepared) -> None:
    cells, _ = prepared
    assert len(cells) == sum(len(v.get("formats", ["onnx"])) for v in VARIANTS)
    bad = {k: c.error for k, c in cells.items() if c.status != "ready"}
    assert not bad
    for c in cells.values():
        assert c.artifact.parity["passed"] and c.artifact.parity["agreement"] >= 0.8


def test_structured_pruning_shrinks_the_exported_graph(prepared) -> None:
    cells, _ = prepared
    ref, half = cells["fp32/onnx"].artifact, cells["structured/onnx"].artifact
    assert half.params < 0.5 * ref.params and half.macs < 0.5 * ref.macs  # both read from the ONNX graph
    assert cells["distilled/onnx"].artifact.params == half.params  # the "pruned" student: the same shrink
    assert Path(cells["structured/tflite"].artifact.path).stat().st_size < \
        0.6 * Path(cells["fp32/tflite"].artifact.path).stat().st_size


def test_qat_exports_int8_graphs(prepared) -> None:
    cells, _ = prepared
    graph = onnx.load(cells["qat/onnx"].artifact.path).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)  # int8 weights
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_path=cells["qat/tflite"].artifact.path).get_tensor_details()
    conv_weights = [t for t in tensors if len(t["shape"]) == 4 and t["dtype"] == np.int8]
    assert conv_weights and all(t["quantization_parameters"]["scales"].size for t in conv_weights)
    fp32 = Path(cells["fp32/tflite"].artifact.path).stat().st_size
    assert Path(cells["qat/tflite"].artifact.path).stat().st_size < 0.7 * fp32


def test_mixed_precision_keeps_the_most_sensitive_layers_float(prepared) -> None:
    cells, prep = prepared
    sens = prep.task["sensitivity"]
    rows = sens["rows"]
    assert sens["variant"] == "mixed" and len(sens["float_layers"]) == 2
    assert [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    assert [r["layer"] for r in rows if r["kept_float"]] == sens["float_layers"]
    graph = onnx.load(cells["mixed/onnx"].artifact.path).graph
    float_weights = {n.input[1] for n in graph.node if n.op_type in ("Conv", "Gemm")}
    assert {f"{layer}.weight" for layer in sens["float_layers"]} <= float_weights
    full = onnx.load(cells["int8-static/onnx"].artifact.path).graph
    assert not {f"{layer}.weight" for layer in sens["float_layers"]} & {n.input[1] for n in full.node
                                                                        if n.op_type in ("Conv", "Gemm")}
    assert Path(cells["int8-static/tflite"].artifact.path).stat().st_size < \
        Path(cells["mixed/tflite"].artifact.path).stat().st_size


def test_a_failing_recipe_fails_its_cells_and_the_run_reports(tmp_path: Path) -> None:
    cfg = _config("archs:mobilenet", finetune={"epochs": 1}, variants=[
        {"name": "fp32"},
        # 1% of the MACs is out of reach: the recipe raises while it runs, after training started
        {"name": "tiny-budget", "recipe": "prune_structured", "formats": BOTH,
         "settings": {"macs_fraction": 0.01, "finetune_epochs": 0}},
    ])
    result = run_config(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    report = json.loads((result.report_dirs["local-cpu"] / "report.json").read_text())
    status = {(m["variant"], m["format"]): m for m in report["measurements"]}
    assert status[("fp32", "onnx")]["status"] == "ok"
    for fmt in BOTH:
        assert status[("tiny-budget", fmt)]["status"] == "failed"
        assert "recipe prune_structured failed" in status[("tiny-budget", fmt)]["error"]
    assert "tiny-budget/tflite" in (result.report_dirs["local-cpu"] / "report.md").read_text()


def test_what_can_be_checked_fails_before_training(tmp_path: Path) -> None:
    bad_student = _config("archs:resnet", variants=[
        {"name": "d", "recipe": "distill", "settings": {"student": "nowhere_pkg.mod:build"}}])
    with pytest.raises(ConfigError, match="nowhere_pkg"):
        Pipeline(bad_student, tmp_path / "a", cache_dir=tmp_path / "cache").prepare()
    assert not (tmp_path / "cache" / "checkpoints").exists()  # nothing was trained
    with pytest.raises(ConfigError, match="'importance'"):
        _config("archs:resnet", variants=[{"name": "p", "recipe": "prune_structured",
                                           "settings": {"importance": "l3"}}])
    with pytest.raises(ConfigError, match="int8-static"):
        _config("archs:resnet", variants=[{"name": "q", "recipe": "qat"}])
