"""Exporters against the real converters and runtimes, on a tiny CNN (about 20k weights)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from exporters import EXPORTERS, PRECISIONS, onnx_graph_stats  # noqa: E402
from harness.errors import ExportError  # noqa: E402

SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "torch": ".pt2"}


class TinyCNN(torch.nn.Module):
    """conv-bn-relu x2, global average pool, linear: input (N, 3, 16, 16), 3 classes."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = TinyCNN()
    # Non-trivial BatchNorm statistics, so folding them into the convs is actually tested.
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def example() -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),)


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    """32 evaluation inputs, batch 1 each: shape (32, 1, 3, 16, 16)."""
    return np.random.default_rng(2).standard_normal((32, 1, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(inputs[:, 0])).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module,
             example: tuple[torch.Tensor, ...]) -> Callable[[str, str], Path]:
    """Export each (format, precision) once per module and hand back the file."""
    out_dir = tmp_path_factory.mktemp("artifacts")
    calibration = np.random.default_rng(3).standard_normal((64, 3, 16, 16)).astype(np.float32)
    cache: dict[tuple[str, str], Path] = {}

    def get(fmt: str, precision: str) -> Path:
        if (fmt, precision) not in cache:
            out = out_dir / f"{fmt}-{precision}{SUFFIX[fmt]}"
            cache[fmt, precision] = EXPORTERS[fmt](model, example, precision, out, calibration)
        return cache[fmt, precision]

    return get


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def run_tflite(path: Path, inputs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return np.concatenate([runner(args_0=x)["output_0"] for x in inputs])


def check_parity(precision: str, out: np.ndarray, ref: np.ndarray) -> None:
    diff = float(np.abs(out - ref).max())
    agreement = float((out.argmax(1) == ref.argmax(1)).mean())
    if precision == "fp32":
        assert diff < 1e-4
    elif precision == "fp16":
        assert diff < 1e-2
    else:
        assert agreement >= 0.8, f"top-1 agreement {agreement}"
        assert diff < 0.1 * float(np.abs(ref).max()), f"max abs diff {diff}"


# ---- ONNX ---------------------------------------------------------------------------

@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnx_runs_in_onnxruntime_close_to_torch(exported, precision, inputs, reference):
    path = exported("onnx", precision)
    out = run_onnx(path, inputs[:, 0])  # all 32 at once: the batch dim is dynamic
    assert out.shape == (32, 3) and out.dtype == np.float32
    check_parity(precision, out, reference)


def test_onnx_fp32_names_and_dynamic_batch(exported, model):
    sess = ort.InferenceSession(str(exported("onnx", "fp32")), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    x = np.random.default_rng(4).standard_normal((4, 3, 16, 16)).astype(np.float32)
    out = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.abs(out - model(torch.from_numpy(x)).numpy()).max() < 1e-4


@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic", "int8-static"])
def test_onnx_compressed_files_are_smaller(exported, precision):
    fp32 = exported("onnx", "fp32").stat().st_size
    size = exported("onnx", precision).stat().st_size
    assert size < (0.6 if precision == "fp16" else 0.45) * fp32


def test_onnx_multi_input_names(tmp_path):
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, a, b):
            return self.lin(a + b), a * 2

    example = (torch.randn(1, 4), torch.randn(1, 4))
    path = EXPORTERS["onnx"](Two().eval(), example, "fp32", tmp_path / "two.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_0", "input_1"]
    assert [o.name for o in sess.get_outputs()] == ["output_0", "output_1"]


# ---- TFLite -------------------------------------------------------------------------

@pytest.mark.parametrize("precision", PRECISIONS)
def test_tflite_runs_in_litert_close_to_torch(exported, precision, inputs, reference):
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    path = exported("tflite", precision)
    (inp,) = Interpreter(model_path=str(path)).get_input_details()
    # The torch layout and dtype survive every precision, so one input array feeds all.
    assert list(inp["shape"]) == [1, 3, 16, 16] and inp["dtype"] == np.float32
    out = run_tflite(path, inputs)
    assert out.dtype == np.float32
    check_parity(precision, out, reference)


@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic", "int8-static"])
def test_tflite_compressed_files_are_smaller(exported, precision):
    pytest.importorskip("litert_torch")
    fp32 = exported("tflite", "fp32").stat().st_size
    size = exported("tflite", precision).stat().st_size
    assert size < (0.6 if precision == "fp16" else 0.45) * fp32


# ---- torch .pt2 ----------------------------------------------------------------------

def test_torch_pt2_round_trips_with_dynamic_batch(exported, model, inputs, reference):
    module = torch.export.load(str(exported("torch", "fp32"))).module()
    with torch.no_grad():
        out = module(torch.from_numpy(inputs[:4, 0])).numpy()
    assert out.shape == (4, 3)
    assert np.abs(out - reference[:4]).max() < 1e-5


# ---- failures ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,precision", [("torch", "fp16"), ("onnx", "int4"), ("tflite", "bf16")])
def test_unsupported_precision_raises_one_line(fmt, precision, model, example, tmp_path):
    out = tmp_path / f"m{SUFFIX[fmt]}"
    with pytest.raises(ExportError) as err:
        EXPORTERS[fmt](model, example, precision, out)
    msg = str(err.value)
    assert "\n" not in msg and "unsupported precision" in msg and "fp32" in msg
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_int8_static_needs_calibration(fmt, model, example, tmp_path):
    with pytest.raises(ExportError, match="calibration"):
        EXPORTERS[fmt](model, example, "int8-static", tmp_path / f"m{SUFFIX[fmt]}")
    with pytest.raises(ExportError, match="shape"):
        EXPORTERS[fmt](model, example, "int8-static", tmp_path / f"m{SUFFIX[fmt]}",
                       np.zeros((8, 3, 8, 8), np.float32))


def test_failed_export_leaves_no_file(tmp_path):
    class BatchOneOnly(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] != 1:  # cannot be exported with a dynamic batch
                raise ValueError("batch 1 only")
            return x * 2

    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match=r"^onnx fp32 export failed: .*batch 1 only") as err:
        EXPORTERS["onnx"](BatchOneOnly(), (torch.randn(1, 3, 4, 4),), "fp32", out)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ---- graph stats -----------------------------------------------------------------------

def test_graph_stats_exact_params_and_macs(tmp_path):
    conv = torch.nn.Conv2d(3, 4, 3)  # (1,3,8,8) -> (1,4,6,6)
    lin = torch.nn.Linear(4 * 6 * 6, 5)
    with torch.no_grad():
        conv.weight[0].zero_()  # 27 zeros
    m = torch.nn.Sequential(conv, torch.nn.Flatten(), lin).eval()
    path = EXPORTERS["onnx"](m, (torch.randn(1, 3, 8, 8),), "fp32", tmp_path / "m.onnx")
    stats = onnx_graph_stats(path)
    params = (4 * 3 * 3 * 3 + 4) + (144 * 5 + 5)
    macs = (4 * 6 * 6) * (3 * 3 * 3) + 144 * 5  # output elements x (C_in x kH x kW), then M x N x K
    assert stats == {"params": params, "macs": macs, "nonzero_params": params - 27}


def test_graph_stats_depthwise_conv(tmp_path):
    m = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)).eval()
    path = EXPORTERS["onnx"](m, (torch.randn(1, 8, 5, 5),), "fp32", tmp_path / "dw.onnx")
    assert onnx_graph_stats(path) == {"params": 72, "macs": 8 * 25 * 9, "nonzero_params": 72}


def test_graph_stats_same_params_across_precisions(exported, model):
    fp32 = onnx_graph_stats(exported("onnx", "fp32"))
    # BatchNorm folds into the convs: the graph holds conv and linear weights and biases only.
    bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
             for p in m.parameters())
    assert fp32["params"] == sum(p.numel() for p in model.parameters()) - bn
    for precision in ("fp16", "int8-dynamic", "int8-static"):
        stats = onnx_graph_stats(exported("onnx", precision))
        assert stats["params"] == fp32["params"], precision
        assert stats["macs"] == fp32["macs"], precision


def test_import_is_cheap():
    code = ("import sys, exporters; "
            "print(sorted(exporters.EXPORTERS), [m for m in ('torch', 'onnx', 'onnxruntime', "
            "'litert_torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == "['onnx', 'tflite', 'torch'] []"
