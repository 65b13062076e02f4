"""Exports side by side in worker processes (harness.build.export_pool): real exporters, real processes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from harness.build.export_pool import WORKERS_ENV, ExportPool, ExportTask, export_one, workers_for


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


class Unpicklable(nn.Module):
    """A model that cannot travel to a worker (a lambda attribute): its exports run in this process."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net(2)
        self.hook = lambda x: x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _task(model: nn.Module, precision: str, path, log=None) -> ExportTask:
    return ExportTask("onnx", model, (torch.randn(1, 3, 8, 8),), precision, path, {}, log=log, tag=path.name)


def _logits(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_exports_in_workers_match_exports_here_and_failures_stay_in_their_task(tmp_path):
    a, b = _net(0), _net(1)
    groups = [[_task(a, "fp32", tmp_path / "a.onnx", tmp_path / "logs" / "a.log"),
               _task(a, "int8-dynamic", tmp_path / "a8.onnx")],
              [_task(b, "fp32", tmp_path / "b.onnx"), _task(b, "no-such-precision", tmp_path / "bad.onnx")],
              [_task(Unpicklable(), "fp32", tmp_path / "u.onnx")]]
    done: dict[str, object] = {}
    with ExportPool(2) as pool:
        pool.start()
        assert pool.run(groups, lambda task, outcome: done.__setitem__(task.tag, outcome)) == 2
    assert set(done) == {"a.onnx", "a8.onnx", "b.onnx", "bad.onnx", "u.onnx"}  # every task reported, once
    assert all(done[k].ok for k in ("a.onnx", "a8.onnx", "b.onnx", "u.onnx")), done
    bad = done["bad.onnx"]
    assert not bad.ok and bad.error.startswith("export failed:") and "\n" not in bad.error
    assert (tmp_path / "logs" / "a.log").is_file() or not (tmp_path / "logs").exists()
    # The same model exported here gives the same outputs as the worker's file.
    here = tmp_path / "here.onnx"
    assert export_one(_task(a, "fp32", here)).ok
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_logits(tmp_path / "a.onnx", x), _logits(here, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_logits(tmp_path / "a.onnx", x), a(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("env, groups, want", [(None, 2, 0), ("0", 9, 0), ("1", 9, 0), ("2", 9, 2), ("3", 2, 2),
                                               ("x", 9, 0), ("2", 1, 0)])
def test_how_many_export_processes(monkeypatch, env, groups, want):
    if env is None:
        monkeypatch.delenv(WORKERS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKERS_ENV, env)
    assert workers_for(groups) == want
