"""Check an exported artifact against the torch model it came from, before it is measured.

The artifact runs in the same runner the targets use (a fresh subprocess), so a
conversion that crashes its runtime fails this check instead of the harness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets import Job, LocalTarget

# Per precision: the largest max-abs-diff relative to the reference's output scale, and the
# smallest top-1 agreement. Quantized artifacts are meant to differ; the agreement floor
# catches a broken conversion (a 3-class model at chance agrees about 33% of the time).
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 0.97),
    "fp16": (5e-2, 0.90),
    "int8-dynamic": (float("inf"), 0.80),
    "int8-static": (float("inf"), 0.80),
}


@dataclass
class Parity:
    n: int
    max_abs_diff: float
    agreement: float
    passed: bool
    reason: str | None = None
    rel_tolerance: float | None = None
    min_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["rel_tolerance"] == float("inf"):
            d["rel_tolerance"] = None
        return d


def compare(outputs: np.ndarray, reference: np.ndarray, precision: str,
            min_agreement: float | None = None) -> Parity:
    """Judge artifact outputs against torch outputs on the same inputs."""
    rel_tol, floor = TOLERANCES.get(precision, (float("inf"), 0.8))
    if min_agreement is not None:
        floor = min_agreement
    n = len(reference)
    if outputs.size != reference.size:
        return Parity(n, float("nan"), 0.0, False, f"output shape {list(outputs.shape)} differs from torch's "
                      f"{list(reference.shape)}", rel_tol, floor)
    outputs = outputs.reshape(reference.shape)
    if not np.all(np.isfinite(outputs)):
        return Parity(n, float("nan"), 0.0, False, "outputs contain NaN or inf", rel_tol, floor)
    diff = float(np.max(np.abs(outputs.astype(np.float64) - reference)))
    agree = float(np.mean(np.argmax(outputs.reshape(n, -1), 1) == np.argmax(reference.reshape(n, -1), 1)))
    scale = max(1.0, float(np.max(np.abs(reference))))
    reasons = []
    if diff > rel_tol * scale:
        reasons.append(f"max abs diff {diff:.3g} > {rel_tol * scale:.3g}")
    if agree < floor:
        reasons.append(f"top-1 agreement {agree:.2f} < {floor:.2f}")
    return Parity(n, diff, agree, not reasons, "; ".join(reasons) or None, rel_tol, floor)


def check_artifact(path: Path, fmt: str, precision: str, inputs_npz: Path, reference: np.ndarray,
                   target: Any = None, min_agreement: float | None = None, timeout_s: float = 300.0) -> Parity:
    """Run `path` on the parity inputs in the runner and compare with the torch outputs."""
    own = target is None
    target = target or LocalTarget("parity", threads=None)
    try:
        raw = target.run(Job(artifact=str(path), format=fmt, eval_inputs=str(inputs_npz), timeout_s=timeout_s))
    finally:
        if own:
            target.close()
    if not raw.ok or not raw.outputs:
        return Parity(len(reference), float("nan"), 0.0, False, f"artifact did not run: {raw.error}")
    return compare(raw.outputs[0], reference, precision, min_agreement)
