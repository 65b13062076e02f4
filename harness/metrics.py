"""The compression figures papers report, derived per cell against the fp32 reference."""

from __future__ import annotations

from harness.results import Measurement, TargetReport


def _reference_for(report: TargetReport, fmt: str) -> Measurement | None:
    """The fp32 reference in the same format, else in ONNX: the baseline for ratios."""
    ref = report.task.get("reference_variant", "fp32")
    for f in (fmt, "onnx", "tflite", "torch"):
        m = report.cell(ref, f)
        if m is not None and m.ok:
            return m
    return None


def annotate(report: TargetReport, max_accuracy_drop: float = 0.01) -> None:
    """Fill `derived` (compression ratio, speed-up, accuracy change) and `flags` on every cell."""
    ref_top1 = report.task.get("reference_top1")
    ref_top1_shift = report.task.get("reference_top1_shifted")
    for m in report.measurements:
        d: dict = {}
        flags = []
        ref = _reference_for(report, m.format)
        size = (m.artifact or {}).get("size_bytes")
        ref_size = (ref.artifact or {}).get("size_bytes") if ref else None
        if size and ref_size:
            d["compression_ratio"] = ref_size / size
        if ref is not None and m.ok and m.latency_ms and ref.latency_ms:
            d["speedup"] = ref.latency_ms["p50"] / m.latency_ms["p50"]
            d["speedup_vs"] = ref.key
        acc = m.accuracy or {}
        if acc.get("top1") is not None and ref_top1 is not None:
            d["top1_change"] = acc["top1"] - ref_top1
            if -d["top1_change"] > max_accuracy_drop + 1e-9:
                flags.append(f"top-1 drops {-100 * d['top1_change']:.1f} points on clean data "
                             f"(limit {100 * max_accuracy_drop:.1f})")
        if acc.get("top1_shifted") is not None and ref_top1_shift is not None:
            d["top1_change_shifted"] = acc["top1_shifted"] - ref_top1_shift
            if -d["top1_change_shifted"] > max_accuracy_drop + 1e-9:
                flags.append(f"top-1 drops {-100 * d['top1_change_shifted']:.1f} points on shifted data "
                             f"(limit {100 * max_accuracy_drop:.1f})")
        parity = (m.artifact or {}).get("parity") or {}
        if parity and not parity.get("passed", True):
            flags.append(f"parity check failed: {parity.get('reason')}")
        m.derived = d
        m.flags = flags
