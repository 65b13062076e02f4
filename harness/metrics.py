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
        flags += device_flags(m)
        parity = (m.artifact or {}).get("parity") or {}
        if parity and not parity.get("passed", True):
            flags.append(f"parity check failed: {parity.get('reason')}")
        m.derived = d
        m.flags = flags


DRIFT_LIMIT = 0.10  # last-quarter median this much above the first quarter's: the run was not steady


def device_flags(m: Measurement) -> list[str]:
    """Flags from the run itself: upward latency drift, throttling, a hot device."""
    flags = []
    raw = m.raw_latencies_ms or []
    if len(raw) >= 40:
        q = len(raw) // 4
        first, last = sorted(raw[:q])[q // 2], sorted(raw[-q:])[q // 2]
        if first > 0 and last / first - 1 > DRIFT_LIMIT:
            rise = 100 * (last / first - 1)
            flags.append(f"latency drifts upward through the run: last quarter's median {rise:.0f}% above the "
                         f"first's (throttling or interference?)")
    states = m.device_state or {}
    for when in ("before", "during", "after"):
        st = states.get(when) or {}
        thr = st.get("throttled")
        if thr and thr not in ("0x0", "0"):
            flags.append(f"device reported throttling {when} the run (vcgencmd get_throttled = {thr})")
            break
    t0 = max(((states.get("before") or {}).get("temperature_c") or {}).values(), default=None)
    t1 = max(((states.get("after") or {}).get("temperature_c") or {}).values(), default=None)
    if t0 is not None and t1 is not None and t1 - t0 >= 10:
        flags.append(f"device warmed from {t0:.0f} to {t1:.0f} °C during the run")
    return flags
