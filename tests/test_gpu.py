"""The local GPU target: real CUDA runs where a GPU exists, a one-line refusal where not."""

from __future__ import annotations

import numpy as np
import pytest

from harness.config.targets_file import load_targets_file, make_target
from harness.errors import TargetError
from targets.base import Job
from targets.gpu import nvidia_smi

HAVE_GPU = nvidia_smi() is not None


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU; the no-GPU path is not reachable")
def test_without_a_gpu_the_target_says_so_and_fails_its_cells(tmp_path, cnn_onnx):
    t = make_target("local-gpu", load_targets_file(None))
    try:
        with pytest.raises(TargetError, match="no NVIDIA GPU found"):
            t.probe()
        np.savez(tmp_path / "t.npz", input=np.zeros((1, 3, 16, 16), np.float32))
        raw = t.run(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "t.npz")))
        assert not raw.ok and "no NVIDIA GPU" in raw.error
    finally:
        t.close()


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="no NVIDIA GPU on this machine (nvidia-smi not found)")
def test_onnx_on_cuda_provider(tmp_path, cnn_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
    t = make_target("local-gpu", load_targets_file(None))
    try:
        probe = t.probe()
        assert probe["gpu_name"] and probe["driver"]
        np.savez(tmp_path / "t.npz", input=np.zeros((1, 3, 16, 16), np.float32))
        raw = t.run(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "t.npz"), runs=20))
        assert raw.ok, raw.error
        assert raw.data["providers"][0] == "CUDAExecutionProvider"
    finally:
        t.close()
