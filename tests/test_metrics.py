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
