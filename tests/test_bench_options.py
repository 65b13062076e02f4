"""`bench` like the tools users know: --shape for dynamic dimensions, --batch, --target repeatable with a
summary across targets, and a help line for every option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import cli as _cli
from tiny import one_line_error as _one_line

from harness.cli import build_parser, main
from harness.errors import ConfigError
from harness.measure.inputs import InputSpec, with_shapes


def _cell(out: Path, target: str = "local-cpu") -> dict:
    return json.loads((out / target / "report.json").read_text())["measurements"][0]


@pytest.fixture(scope="module")
def dynamic_hw_onnx(tmp_path_factory) -> Path:
    """A fully convolutional model whose batch, height and width are all dynamic."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    path = tmp_path_factory.mktemp("m") / "fcn.onnx"
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("h", min=8, max=512),
            3: torch.export.Dim("w", min=8, max=512)}
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), str(path), dynamo=True, external_data=False,
                      dynamic_shapes=(dims,), verbose=False)
    return path


def test_shape_fills_dynamic_dims(tmp_path, dynamic_hw_onnx):
    from harness.measure.inputs import onnx_inputs

    name = onnx_inputs(dynamic_hw_onnx)[0].name
    assert main(["bench", str(dynamic_hw_onnx), "--shape", f"{name}=1,3,40,56", "--runs", "5", "--min-time", "0",
                 "--out", str(tmp_path), "-q"]) == 0
    assert _cell(tmp_path)["settings"]["timed_shapes"] == {name: [1, 3, 40, 56]}


def test_batch_sets_dim_zero_of_generated_inputs(tmp_path, dynamic_hw_onnx):
    assert main(["bench", str(dynamic_hw_onnx), "--batch", "4", "--runs", "5", "--min-time", "0", "--out",
                 str(tmp_path), "-q"]) == 0
    shapes = _cell(tmp_path)["settings"]["timed_shapes"]
    assert [s[0] for s in shapes.values()] == [4]


def test_batch_repeats_given_inputs_on_the_device(tmp_path, cnn_onnx):
    np.savez(tmp_path / "x.npz", x=np.ones((1, 3, 16, 16), np.float32))
    assert main(["bench", str(cnn_onnx), "--inputs", str(tmp_path / "x.npz"), "--batch", "3", "--runs", "5",
                 "--min-time", "0", "--out", str(tmp_path / "o"), "-q"]) == 0
    st = _cell(tmp_path / "o")["settings"]
    assert st["batch"] == 3 and list(st["timed_shapes"].values()) == [[3, 3, 16, 16]]


@pytest.mark.parametrize("flag, needle", [
    (["--shape", "nope=1,3,16,16"], "the model has no input 'nope' (its inputs: "),
    (["--shape", "{x}=1,3,20,20"], "dimension 2 of input '{x}' is fixed at 16"),
    (["--shape", "{x}=1,3,16"], "3 dimensions, but input '{x}' has 4"),
    (["--shape", "{x}=1,3,x,16"], "is not NAME=D0,D1,..."),
    (["--shape", "{x}=1,3,16,16", "--inputs", "in.npz"], "--shape sizes generated inputs"),
])
def test_shape_mistakes_are_one_line(tmp_path, cnn_onnx, flag, needle):
    from harness.measure.inputs import onnx_inputs

    x = onnx_inputs(cnn_onnx)[0].name
    np.savez(tmp_path / "in.npz", x=np.ones((1, 3, 16, 16), np.float32))
    args = [a.replace("{x}", x).replace("in.npz", str(tmp_path / "in.npz")) for a in flag]
    line = _one_line(_cli("bench", str(cnn_onnx), *args, "--out", str(tmp_path / "o"), "-q"))
    assert needle.replace("{x}", x) in line


def test_with_shapes_refuses_a_batch_against_a_fixed_one():
    specs = [InputSpec("x", [1, 3, None, None], "float32")]
    assert with_shapes(specs, {"x": [1, 3, 8, 8]})[0].shape == [1, 3, 8, 8]
    assert with_shapes(specs, None, 1)[0].shape == [1, 3, None, None]
    with pytest.raises(ConfigError, match="--batch 4: input 'x' has a fixed batch of 1"):
        with_shapes(specs, None, 4)
    with pytest.raises(ConfigError, match="--batch 2 contradicts --shape x=1,3,8,8"):
        with_shapes([InputSpec("x", [None, 3, None, None], "float32")], {"x": [1, 3, 8, 8]}, 2)


def test_every_target_is_measured_and_summarised(tmp_path, cnn_onnx):
    tf = tmp_path / "targets.toml"
    tf.write_text('[targets.second]\nkind = "local"\nthreads = 1\n')
    out = _cli("bench", str(cnn_onnx), "--target", "local-cpu", "--target", "second", "--targets", str(tf),
               "--runs", "5", "--min-time", "0", "--out", str(tmp_path / "o"), "-q")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" on local-cpu: p50 ") == 1 and out.stdout.count(" on second: p50 ") == 1
    assert _cell(tmp_path / "o")["status"] == "ok" and _cell(tmp_path / "o", "second")["settings"]["threads"] == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {t["name"] for t in summary["targets"]} == {"local-cpu", "second"}
    assert "second" in (tmp_path / "o" / "summary.md").read_text()


def test_an_unknown_second_target_fails_before_any_measuring(tmp_path, cnn_onnx):
    line = _one_line(_cli("bench", str(cnn_onnx), "--target", "local-cpu", "--target", "nowhere", "--out",
                          str(tmp_path / "o"), "-q"))
    assert "unknown target 'nowhere'" in line and not (tmp_path / "o" / "local-cpu").exists()


def test_every_bench_option_has_a_help_line():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    bench = sub.choices["bench"]  # type: ignore[attr-defined]
    missing = [a.option_strings or a.dest for a in bench._actions if not a.help and a.dest != "help"]
    assert not missing, missing
