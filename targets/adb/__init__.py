"""Phones over USB with adb: the `adb` bridge, the phone's probe, LiteRT benchmark_model output, the target.

- `bridge`: `adb -s SERIAL` commands and port forwards (also used by SSH targets with `adb_serial`);
- `device`: what the phone is (getprop, clusters, heat) over `adb shell`, and advice about phones;
- `tool_output`: benchmark_model's and onnxruntime_perf_test's logs read into figures;
- `target`: `AdbTarget` (kind "adb").
"""

from __future__ import annotations

from targets.adb.bridge import Adb, AdbForward
from targets.adb.device import adb_advice, cluster_lines, parse_probe, phone_advice, phone_lines, probe_phone
from targets.adb.target import AdbTarget
from targets.adb.tool_output import parse_benchmark_model, parse_perf_test

__all__ = ["Adb", "AdbForward", "AdbTarget", "adb_advice", "cluster_lines", "parse_benchmark_model",
           "parse_perf_test", "parse_probe", "phone_advice", "phone_lines", "probe_phone"]
