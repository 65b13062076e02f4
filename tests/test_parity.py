"""The parity check catches a broken export before it is measured."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from harness.build.parity import check_artifact, compare


def _torch_outputs(model, x):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_a_faithful_export_passes(tmp_path, cnn_onnx, tiny_cnn):
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "p.npz", input=x)
    par = check_artifact(cnn_onnx, "onnx", "fp32", tmp_path / "p.npz", _torch_outputs(tiny_cnn, x))
    assert par.passed, par.reason
    assert par.max_abs_diff < 1e-4 and par.agreement == 1.0 and par.n == 16


def test_a_deliberately_broken_export_fails(tmp_path, cnn_onnx, tiny_cnn):
    """Scramble the first conv's weights in the ONNX file: it still loads and runs, but is wrong."""
    model = onnx.load(str(cnn_onnx))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(biggest)
    w = np.random.default_rng(1).permutation(w.ravel()).reshape(w.shape) * -3.0
    biggest.CopyFrom(numpy_helper.from_array(w.astype(np.float32), biggest.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    x = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "p.npz", input=x)
    par = check_artifact(broken, "onnx", "fp32", tmp_path / "p.npz", _torch_outputs(tiny_cnn, x))
    assert not par.passed
    assert "max abs diff" in par.reason


def test_an_artifact_that_does_not_load_fails(tmp_path, cnn_onnx):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(cnn_onnx.read_bytes()[:200])
    np.savez(tmp_path / "p.npz", input=np.zeros((2, 3, 16, 16), np.float32))
    par = check_artifact(bad, "onnx", "fp32", tmp_path / "p.npz", np.zeros((2, 3), np.float32))
    assert not par.passed and "did not run" in par.reason


def test_compare_thresholds_by_precision():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    small = ref + 5e-3
    assert not compare(small, ref, "fp32").passed  # 5e-3 > 1e-3 * scale 3
    assert compare(small, ref, "fp16").passed
    flipped = ref[:, ::-1].copy()
    assert not compare(flipped, ref, "int8-dynamic").passed  # agreement collapses
    assert not compare(np.full_like(ref, np.nan), ref, "int8-static").passed
    assert not compare(ref[:2], ref, "fp32").passed
