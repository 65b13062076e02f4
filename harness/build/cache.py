"""Content keys for everything a run caches: checkpoints, compressed variants, exported artifacts.

A key covers every input that changes the result, code included: the exporter package's files
(all of them, found from the package itself, so a moved or added file is covered) and the build
stage's model, training and recipe code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import exporters
from harness.build import models, parity, pruning, qat, recipes, sensitivity, signed_cache, training, user_model
from harness.build.user_model import import_factory
from harness.config import recipes as recipe_specs
from targets.base import RUNNER_PATH

# What an artifact's parity check depends on besides its bytes and inputs: the runtimes that run it.
RUNTIMES = ("numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "torch")
CONVERTERS = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxconverter-common", "litert-torch",
              "ai-edge-quantizer", "torchao", "torch-pruning")


def default_cache_dir() -> Path:
    """~/.cache/edge-harness, or EDGE_HARNESS_CACHE."""
    return Path(os.environ.get("EDGE_HARNESS_CACHE", Path.home() / ".cache" / "edge-harness"))


def content_key(*parts: Any) -> str:
    """A short hash of JSON-able parts (settings, hashes, names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_digest(model: Any) -> str:
    """Content hash of a torch model: its architecture (repr) and every tensor in its state."""
    h = hashlib.sha256(repr(model).encode())
    for k, t in model.state_dict().items():
        h.update(k.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def exporter_hash() -> str:
    """Exporter code and converter versions: a change to either makes new artifacts."""
    h = hashlib.sha256()
    root = Path(exporters.__file__).parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    for dist in CONVERTERS:
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def model_code_hash(factory: str | None) -> str:
    """The code a fine-tuned checkpoint depends on: ours, and the user's factory module's source."""
    h = hashlib.sha256(code_hash().encode())
    if factory:
        try:
            src = inspect.getsourcefile(import_factory(factory))
            if src:
                h.update(Path(src).read_bytes())
        except (TypeError, OSError):
            pass  # a compiled or built-in factory: its name alone keys the cache
    return h.hexdigest()[:16]


def code_hash() -> str:
    """Hash of the code that shapes a variant, so a changed recipe never reuses a stale cache entry."""
    h = hashlib.sha256()
    for module in (recipes, models, training, pruning, qat, sensitivity, user_model, recipe_specs):
        h.update(Path(inspect.getfile(module)).read_bytes())
    return h.hexdigest()[:16]


def _versions(dists: tuple[str, ...]) -> list[str]:
    out = []
    for dist in dists:
        try:
            out.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist}=none")
    return out


def array_hash(*arrays: Any) -> str:
    """Content hash of numpy arrays (dtype, shape and bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def parity_key(artifact_sha256: str, fmt: str, precision: str, inputs: Any, reference: Any) -> str:
    """What a parity verdict depends on: the artifact's bytes, the inputs and torch outputs it is judged on,
    the runner and the tolerances (their code), and the runtime versions that run it."""
    return content_key("parity", artifact_sha256, fmt, precision, array_hash(inputs, reference),
                       hashlib.sha256(RUNNER_PATH.read_bytes() + Path(inspect.getfile(parity)).read_bytes())
                       .hexdigest()[:16], _versions(RUNTIMES))


def cached_result(folder: Path, key: str, compute: Any) -> Any:
    """`compute()`, or its result from `folder/<key>.pt` (signed, so a planted entry is a miss, never loaded)."""
    path = Path(folder) / f"{key}.pt"
    hit = signed_cache.load(path)
    if hit is not None:
        return hit["value"]
    value = compute()
    try:
        signed_cache.save({"value": value}, path)
    except OSError:
        pass  # a read-only cache: the result is still right, only not kept
    return value
