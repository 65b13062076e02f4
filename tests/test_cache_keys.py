"""The artifact and variant caches are keyed by the code that makes them: an edit anywhere in that code misses.

Run in a scratch copy of the tree, so the real files are never touched and the keys are read by a
fresh interpreter (as the next `edge-harness run` would).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = "from harness.build.cache import code_hash, exporter_hash; print(exporter_hash(), code_hash())"


def _keys(root: Path) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", KEYS], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    exp, code = out.stdout.split()
    return exp, code


def test_editing_exporter_or_recipe_code_misses_the_cache(tmp_path):
    for pkg in ("harness", "exporters", "targets"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    exp0, code0 = _keys(tmp_path)
    assert _keys(tmp_path) == (exp0, code0)  # stable between processes

    onnx = tmp_path / "exporters" / "onnx.py"
    onnx.write_text(onnx.read_text() + "\n# an edit that could change the ONNX files\n")
    exp1, code1 = _keys(tmp_path)
    assert exp1 != exp0 and code1 == code0

    (tmp_path / "exporters" / "extra").mkdir()
    (tmp_path / "exporters" / "extra" / "helper.py").write_text("X = 1\n")  # a new module in a sub-folder
    exp2, _ = _keys(tmp_path)
    assert exp2 != exp1

    specs = tmp_path / "harness" / "config" / "recipes.py"  # recipe defaults change what a variant is
    specs.write_text(specs.read_text().replace('"sparsity": 0.5', '"sparsity": 0.6'))
    _, code3 = _keys(tmp_path)
    assert code3 != code0

    train = tmp_path / "harness" / "build" / "training.py"
    train.write_text(train.read_text() + "\n# a training change\n")
    _, code4 = _keys(tmp_path)
    assert code4 != code3
