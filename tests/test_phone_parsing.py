"""Reading phones and their tools: benchmark_model and onnxruntime_perf_test logs (real published ones, in
tests/data/), getprop, big.LITTLE clusters from cpufreq, thermal zones and the battery, summary statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.measure.fold import summary_stats
from harness.measure.stats import LatencyStats
from targets.adb import parse_benchmark_model, parse_perf_test, parse_probe
from targets.runner import _temperatures, android_card, big_cores, cpu_clusters, parse_getprop, resolve_affinity

DATA = Path(__file__).with_name("data")


def log(name: str) -> str:
    return (DATA / "benchmark_model" / name).read_text()


def test_recent_benchmark_model_log_with_percentiles():
    f = parse_benchmark_model(log("ti_am62x_xnnpack.log"))
    assert (f["init_us"], f["first_us"], f["avg_us"]) == (614333, 905463, 899641)
    runs, warm = f["runs"], f["warmup"]
    assert runs["count"] == 50 and warm["count"] == 1
    assert runs["min"] <= runs["p5"] <= runs["median"] <= runs["p95"] <= runs["max"]
    assert runs["median"] == 899281 and runs["std"] == 1549
    assert f["footprint_mb"] == {"init": 146.363, "overall": 150.141} and f["peak_mb"] is None
    assert f["op_profile"] is None


def test_older_log_with_op_profile_and_scientific_notation():
    f = parse_benchmark_model(log("riscv_mobilenet_op_profiling.log"))
    assert f["avg_us"] == pytest.approx(2.95034e6) and f["warmup_avg_us"] == pytest.approx(3.51239e6)
    assert f["runs"]["count"] == 50 and "median" not in f["runs"]  # this version prints no percentiles
    assert f["warmup"] == {"count": 1, "curr": 3512391}
    ops = f["op_profile"]
    # The timed runs' summary, not the initialisation's (AllocateTensors).
    assert [o["node_type"] for o in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX", "SQUEEZE"]
    assert ops[0] == {"node_type": "CONV_2D", "count": 15, "avg_ms": 2651.853, "percent": 89.897}
    assert sum(o["percent"] for o in ops) == pytest.approx(100, abs=0.01)


def test_peak_memory_lines_of_both_wordings():
    chrome = parse_benchmark_model(log("chromeos_xnnpack_peak.log"))
    assert chrome["peak_mb"] == pytest.approx(93.2383) and chrome["runs"]["count"] == 1061
    assert chrome["warmup"]["count"] == 9
    mi11 = parse_benchmark_model(log("mi11_yolov5_cpu.log"))
    assert mi11["footprint_mb"] == {"init": 4.92969, "overall": 138.809} and mi11["warmup"] is None


def test_logcat_prefix_and_missing_summary():
    text = "\n".join(f"I tflite  : {ln}" for ln in log("ti_am62x_cpu.log").splitlines())
    assert parse_benchmark_model(text)["runs"]["median"] == 1239807
    with pytest.raises(ValueError, match="Inference timings"):
        parse_benchmark_model("ERROR: Could not open 'x.tflite'.\n")


@pytest.mark.parametrize("name, n, p50_s, avg_ms", [("spacemit_k1.log", 100, 0.0603562, 62.2935),
                                                    ("arm_sme2.log", 5, 0.0995086, 98.961997)])
def test_onnxruntime_perf_test_logs(name, n, p50_s, avg_ms):
    f = parse_perf_test((DATA / "onnxruntime_perf_test" / name).read_text())
    assert f["requests"] == n and f["p50_s"] == p50_s and f["avg_ms"] == avg_ms
    assert f["min_s"] <= f["p50_s"] <= f["p90_s"] <= f["p99_s"] <= f["max_s"]
    assert f["peak_bytes"] > 1e8


def test_summary_stats_keep_the_keys_and_invent_no_ci():
    s = summary_stats({"n": 50, "p50": 899.281, "mean": 899.641, "min": 898.0, "max": 906.1, "source": "tool"})
    assert set(LatencyStats.__dataclass_fields__) <= set(s)
    assert s["p50_ci"] is None and s["p99"] is None and s["p50"] == 899.281 and s["source"] == "tool"


def test_getprop_card_and_clusters():
    props = parse_getprop("[ro.product.model]: [Pixel 7]\n[ro.soc.model]: [GS201]\n[ro.build.version.release]: [14]"
                          "\n[ro.product.cpu.abi]: [arm64-v8a]\n[garbage line\n")
    card = android_card(props)
    assert card["model"] == "Pixel 7" and card["soc"] == "GS201" and card["android"] == "14"
    assert android_card({"ro.product.model": "x"}) is None  # no Android version: not Android
    clusters = cpu_clusters({0: 1803000, 1: 1803000, 2: 1803000, 3: 1803000, 4: 2348000, 5: 2348000,
                             6: 2850000, 7: 2850000})
    assert [c["cpus"] for c in clusters] == [[0, 1, 2, 3], [4, 5], [6, 7]]
    assert big_cores(clusters) == [4, 5, 6, 7] and big_cores(cpu_clusters({0: 1500000, 1: 1500000})) == [0, 1]


def test_sysfs_affinity_and_battery(tmp_path):
    for i, khz in enumerate([1800000, 1800000, 2400000, 2400000]):
        d = tmp_path / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "cpuinfo_max_freq").write_text(f"{khz}\n")
    for i, (kind, temp) in enumerate([("cpu", "45000"), ("cpu", "47000")]):
        z = tmp_path / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind)
        (z / "temp").write_text(temp)
    (tmp_path / "sys/class/power_supply/battery").mkdir(parents=True)
    (tmp_path / "sys/class/power_supply/battery/temp").write_text("305")
    assert resolve_affinity("big", str(tmp_path)) == [2, 3] and resolve_affinity("little", str(tmp_path)) == [0, 1]
    assert resolve_affinity([1, 2]) == [1, 2]
    temps = _temperatures(str(tmp_path))
    assert temps == {"cpu": 45.0, "cpu/thermal_zone1": 47.0, "battery": 30.5}


def test_phone_probe_script_output():
    out = ("@@ getprop\n[ro.build.version.release]: [13]\n[ro.product.model]: [SM-S911B]\n"
           "[ro.board.platform]: [kalama]\n"
           "@@ cpus\n0 2016000 1000000 schedutil\n1 2016000 - schedutil\n2 2803000 2803000 schedutil\n"
           "@@ thermal\nthermal_zone0 38000 cpu-0-0\nthermal_zone1 - cpu-0-1\n@@ battery\n298\n"
           "@@ meminfo\nMemTotal: 7600000 kB\nMemAvailable: 3000000 kB\n@@ uname\naarch64\n5.15\n"
           "@@ df\nFilesystem 1K-blocks Used Available Use% Mounted on\n"
           "/dev/block/dm-5 100 50 2048000 50% /data\n@@ end\n")
    p = parse_probe(out)
    assert p["android"]["soc"] == "kalama" and p["cores"] == 3 and p["big_cores"] == [2]
    assert p["temperature_c"] == {"cpu-0-0": 38.0, "battery": 29.8} and p["governor"] == "schedutil"
    assert p["workdir_free_mb"] == 2000.0 and p["mem_total_mb"] == pytest.approx(7421.875)
