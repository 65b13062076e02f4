"""The full flow on a two-input int64 model (token ids + attention mask) scored by a user metric.

Real training, ONNX (sequence length dynamic) and TFLite (fixed length: the runner pads) exports, the runner,
reports; the user metric decides the accuracy limit and the pick.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from tiny import tiny_config
from token_models import WIDTH, write_token_npz

from harness.api import run_config
from harness.config.run import RunConfig
from harness.errors import ConfigError
from harness.report.recommend import recommend


def token_config(npz, **report) -> dict:
    return tiny_config(
        name="tokens",
        model={"builtin": None, "factory": "token_models:bag_of_tokens", "pretrained": False},
        data={"source": "npz", "path": str(npz)},
        finetune={"epochs": 15, "lr": 0.03, "batch_size": 16},
        report={"metric": "token_models:worst_recall", "higher_is_better": True, "bootstrap": 200,
                "max_accuracy_drop": 0.05, **report},
        variants=[{"name": "fp32", "formats": ["onnx", "tflite"]},
                  {"name": "int8", "precision": "int8-dynamic", "formats": ["onnx"]}],
        measure={"runs": 5, "warmup": 1, "threads": 1, "strategy": "sequential"},
    )


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    npz = write_token_npz(folder / "tokens.npz")
    cfg = RunConfig.from_dict(token_config(npz))
    return run_config(cfg, out=folder / "out", cache_dir=folder / "cache")


def test_two_int64_inputs_run_through_the_flow_with_the_user_metric(token_run):
    rep = token_run.reports["local-cpu"]
    task = rep.task
    assert task["inputs"] == {"input_ids": {"dtype": "int64", "shape": [WIDTH]},
                              "attention_mask": {"dtype": "int64", "shape": [WIDTH]}}
    timed = task["timed_input"]
    assert timed["rule"] == "median" and 3 <= timed["seq_len"] <= WIDTH and timed["padded_len"] == WIDTH
    assert timed["lengths"]["min"] <= timed["seq_len"] <= timed["lengths"]["max"]
    assert task["metric"]["name"] == "token_models:worst_recall" and task["metric"]["higher_is_better"]
    assert task["reference_top1"] > 0.6 and task["chance"]["above_chance"]
    assert task["test_split"]["n"] == 12 and not task["test_split"]["resolves_one_point"]
    by = {m.key: m for m in rep.measurements}
    assert set(by) == {"fp32/onnx", "fp32/tflite", "int8/onnx"}
    for m in by.values():
        assert m.status == "ok", (m.key, m.error)
        metric = m.accuracy["metric"]
        assert metric["result"]["key"] == "worst_recall" and "mean_recall" in metric["result"]
        assert 0.0 <= metric["value"] <= 1.0 and metric["reference"] == task["metric"]["reference"]
        assert metric["basis"] == "paired bootstrap" and metric["resamples"] == 200
        lo, hi = metric["drop_ci"]
        assert lo <= metric["drop"] + 1e-9 and metric["drop"] - 1e-9 <= hi
        assert "agreement" in m.accuracy and "shifted" not in json.dumps(m.accuracy)  # no image corruptions
    # fp32 artifacts agree with torch; the ONNX graph keeps batch and sequence dynamic; TFLite is fixed and padded.
    assert by["fp32/onnx"].accuracy["agreement"] == 1.0 and by["fp32/onnx"].accuracy["metric"]["drop"] == 0.0
    graph = onnx.load(by["fp32/onnx"].artifact["path"]).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in dims) and dims[0][1] == dims[1][1]
    assert by["fp32/onnx"].settings["timed_shapes"]["input_ids"] == [1, timed["seq_len"]]
    assert by["fp32/onnx"].artifact["macs"] > 0  # counted on a static graph at the padded length
    assert list(by["fp32/tflite"].settings["timed_shapes"].values())[0] == [1, WIDTH]
    # The decision is on the user metric: limits, per-cell judgements and the pick.
    rec = rep.recommendation
    assert rec["pick"] in by and any("worst_recall drop" in t for t in rec["limits_text"])
    judged = [j for c in rec["cells"] for j in c["accuracy"].values()]
    assert judged and all(j["metric"] == "token_models:worst_recall" and j["basis"] in ("paired bootstrap",
                                                                                          "point estimate")
                          for j in judged)


def test_the_metric_not_top1_decides_the_pick(token_run):
    """Same cells, same top-1: a cell whose user-metric drop is shown above the limit cannot be the pick, and
    with top-1 configured instead that same cell is judged on top-1 alone."""
    rep = copy.deepcopy(token_run.reports["local-cpu"])
    first = recommend(rep)
    assert first.pick is not None
    victim = first.pick
    metric = victim.accuracy["metric"]
    metric.update(drop=0.4, drop_ci=[0.3, 0.5], value=metric["reference"] - 0.4)  # a clear loss on the metric
    second = recommend(rep)
    assert second.pick is None or second.pick.key != victim.key
    check = next(c for c in second.checks if c.key == victim.key)
    assert check.accuracy_refused and "worst_recall drops 0.4 > 0.05" in "; ".join(check.misses)
    rep.task["metric"] = {**rep.task["metric"], "name": "top1", "key": "top1"}
    third = recommend(rep)
    assert not next(c for c in third.checks if c.key == victim.key).accuracy_refused


def test_metric_config_errors_are_one_line(tmp_path):
    npz = write_token_npz(tmp_path / "t.npz", n=(20, 6, 6))
    for report, says in (({"metric": "f1_score"}, "is not one of top1"),
                         ({"metric": "mod:"}, "must look like 'package.module:function'"),
                         ({"metric": "mae", "higher_is_better": True}, "contradicts mae"),
                         ({"bootstrap": 10}, "bootstrap must be >= 100")):
        with pytest.raises(ConfigError, match=says):
            RunConfig.from_dict(token_config(npz, **report))
    cfg = RunConfig.from_dict(token_config(npz, metric="token_models:no_such_fn"))
    with pytest.raises(ConfigError, match="has no function 'no_such_fn'"):
        run_config(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache")


def test_registered_metrics_on_known_outputs():
    from harness.measure.task_metrics import IMPLEMENTATIONS, score_metric

    out = np.array([[3, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 2])
    assert IMPLEMENTATIONS["top1"](out, y) == {"top1": 0.5}
    assert IMPLEMENTATIONS["top5"](out, y) == {"top5": 1.0}
    rec = IMPLEMENTATIONS["recall"](out, y)
    assert rec["per_class_recall"] == [1.0, 0.5, 0.0] and rec["recall"] == pytest.approx(0.5)
    assert rec["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    # F1 per class: 2/3, 2/3, 0 -> macro 4/9
    assert IMPLEMENTATIONS["macro_f1"](out, y)["macro_f1"] == pytest.approx(4 / 9)
    pred, truth = np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 1.0, 2.0])
    assert IMPLEMENTATIONS["mae"](pred, truth)["mae"] == pytest.approx(1.0)
    assert IMPLEMENTATIONS["rmse"](pred, truth)["rmse"] == pytest.approx(np.sqrt(5 / 3))
    mc = {"name": "mae", "key": "mae", "higher_is_better": False, "bootstrap": 200}
    worse = score_metric(mc, pred + 1.0, truth, pred)  # every prediction 1 further off (or closer): paired
    assert worse["reference"] == pytest.approx(1.0) and worse["basis"] == "paired bootstrap"
    assert worse["drop"] == pytest.approx(worse["value"] - worse["reference"])


def test_a_regressor_is_scored_by_mae_in_the_labels_unit(tmp_path):
    from token_models import write_regression_npz

    cfg = RunConfig.from_dict(tiny_config(
        name="values", model={"builtin": None, "factory": "token_models:regressor", "pretrained": False},
        data={"source": "npz", "path": str(write_regression_npz(tmp_path / "v.npz")), "eval_samples": None},
        finetune={"epochs": 40, "lr": 0.01, "batch_size": 32}, report={"metric": "mae", "max_accuracy_drop": 0.5},
        variants=[{"name": "fp32", "formats": ["onnx"]}, {"name": "int8", "precision": "int8-dynamic"}]))
    rep = run_config(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache").reports["local-cpu"]
    assert "reference_top1" not in rep.task and rep.task["metric"]["unit"] == "label"
    assert 0 < rep.task["metric"]["reference"] < 1.0  # trained with MSE: well under the labels' spread (~4)
    by = {m.key: m for m in rep.measurements}
    assert by["fp32/onnx"].accuracy["metric"]["drop"] == pytest.approx(0.0, abs=1e-5)
    assert "top1" not in by["int8/onnx"].accuracy and by["int8/onnx"].accuracy["metric"]["drop_ci"]
    assert rep.recommendation["pick"] in by and "mae drop ≤ 0.5" in rep.recommendation["limits_text"][0]
