"""Runtime options named as the runtimes name them (onnxruntime providers and graph_optimization_level,
LiteRT xnnpack and external delegates): validated at load time, applied by the runner, recorded in settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import cli as _cli
from tiny import one_line_error as _one_line
from tiny import tiny_config, to_toml

from harness.config.run import RunConfig
from harness.config.targets_file import load_targets_file, make_target
from harness.errors import ConfigError
from targets.errors import TargetSettingError


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory, tiny_cnn) -> Path:
    import torch

    from exporters.tflite import export_tflite

    return export_tflite(tiny_cnn, (torch.randn(1, 3, 16, 16),), "fp32", tmp_path_factory.mktemp("m") / "cnn.tflite")


@pytest.mark.parametrize("variant, needle", [
    ({"graph_optimization_level": "max"}, "graph_optimization_level 'max' is not one of disable, basic"),
    ({"providers": "CPUExecutionProvider"}, "providers must be a list"),
    ({"providers": []}, "providers must be a non-empty list"),
    ({"xnnpack": "no"}, "xnnpack must be bool"),
    ({"delegate_options": {"a": [1]}}, "delegate_options must be a table"),
    ({"provider": ["CPUExecutionProvider"]}, "unknown key 'variants[0].provider'"),
])
def test_config_rejects_bad_runtime_options_at_load_time(variant, needle):
    cfg = tiny_config(variants=[{"name": "fp32", "formats": ["onnx"], **variant}])
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_config_rejects_a_bad_batch_sweep():
    with pytest.raises(ConfigError, match="batch_sweep needs distinct batch sizes >= 1"):
        RunConfig.from_dict(tiny_config(measure={"batch_sweep": [1, 0]}))


def test_targets_file_takes_runtime_options_and_checks_their_values(tmp_path):
    tf = tmp_path / "t.toml"
    tf.write_text('[targets.box]\nkind = "local"\ngraph_optimization_level = "basic"\nxnnpack = false\n'
                  '[targets.bad]\nkind = "local"\ngraph_optimization_level = "max"\n')
    specs = load_targets_file(tf)
    with make_target("box", specs) as t:
        assert t.runtime_options == {"graph_optimization_level": "basic", "xnnpack": False}
    with pytest.raises(TargetSettingError, match="target bad: graph_optimization_level 'max' is not one of"):
        make_target("bad", specs)
    tf.write_text('[targets.box]\nkind = "local"\nxnnpack = "off"\n')
    with pytest.raises(ConfigError, match="xnnpack must be true or false"):
        load_targets_file(tf)


def test_a_provider_the_device_lacks_fails_in_one_line(tmp_path, cnn_onnx):
    line = _one_line(_cli("bench", str(cnn_onnx), "--provider", "NoSuchExecutionProvider", "--runs", "3",
                          "--min-time", "0", "--out", str(tmp_path), "-q"))
    assert "lacks provider NoSuchExecutionProvider (available: " in line and "CPUExecutionProvider" in line


def test_onnx_options_are_applied_and_recorded(tmp_path, cnn_onnx):
    out = _cli("bench", str(cnn_onnx), "--provider", "CPUExecutionProvider", "--graph-opt", "disable", "--runs",
               "5", "--min-time", "0", "--out", str(tmp_path), "-q")
    assert out.returncode == 0, out.stderr
    st = json.loads((tmp_path / "local-cpu" / "report.json").read_text())["measurements"][0]["settings"]
    assert st["providers"] == ["CPUExecutionProvider"] and st["graph_optimization_level"] == "disable"
    assert "graph_optimization_level disable" in (tmp_path / "local-cpu" / "report.md").read_text()


def test_litert_without_xnnpack_runs_the_builtin_kernels(tmp_path, cnn_tflite):
    out = _cli("bench", str(cnn_tflite), "--no-xnnpack", "--profile", "--runs", "5", "--min-time", "0",
               "--out", str(tmp_path), "-q")
    assert out.returncode == 0, out.stderr
    m = json.loads((tmp_path / "local-cpu" / "report.json").read_text())["measurements"][0]
    assert m["settings"]["xnnpack"] is False
    assert m["settings"]["op_resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    assert "without XNNPACK" in m["op_profile"]["error"]  # a profile of other kernels would mislead: none


def test_a_missing_delegate_library_fails_in_one_line(tmp_path, cnn_tflite):
    line = _one_line(_cli("bench", str(cnn_tflite), "--delegate", str(tmp_path / "libnope.so"), "--delegate-option",
                          "a=1", "--runs", "3", "--min-time", "0", "--out", str(tmp_path / "o"), "-q"))
    assert "delegate library not found on this device" in line


def test_a_delegate_option_needs_a_delegate(tmp_path, cnn_tflite):
    line = _one_line(_cli("bench", str(cnn_tflite), "--delegate-option", "a=1", "--out", str(tmp_path), "-q"))
    assert "--delegate-option needs --delegate" in line


def test_run_config_options_profile_and_batch_sweep_reach_every_cell(tmp_path):
    cfg = tiny_config(variants=[{"name": "fp32", "formats": ["onnx"], "graph_optimization_level": "basic"}],
                      measure={"profile": True, "batch_sweep": [1, 3]})
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    out = _cli("run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"), "-q")
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads((tmp_path / "o" / "local-cpu" / "report.json").read_text())["measurements"][0]
    assert m["settings"]["graph_optimization_level"] == "basic"
    assert m["op_profile"]["op_ms_per_run"] > 0 and m["op_profile"]["by_op_type"]
    rows = {r["batch"]: r for r in m["batch_sweep"]}
    assert set(rows) == {1, 3}
    for n, r in rows.items():
        assert r["items_per_s"] == pytest.approx(n / (r["p50"] / 1e3))
    md = (tmp_path / "o" / "local-cpu" / "report.md").read_text()
    assert "## p50 (ms) and items/s against batch size" in md and "## Operator profiles" in md


def test_phone_tools_get_the_same_options_as_their_own_flags():
    from targets.adb.target import tool_options
    from targets.base import Job
    from targets.errors import TargetError

    lite = tool_options(Job("m.tflite", "tflite", xnnpack=False, delegate="/data/local/tmp/libd.so",
                            delegate_options={"cache": "/tmp/c"}))
    assert "--use_xnnpack=false" in lite["flags"] and "--external_delegate_path=" in lite["flags"]
    assert "cache:/tmp/c" in lite["flags"] and lite["settings"]["xnnpack"] is False
    ort = tool_options(Job("m.onnx", "onnx", providers=["XnnpackExecutionProvider"], graph_optimization_level="basic"))
    assert ort["ep"] == "xnnpack" and ort["flags"] == " -o 1"
    with pytest.raises(TargetError, match="no -e name for provider MadeUpExecutionProvider"):
        tool_options(Job("m.onnx", "onnx", providers=["MadeUpExecutionProvider"]))
