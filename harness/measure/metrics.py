"""The compression figures papers report, derived per cell against the fp32 reference, with their CIs."""

from __future__ import annotations

from typing import Any

from harness.measure.results import Measurement, TargetReport
from harness.measure.stats import mcnemar_exact, paired_difference_ci, paired_ratio, samples_to_show_excess


def _reference_for(report: TargetReport, fmt: str) -> Measurement | None:
    """The fp32 reference in the same format, else in ONNX: the baseline for ratios."""
    ref = report.task.get("reference_variant", "fp32")
    for f in (fmt, "onnx", "tflite", "torch"):
        m = report.cell(ref, f)
        if m is not None and m.ok:
            return m
    return None


def latency_ratio(m: Measurement, other: Measurement) -> dict[str, Any] | None:
    """p50 of `m` over p50 of `other` with a CI: from the paired blocks where both have them, else from the
    two p50 CIs (the conservative interval [lo_m / hi_other, hi_m / lo_other]); None without p50s."""
    if m.block_p50_ms and other.block_p50_ms:
        pr = paired_ratio(m.block_p50_ms, other.block_p50_ms)
        if pr is not None:
            return {**pr, "basis": "paired blocks"}
    a, b = (m.latency_ms or {}).get("p50"), (other.latency_ms or {}).get("p50")
    if not a or not b:
        return None
    ca, cb = (m.latency_ms or {}).get("p50_ci"), (other.latency_ms or {}).get("p50_ci")
    ci = [ca[0] / cb[1], ca[1] / cb[0]] if ca and cb and cb[0] and cb[0] > 0 and cb[1] > 0 else None
    return {"ratio": a / b, "ci": ci, "n": 0, "basis": "p50 CIs" if ci else "p50 only"}


def contains_one(ci: list[float] | None, ratio: float | None = None) -> bool:
    """Whether a ratio interval admits "no difference"; without an interval only an exact 1.0 does."""
    if ci is None:
        return ratio == 1.0
    return ci[0] <= 1.0 <= ci[1]


def tied_within(ci: list[float] | None, ratio: float | None, margin: float = 0.0) -> bool:
    """Whether a latency ratio cannot be told from 1.0 by more than `margin`: its interval reaches into
    [1/(1+margin), 1+margin]. margin 0 is contains_one; without an interval the point estimate decides."""
    lo_edge, hi_edge = 1.0 / (1.0 + margin), 1.0 + margin
    if ci is None:
        return ratio is not None and lo_edge <= ratio <= hi_edge
    return ci[0] <= hi_edge and ci[1] >= lo_edge


def paired_drop(paired: dict[str, Any] | None, confidence: float = 0.95) -> dict[str, Any] | None:
    """The top-1 drop against the reference from the paired counts: drop, its CI (Newcombe), McNemar p."""
    if not paired or not paired.get("n"):
        return None
    a, b, c, d = _table(paired)
    lo, hi = paired_difference_ci(a, b, c, d, confidence)
    return {"drop": (b - c) / (a + b + c + d), "ci": [lo, hi], "mcnemar_p": mcnemar_exact(b, c), "n": a + b + c + d}


def _table(paired: dict[str, Any]) -> tuple[int, int, int, int]:
    return tuple(int(paired[k]) for k in ("both_right", "reference_only", "cell_only", "both_wrong"))  # type: ignore[return-value]


def judge_drop(paired: dict[str, Any] | None, drop: float, limit: float) -> dict[str, Any]:
    """Whether a top-1 drop exceeds the limit: "exceeds" only when the drop's 95% CI lies wholly above it.

    With the paired counts: "within" when the observed drop is at most the limit, "exceeds" when the CI's
    lower end is above it, "inconclusive" otherwise (with the samples that would resolve a drop of this
    size). Without them (reports from before the counts were kept) the point estimate decides.
    """
    test = paired_drop(paired)
    if test is None:
        return {"verdict": "exceeds" if drop > limit + 1e-9 else "within", "drop": drop, "basis": "point estimate"}
    out = {**test, "basis": "paired", "limit": limit}
    if test["drop"] <= limit + 1e-9:
        out["verdict"] = "within"
    elif test["ci"][0] > limit:
        out["verdict"] = "exceeds"
    else:
        out["verdict"] = "inconclusive"
        out["samples_to_resolve"] = samples_to_show_excess(*_table(paired), limit)
    return out


def drop_words(where: str, j: dict[str, Any], limit: float) -> str:
    """A judged drop in words, with its CI when it was tested on paired counts."""
    head = f"top-1 drops {100 * j['drop']:.1f} points{where}"
    if j.get("basis") != "paired":
        return f"{head} > {100 * limit:.1f}"
    ci = f"95% CI {100 * j['ci'][0]:.1f} to {100 * j['ci'][1]:.1f}, paired on {j['n']} samples"
    if j["verdict"] == "exceeds":
        return f"{head} > {100 * limit:.1f} ({ci})"
    more = j.get("samples_to_resolve")
    need = (f"about {more:,} samples would resolve a drop of this size" if more else
            "no practical number of samples would resolve a drop this close to the limit")
    return f"{head}, above the {100 * limit:.1f} limit but inconclusive, so not refused ({ci}; {need})"


def annotate(report: TargetReport, max_accuracy_drop: float = 0.01) -> None:
    """Fill `derived` (compression ratio, speed-up with its CI, accuracy change with its paired test) and
    `flags` on every cell."""
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
            r = latency_ratio(ref, m)
            if r is not None:
                d["speedup"] = r["ratio"]  # paired: the median of per-round ratios, which its CI is about
                d["speedup_ci"] = r["ci"]
                d["speedup_basis"] = r["basis"]
                d["speedup_tied"] = contains_one(r["ci"], d["speedup"])
            d["speedup_vs"] = ref.key
        acc = m.accuracy or {}
        for where, key, ref_value, suffix in (("clean", "top1", ref_top1, ""),
                                              ("shifted", "top1_shifted", ref_top1_shift, "_shifted")):
            if acc.get(key) is None or ref_value is None:
                continue
            d[f"top1_change{suffix}"] = acc[key] - ref_value
            test = paired_drop(acc.get(f"paired{suffix}"))
            if test is not None:
                d[f"top1_drop_ci{suffix}"] = test["ci"]
                d[f"top1_mcnemar_p{suffix}"] = test["mcnemar_p"]
            j = judge_drop(acc.get(f"paired{suffix}"), -d[f"top1_change{suffix}"], max_accuracy_drop)
            if j["verdict"] == "within":
                continue
            if j["basis"] == "paired":
                flags.append(drop_words(f" on {where} data", j, max_accuracy_drop))
            else:
                flags.append(f"top-1 drops {100 * j['drop']:.1f} points on {where} data "
                             f"(limit {100 * max_accuracy_drop:.1f})")
        flags += device_flags(m)
        parity = (m.artifact or {}).get("parity") or {}
        if parity and not parity.get("passed", True):
            flags.append(f"parity check failed: {parity.get('reason')}")
        check = m.settings.get("output_check") or {}
        if check.get("passed") is False:
            flags.append(str(check.get("reason")))
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
