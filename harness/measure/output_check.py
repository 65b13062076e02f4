"""Check a device's outputs against the same model run on this host: a broken delegate or runtime shows up.

`bench` measures a model file nobody gave a torch reference for; the host's own runtime on the same
inputs is the reference instead (a known-good build: tflite-runtime 2.14 gave wrong results for
dynamic-range models, and a GPU delegate can too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from targets.base import Job, RawResult
from targets.local import LocalTarget

# Relative to the reference outputs' scale; beyond it the device's results are flagged as suspect.
SUSPECT_REL_DIFF = 1e-2


def host_reference(model: Path, fmt: str, inputs: Path, timeout_s: float = 300.0) -> RawResult:
    """Run `model` on `inputs` in a fresh runner process on this host and return its outputs."""
    with LocalTarget("host-reference") as host:
        return host.run(Job(artifact=str(model), format=fmt, eval_inputs=str(inputs), runs=1, warmup=0,
                            timeout_s=timeout_s))


def compare_outputs(device: list[np.ndarray], host: list[np.ndarray]) -> dict[str, Any]:
    """Max abs diff and arg-max agreement over every output, device against host."""
    if len(device) != len(host):
        return {"passed": False, "reason": f"the device returned {len(device)} outputs, the host {len(host)}"}
    worst, agree, n, scale = 0.0, [], 0, 1.0
    for d, h in zip(device, host, strict=True):
        if d.size != h.size:
            return {"passed": False, "reason": f"output shapes differ: device {list(d.shape)}, host {list(h.shape)}"}
        d64, h64 = d.astype(np.float64).reshape(h.shape), h.astype(np.float64)
        if not np.all(np.isfinite(d64)):
            return {"passed": False, "reason": "the device's outputs contain NaN or inf"}
        worst = max(worst, float(np.max(np.abs(d64 - h64))) if h.size else 0.0)
        scale = max(scale, float(np.max(np.abs(h64))) if h.size else 0.0)
        if h.ndim >= 1 and h.size:
            rows = h.reshape(h.shape[0], -1) if h.ndim > 1 else h.reshape(1, -1)
            agree.append(np.argmax(d64.reshape(rows.shape), axis=1) == np.argmax(rows, axis=1))
            n = max(n, len(rows))
    agreement = float(np.mean(np.concatenate(agree))) if agree else None
    passed = worst <= SUSPECT_REL_DIFF * scale and (agreement is None or agreement == 1.0)
    out: dict[str, Any] = {"n": n, "max_abs_diff": worst, "agreement": agreement, "passed": passed,
                           "tolerance": SUSPECT_REL_DIFF * scale}
    if not passed:
        out["reason"] = (f"device outputs differ from this host's: max abs diff {worst:.3g} (tolerance "
                         f"{SUSPECT_REL_DIFF * scale:.3g}), arg-max agreement {agreement}")
    return out


def output_check(model: Path, fmt: str, inputs: Path, device: RawResult) -> dict[str, Any]:
    """The device's outputs on `inputs` against this host's run of the same file, as a report dict."""
    if not device.ok or not device.outputs:
        return {"passed": None, "reason": "the device returned no outputs"}
    host = host_reference(model, fmt, inputs)
    if not host.ok or not host.outputs:
        return {"passed": None, "reason": f"the host could not run the model for reference: {host.error}"}
    out = compare_outputs(device.outputs, host.outputs)
    out["host_runtime"] = f"{host.data.get('runtime')} {host.data.get('runtime_version')}"
    out["device_runtime"] = f"{device.data.get('runtime')} {device.data.get('runtime_version')}"
    return out
