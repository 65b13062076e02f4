"""A clean terminal: converter chatter goes to OUT/logs/, the terminal shows only the harness's own lines;
and the caches that make a rerun fast (fp32 conversion per model, baselines, parity) stay correct."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from tiny import tiny_config, to_toml

from exporters.base import fp32_once
from harness.build.cache import parity_key
from harness.build.data import load_textures
from harness.build.models import build_model
from harness.build.reference import baselines
from harness.config.run import RunConfig
from harness.logs import capture, log_name
from harness.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
# Every line the CLI may print: timestamped progress lines on stderr, the summary on stdout.
# (and, when another run holds the CPU, the device lock's "edge-harness: waiting for local-cpu: held by ...").
PROGRESS_LINE = re.compile(r"^(\[ *\d+\.\ds\] [a-zA-Z0-9].*|edge-harness: waiting for \S+: held by .+)$")
SUMMARY_LINE = re.compile(r"^(\S+: \d+/\d+ cells measured; pick: .+|  report: \S+report\.md|summary: \S+summary\.md)$")


@pytest.mark.slow
def test_a_run_without_a_terminal_prints_only_our_lines_and_logs_the_chatter(tmp_path: Path) -> None:
    # ONNX fp32 + fp16 and a TFLite export: torch.onnx, onnxconverter, litert-torch, TF/absl C-level logs.
    cfg = tiny_config(variants=[{"name": "fp32", "formats": ["onnx", "tflite"]},
                                {"name": "fp16", "precision": "fp16", "formats": ["onnx"]}])
    (tmp_path / "tiny.toml").write_text(to_toml(cfg))
    out = tmp_path / "out"
    env = {**os.environ, "EDGE_HARNESS_CACHE": str(tmp_path / "cache")}
    env.pop("EDGE_HARNESS_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "tiny.toml"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    foreign = [ln for ln in r.stderr.splitlines() if not PROGRESS_LINE.match(ln)]
    foreign += [ln for ln in r.stdout.splitlines() if not SUMMARY_LINE.match(ln)]
    assert not foreign, "\n".join(foreign[:20])
    assert "export fp32/tflite (fp32): done" in r.stderr and "3/3 cells measured" in r.stdout

    logs = {p.name: p.read_text(errors="replace") for p in (out / "logs").glob("*.log")}
    assert {"export-fp32-onnx.log", "export-fp32-tflite.log"} <= set(logs)
    assert all(text.strip() for text in logs.values())  # a step that said nothing leaves no file
    chatter = "".join(logs.values())
    assert "torch" in chatter and len(chatter.splitlines()) >= 5

    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["phases_s"]) == {"build", "measuring", "reports"}
    assert timings["stages_s"]["exports"] > 0 and timings["stages_s"]["parity"] > 0
    assert sum(timings["phases_s"].values()) <= timings["total_s"] + 0.5


def test_capture_takes_warnings_logging_prints_and_c_level_output(tmp_path: Path) -> None:
    progress = Progress(stream=io.StringIO())
    path = tmp_path / "logs" / "step.log"
    with capture(path):
        print("a print")
        warnings.warn("a FutureWarning from a library", FutureWarning, stacklevel=1)
        library = logging.getLogger("some.library")
        library.addHandler(logging.StreamHandler(sys.__stderr__))  # as torch's loggers: bound at import
        library.warning("a library log line")
        os.write(2, b"C-level stderr\n")
        os.write(1, b"C-level stdout\n")
        with capture(tmp_path / "logs" / "inner.log"):
            os.write(2, b"inner step\n")
        os.write(2, b"back in the outer log\n")
        progress("our own line")
    text = path.read_text()
    for s in ("a print", "a FutureWarning from a library", "a library log line", "C-level stderr",
              "C-level stdout", "back in the outer log"):
        assert s in text
    assert "inner step" not in text and (tmp_path / "logs" / "inner.log").read_text() == "inner step\n"
    assert "our own line" in progress.stream.getvalue() and "our own line" not in text
    with capture(tmp_path / "logs" / "silent.log"):
        pass
    assert not (tmp_path / "logs" / "silent.log").exists()


def test_a_failed_step_names_its_log_and_is_timed(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.logs = tmp_path / "logs"
    with pytest.raises(RuntimeError), progress.step("export x/onnx (fp16)", stage="exports", log="export-x-onnx"):
        os.write(2, b"converter traceback\n")
        raise RuntimeError("converter crashed")
    line = stream.getvalue().splitlines()[-1]
    assert re.search(r"export x/onnx \(fp16\): FAILED in \d+\.\ds \(log: .*export-x-onnx\.log\)$", line)
    assert "converter traceback" in (tmp_path / "logs" / "export-x-onnx.log").read_text()
    steps = progress.timings()["steps"]
    assert steps[0]["stage"] == "exports" and steps[0]["ok"] is False and steps[0]["seconds"] >= 0
    assert log_name("export fp16/onnx") == "export-fp16-onnx.log"


def test_live_display_on_a_terminal_shows_finished_steps(tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, live=True)
    with progress.stage("build"):
        progress.expect(2)
        with progress.step("export a/onnx (fp32)"):
            pass
        progress.advance()
    progress.close()
    assert "export a/onnx (fp32): done in" in stream.getvalue()
    assert Progress(stream=io.StringIO(), verbose=True)._live is None  # -v: plain lines beside the chatter


def test_quiet_and_verbose_together_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from harness.cli import main

    assert main(["demo", "-q", "-v", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "-q" in err[0] and "-v" in err[0]


def test_fp32_conversion_is_reused_across_formats_and_precisions_until_the_model_changes(tmp_path: Path) -> None:
    model = build_model("tiny_cnn", 3, pretrained=False).eval()
    example = (torch.zeros(1, 3, 32, 32),)
    calls: list[str] = []

    def convert(m, ex, path, tag="a"):
        calls.append(tag)
        Path(path).write_bytes(f"{tag}{len(calls)}".encode())

    fp32_once("onnx", model, example, tmp_path / "1", convert)
    fp32_once("tflite", model, example, tmp_path / "2", convert)  # another format must not evict the ONNX one
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0)  # bumps every version counter (as the TFLite converter does), same values
    fp32_once("onnx", model, example, tmp_path / "3", convert)
    assert len(calls) == 2 and (tmp_path / "3").read_bytes() == (tmp_path / "1").read_bytes()
    fp32_once("onnx", model, example, tmp_path / "4", functools.partial(convert, tag="b"))  # other options
    assert len(calls) == 3
    with torch.no_grad():
        next(model.parameters())[0].add_(1.0)  # a real change
    fp32_once("onnx", model, example, tmp_path / "5", convert)
    assert len(calls) == 4


def test_baselines_are_cached_and_keyed_by_their_settings(tmp_path: Path) -> None:
    data = load_textures(patch=32, per_class=8)
    cfg = RunConfig.from_dict(tiny_config(model={"builtin": "tiny_cnn"}, finetune={"scratch_epochs": 1}))
    first = baselines(cfg, data, tmp_path)
    assert set(first) == {"same network, random init", "linear model on pixels"}
    assert baselines(cfg, data, tmp_path) == first
    assert len(list((tmp_path / "baselines").glob("*.pt"))) == 1
    (tmp_path / "baselines").joinpath(next((tmp_path / "baselines").glob("*.pt")).name).write_bytes(b"planted")
    assert baselines(cfg, data, tmp_path) == first  # an altered entry is a miss, recomputed
    other = RunConfig.from_dict(tiny_config(model={"builtin": "tiny_cnn"}, finetune={"scratch_epochs": 2}))
    baselines(other, data, tmp_path)
    assert len(list((tmp_path / "baselines").glob("*.pt"))) == 2


def test_parity_key_covers_artifact_inputs_reference_and_precision() -> None:
    x, ref = torch.zeros(2, 3).numpy(), torch.ones(2, 3).numpy()
    key = parity_key("a" * 64, "onnx", "fp16", x, ref)
    assert key == parity_key("a" * 64, "onnx", "fp16", x.copy(), ref.copy())
    assert len({key, parity_key("b" * 64, "onnx", "fp16", x, ref), parity_key("a" * 64, "onnx", "fp32", x, ref),
                parity_key("a" * 64, "onnx", "fp16", x + 1, ref), parity_key("a" * 64, "onnx", "fp16", x, ref * 2),
                parity_key("a" * 64, "tflite", "fp16", x, ref)}) == 6


def test_a_runner_or_tolerance_edit_misses_the_parity_cache(tmp_path: Path) -> None:
    for pkg in ("harness", "exporters", "targets"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import numpy as np; from harness.build.cache import parity_key; "
            "print(parity_key('a' * 64, 'onnx', 'fp16', np.zeros(3), np.ones(3)))")

    def key() -> str:
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()[-1]

    k0 = key()
    runner = tmp_path / "targets" / "runner.py"
    runner.write_text(runner.read_text() + "\n# a runner change\n")
    k1 = key()
    parity = tmp_path / "harness" / "build" / "parity.py"
    parity.write_text(parity.read_text().replace('"fp16": (5e-2, 0.90)', '"fp16": (5e-2, 0.95)'))
    assert len({k0, k1, key()}) == 3
