"""Derived compression figures and run-quality flags on hand-made cells."""

from __future__ import annotations

import pytest

from harness.measure.metrics import annotate, device_flags
from harness.measure.results import Measurement, TargetReport


def _cell(variant, fmt, p50, size, top1, top1s, raw=None):
    return Measurement(variant=variant, format=fmt, status="ok", artifact={"size_bytes": size},
                       latency_ms={"p50": p50}, accuracy={"top1": top1, "top1_shifted": top1s},
                       raw_latencies_ms=raw)


def test_compression_speedup_and_accuracy_change_against_the_fp32_reference():
    r = TargetReport(target={"name": "t"}, task={"reference_variant": "fp32", "reference_top1": 0.9,
                                                 "reference_top1_shifted": 0.8},
                     measurements=[_cell("fp32", "onnx", 4.0, 4000, 0.9, 0.8),
                                   _cell("int8", "onnx", 1.0, 1000, 0.89, 0.7),
                                   _cell("fp32", "tflite", 2.0, 3900, 0.9, 0.8),
                                   _cell("int8", "tflite", 1.0, 1300, 0.9, 0.8)])
    annotate(r, max_accuracy_drop=0.01)
    int8_onnx, int8_tfl = r.measurements[1], r.measurements[3]
    assert int8_onnx.derived["compression_ratio"] == pytest.approx(4.0)
    assert int8_onnx.derived["speedup"] == pytest.approx(4.0) and int8_onnx.derived["speedup_vs"] == "fp32/onnx"
    assert int8_tfl.derived["speedup"] == pytest.approx(2.0) and int8_tfl.derived["speedup_vs"] == "fp32/tflite"
    assert int8_onnx.derived["top1_change"] == pytest.approx(-0.01)
    assert int8_onnx.derived["top1_change_shifted"] == pytest.approx(-0.1)
    # -1 point on clean data is within the limit; -10 points on shifted data is not.
    assert len(int8_onnx.flags) == 1 and "shifted" in int8_onnx.flags[0]
    assert int8_tfl.flags == []


def test_device_flags_catch_drift_throttling_and_heat():
    steady = Measurement("a", "onnx", "ok", raw_latencies_ms=[1.0, 1.02] * 30)
    assert device_flags(steady) == []
    drifting = Measurement("a", "onnx", "ok", raw_latencies_ms=[1.0] * 30 + [1.3] * 30,
                           device_state={"before": {"throttled": "0x0", "temperature_c": {"cpu": 41.0}},
                                         "after": {"throttled": "0x50005", "temperature_c": {"cpu": 63.0}}})
    flags = device_flags(drifting)
    assert any("drifts upward" in f and "30%" in f for f in flags)
    assert any("0x50005" in f for f in flags)
    assert any("41 to 63" in f for f in flags)


def test_speedup_ci_falls_back_to_the_p50_cis_and_flags_follow_the_paired_test():
    ref = Measurement("fp32", "onnx", "ok", artifact={"size_bytes": 4000},
                      latency_ms={"p50": 4.0, "p50_ci": [3.9, 4.1]},
                      accuracy={"top1": 1.0, "paired": {"n": 90, "both_right": 90, "reference_only": 0,
                                                        "cell_only": 0, "both_wrong": 0}})
    near = Measurement("fp16", "onnx", "ok", artifact={"size_bytes": 2000},
                       latency_ms={"p50": 3.95, "p50_ci": [3.85, 4.05]},
                       accuracy={"top1": 89 / 90, "paired": {"n": 90, "both_right": 89, "reference_only": 1,
                                                             "cell_only": 0, "both_wrong": 0}})
    fast = Measurement("int8", "onnx", "ok", artifact={"size_bytes": 1000},
                       latency_ms={"p50": 1.0, "p50_ci": [0.98, 1.02]},
                       accuracy={"top1": 0.7, "paired": {"n": 90, "both_right": 63, "reference_only": 27,
                                                         "cell_only": 0, "both_wrong": 0}})
    r = TargetReport(target={"name": "t"}, task={"reference_variant": "fp32", "reference_top1": 1.0},
                     measurements=[ref, near, fast])
    annotate(r, max_accuracy_drop=0.01)
    assert near.derived["speedup_basis"] == "p50 CIs" and near.derived["speedup_tied"] is True
    assert near.derived["speedup_ci"] == pytest.approx([3.9 / 4.05, 4.1 / 3.85])
    assert fast.derived["speedup_tied"] is False
    assert fast.derived["speedup_ci"] == pytest.approx([3.9 / 1.02, 4.1 / 0.98])
    lo, hi = near.derived["top1_drop_ci"]
    assert near.derived["top1_mcnemar_p"] == 1.0 and lo < 0 < 1 / 90 < hi
    assert len(near.flags) == 1 and "inconclusive" in near.flags[0]  # 1 of 90: above the limit, not shown
    assert len(fast.flags) == 1 and "30.0 points on clean data > 1.0 (95% CI" in fast.flags[0]
