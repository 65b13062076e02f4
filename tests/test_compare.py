"""`edge-harness compare`: the rank test, matching cells between runs, and the exit code a CI gate reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.measure.results import Measurement, TargetReport
from harness.measure.stats import LatencyStats, mann_whitney
from harness.report.compare import compare_runs
from harness.report.files import write_target_report

CELLS = {("fp32", "onnx"): 4.0, ("int8-dynamic", "onnx"): 2.5, ("int8-dynamic", "tflite"): 3.1}


def timings(p50_ms: float, seed: int, n: int = 200) -> list[float]:
    """Skewed, latency-like samples with a few stalls, as a runner returns them."""
    rng = np.random.default_rng(seed)
    x = p50_ms * rng.lognormal(0.0, 0.05, n)
    stalls = rng.random(n) < 0.02
    x[stalls] *= rng.uniform(1.5, 3.0, int(stalls.sum()))
    return [round(float(v), 6) for v in x]


def cell(variant: str, fmt: str, raw: list[float], top1: float = 0.9, threads: int = 2) -> Measurement:
    stats = LatencyStats.from_ns([int(v * 1e6) for v in raw])
    return Measurement(variant, fmt, "ok", artifact={"sha256": f"{variant}-{fmt}", "size_bytes": 1000},
                       latency_ms=stats.to_dict(), accuracy={"top1": top1, "n": 500}, raw_latencies_ms=raw,
                       settings={"threads": threads, "runtime_version": "1.20"})


def write_run(out: Path, seed: int, change: dict[str, dict] | None = None) -> Path:
    """A run folder with two targets; `change` alters one cell ('target:variant/format') of this run."""
    change = change or {}
    for t, (name, scale) in enumerate((("local-cpu", 1.0), ("pi4", 3.0))):
        report = TargetReport(target={"name": name, "kind": "local", "host": "localhost"})
        for i, ((variant, fmt), p50) in enumerate(CELLS.items()):
            how = change.get(f"{name}:{variant}/{fmt}", {})
            raw = timings(p50 * scale, seed * 100 + t * 10 + i)
            raw = [v * how.get("slower", 1.0) for v in raw]
            m = cell(variant, fmt, raw, top1=0.9 + how.get("top1", 0.0), threads=how.get("threads", 2))
            if how.get("fail"):
                m = Measurement(variant, fmt, "failed", error="runner exited with code 139")
            report.measurements.append(m)
        write_target_report(report, out)
    return out


def test_mann_whitney_u_matches_pair_counts_and_scipy():
    rng = np.random.default_rng(3)
    old = np.round(rng.normal(10, 1, 40), 1)  # rounding makes ties, which the variance must correct for
    new = np.round(rng.normal(10.6, 1, 35), 1)
    mw = mann_whitney(old, new)
    pairs = sum((b > a) + 0.5 * (b == a) for a in old for b in new)
    assert mw.u == pytest.approx(pairs)
    assert 0 < mw.p_slower < 0.05 < mw.p_faster <= 1
    stats = pytest.importorskip("scipy.stats")
    ref = stats.mannwhitneyu(new, old, alternative="greater", method="asymptotic", use_continuity=True)
    assert mw.p_slower == pytest.approx(ref.pvalue, rel=1e-6)
    ref = stats.mannwhitneyu(new, old, alternative="less", method="asymptotic", use_continuity=True)
    assert mw.p_faster == pytest.approx(ref.pvalue, rel=1e-6)


def test_mann_whitney_on_identical_samples_finds_nothing():
    x = [1.0, 1.0, 1.0, 1.0]
    mw = mann_whitney(x, x)
    assert (mw.p_slower, mw.p_faster) == (1.0, 1.0)


def test_same_numbers_twice_is_no_regression(tmp_path, capsys):
    old = write_run(tmp_path / "old", seed=1)
    new = write_run(tmp_path / "new", seed=1)
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "0 regressions, 0 improvements in 6 matched cells" in out
    assert (new / "compare.md").is_file() and (new / "compare.json").is_file()


def test_one_slower_cell_is_reported_and_fails_the_gate(tmp_path, capsys):
    old = write_run(tmp_path / "old", seed=1)
    new = write_run(tmp_path / "new", seed=2, change={"pi4:int8-dynamic/onnx": {"slower": 1.3, "threads": 1}})
    assert main(["compare", str(old), str(new), "--out", str(tmp_path / "cmp")]) == 1
    comp = compare_runs(old, new)
    assert [(c.target, c.cell) for c in comp.regressions] == [("pi4", "int8-dynamic/onnx")]
    r = comp.regressions[0]
    assert r.latency_change == pytest.approx(0.3, abs=0.03)
    assert r.p_value is not None and r.p_value < 1e-10
    assert any("threads 2 → 1" in why for why in r.reasons)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "1 regression," in md and "| pi4 | int8-dynamic/onnx |" in md and "REGRESSION" in md
    assert "REGRESSION" in capsys.readouterr().out


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6), (7, 8)])
def test_noise_between_runs_is_no_regression(tmp_path, seeds):
    # Two independent samples from the same distribution: different numbers, same speed.
    old = write_run(tmp_path / "old", seed=seeds[0])
    new = write_run(tmp_path / "new", seed=seeds[1])
    comp = compare_runs(old, new)
    assert not comp.regressions and not comp.improvements
    assert all(c.latency_change is not None and abs(c.latency_change) < 0.05 for c in comp.changes)


def test_small_but_significant_change_needs_the_practical_threshold(tmp_path):
    old = write_run(tmp_path / "old", seed=1)
    new = write_run(tmp_path / "new", seed=1, change={"local-cpu:fp32/onnx": {"slower": 1.03}})
    assert not compare_runs(old, new).regressions  # significant, but under the default 5%
    strict = compare_runs(old, new, min_change=0.01)
    assert [c.cell for c in strict.regressions] == ["fp32/onnx"]
    assert main(["compare", str(old), str(new), "--min-change", "0.01"]) == 1


def test_accuracy_drop_failure_and_improvement(tmp_path):
    old = write_run(tmp_path / "old", seed=1)
    new = write_run(tmp_path / "new", seed=2, change={
        "local-cpu:int8-dynamic/tflite": {"top1": -0.03},
        "pi4:fp32/onnx": {"fail": True},
        "local-cpu:fp32/onnx": {"slower": 0.7},
    })
    comp = compare_runs(old, new, max_accuracy_drop=0.01)
    regressions = {(c.target, c.cell): c for c in comp.regressions}
    assert set(regressions) == {("local-cpu", "int8-dynamic/tflite"), ("pi4", "fp32/onnx")}
    assert "top-1 90.0% → 87.0% (-3.0 points)" in regressions[("local-cpu", "int8-dynamic/tflite")].reasons[0]
    assert "now failed: runner exited with code 139" in regressions[("pi4", "fp32/onnx")].reasons[0]
    assert [(c.target, c.cell) for c in comp.improvements] == [("local-cpu", "fp32/onnx")]
    assert compare_runs(old, new, max_accuracy_drop=0.05).regressions[0].cell == "fp32/onnx"


def test_unreadable_input_is_a_one_line_error(tmp_path, capsys):
    old = write_run(tmp_path / "old", seed=1)
    assert main(["compare", str(old), str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def _rounds_run(out: Path, seed: int, machine: float, cell_factor: float = 1.0, rounds: int = 12,
                control_threads: int = 2) -> Path:
    """An interleaved run: per-round block medians; the whole machine runs `machine` times slower,
    each round drifting by up to ±40%, and int8-dynamic/onnx `cell_factor` times slower on top."""
    rng = np.random.default_rng(seed)
    drift = machine * rng.uniform(0.6, 1.4, rounds)
    report = TargetReport(target={"name": "local-cpu", "kind": "local", "host": "localhost"},
                          task={"reference_variant": "fp32"})
    for (variant, fmt), p50 in CELLS.items():
        factor = cell_factor if (variant, fmt) == ("int8-dynamic", "onnx") else 1.0
        blocks = [float(p50 * factor * d * rng.lognormal(0.0, 0.02)) for d in drift]
        m = cell(variant, fmt, timings(float(np.median(blocks)), seed),
                 threads=control_threads if variant == "fp32" else 2)
        m.block_p50_ms = blocks
        report.measurements.append(m)
    write_target_report(report, out)
    return out


def test_rounds_relative_to_the_control_ignore_machine_speed_and_catch_a_real_slowdown(tmp_path):
    old = _rounds_run(tmp_path / "old", 1, machine=1.0)
    same = _rounds_run(tmp_path / "same", 2, machine=1.8)  # the same artifacts on a machine 1.8x slower
    comp = compare_runs(old, same)
    assert comp.regressions == [] and comp.improvements == []
    assert "no detectable change" in comp.changes[1].reasons[0] and comp.changes[1].detectable < 0.1
    slow = _rounds_run(tmp_path / "slow", 3, machine=1.8, cell_factor=1.5)
    comp = compare_runs(old, slow)
    assert [c.cell for c in comp.regressions] == ["int8-dynamic/onnx"]
    assert "relative to fp32/onnx" in comp.regressions[0].reasons[0]
    assert main(["compare", str(old), str(same), "--out", str(tmp_path / "c.md")]) == 0
    assert main(["compare", str(old), str(slow), "--out", str(tmp_path / "c2.md")]) == 1


def test_a_control_whose_setup_changed_is_not_used_as_one(tmp_path):
    old = _rounds_run(tmp_path / "old", 1, machine=1.0)
    new = _rounds_run(tmp_path / "new", 2, machine=1.0, control_threads=1)  # fp32 ran at 1 thread this time
    comp = compare_runs(old, new)
    others = [c for c in comp.changes if c.cell != "fp32/onnx"]
    assert others and all("absolute" in c.reasons[0] and "relative to fp32" not in c.reasons[0] for c in others)
    assert all("the run's control changed its setup" in c.reasons[0] for c in others)


def test_holm_keeps_only_what_survives_the_family_wise_test():
    from harness.report.compare import holm

    assert holm({"a": 0.001, "b": 0.01, "c": 0.03}, 0.05) == {"a", "b", "c"}  # 0.0167, 0.025, 0.05
    assert holm({"a": 0.001, "b": 0.03, "c": 0.04}, 0.05) == {"a"}  # 0.03 >= 0.025 stops the walk
    assert holm({"a": 0.04, "b": 0.04}, 0.05) == set()
    assert holm({}, 0.01) == set()
