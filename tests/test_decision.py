"""The decision under noise: accuracy with Wilson CIs and paired counts, the paired accuracy test, latency
ties from paired blocks, and the decision written into report.json and summary.json."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from harness.measure.fold import EvalSet, accuracy_of, score
from harness.measure.metrics import annotate
from harness.measure.results import Measurement, TargetReport, load_report, save_report
from harness.measure.stats import paired_difference_ci, wilson
from harness.report.files import write_summary, write_target_report
from harness.report.recommend import TIE_BREAK, recommend
from harness.report.rerender import rerender

N = 90
ROUNDS = 24


def _drift(seed: int = 0) -> np.ndarray:
    """Per-round device speed: a random walk, as on a shared VM or a phone that heats up."""
    rng = np.random.default_rng(seed)
    return np.exp(np.cumsum(rng.normal(0.0, 0.08, ROUNDS)))


def cell(variant: str, fmt: str, factor: float, size: int, lost: int = 0, gained: int = 0, rss: float = 50.0,
         seed: int = 1, noise: float = 0.01, blocks: bool = True, drift: np.ndarray | None = None) -> Measurement:
    """An ok cell: blocks = the drift times `factor` times (1 ± noise); `lost` samples the reference gets right
    and this cell wrong, `gained` the reverse, out of N."""
    rng = np.random.default_rng(seed)
    series = [float(x) for x in 2.0 * factor * (drift if drift is not None else _drift())
              * (1 + rng.normal(0, noise, ROUNDS))]
    p50 = float(np.median(series))
    right = N - lost + gained - 2  # the reference gets N - 2 right
    paired = {"n": N, "both_right": N - 2 - lost, "reference_only": lost, "cell_only": gained,
              "both_wrong": 2 - gained}
    return Measurement(variant, fmt, "ok", artifact={"size_bytes": size},
                       latency_ms={"n": 400, "p50": p50, "p50_ci": [p50 * 0.9, p50 * 1.1]},
                       memory_mb={"peak_rss": rss}, block_p50_ms=series if blocks else None,
                       accuracy={"n": N, "top1": right / N, "top1_ci": list(wilson(right, N)), "paired": paired})


def report_of(*cells: Measurement, limit: float = 0.01) -> TargetReport:
    r = TargetReport(target={"name": "dev", "kind": "local", "host": "localhost", "device": {"cpu_model": "X"}},
                     task={"reference_top1": (N - 2) / N, "reference_variant": "fp32", "max_accuracy_drop": limit,
                           "constraints": {"max_accuracy_drop": limit}},
                     measurements=list(cells))
    annotate(r, limit)
    return r


# ------------------------------------------------------------------------------------------- accuracy
def test_accuracy_of_gives_wilson_cis_and_paired_counts():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    ref = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 1, 1]]  # reference right on 8 of 10
    out = np.eye(3)[[0, 1, 2, 0, 1, 0, 0, 1, 2, 1]]  # cell right on 8: loses sample 5, gains sample 8
    acc = accuracy_of(out, EvalSet("clean", "", labels, ref))
    assert acc["top1"] == 0.8 and acc["top1_ci"] == pytest.approx(list(wilson(8, 10)))
    assert acc["agreement"] == 0.8 and acc["agreement_ci"] == pytest.approx(list(wilson(8, 10)))
    assert acc["paired"] == {"n": 10, "both_right": 7, "reference_only": 1, "cell_only": 1, "both_wrong": 1}


def test_score_names_the_shifted_cis_next_to_their_figures():
    labels = np.array([0, 1, 2, 0])
    ref = np.eye(3)[[0, 1, 2, 0, 0, 1, 2, 1]]  # clean then shifted; reference 4/4 and 3/4
    prep = SimpleNamespace(reference_outputs=ref, labels=labels, n_clean=4)
    acc = score(np.eye(3)[[0, 1, 2, 1, 0, 1, 0, 1]], prep)  # type: ignore[arg-type]
    assert acc["top1"] == 0.75 and acc["top1_shifted"] == 0.5
    assert acc["top1_ci"] == pytest.approx(list(wilson(3, 4)))
    assert acc["top1_shifted_ci"] == pytest.approx(list(wilson(2, 4)))
    assert "agreement_shifted_ci" in acc and "top1_ci_shifted" not in acc
    assert acc["paired"]["reference_only"] == 1 and acc["paired_shifted"] == {
        "n": 4, "both_right": 2, "reference_only": 1, "cell_only": 0, "both_wrong": 1}


def test_one_sample_in_ninety_is_not_refused_twenty_are():
    r = report_of(cell("fp32", "onnx", 2.0, 4000, seed=1),
                  cell("int8-static", "onnx", 1.0, 1000, lost=1, seed=2),  # 97.8% vs 96.7%: 1.1 points worse
                  cell("distilled", "onnx", 0.5, 500, lost=20, seed=3))  # 22 points worse
    rec = recommend(r)
    checks = {c.key: c for c in rec.checks}
    assert rec.pick is not None and rec.pick.key == "int8-static/onnx"
    one = checks["int8-static/onnx"]
    assert one.meets and not one.accuracy_refused and one.accuracy["clean"]["verdict"] == "inconclusive"
    need = one.accuracy["clean"]["samples_to_resolve"]
    assert 10_000 < need < 100_000
    assert f"about {need:,} samples would resolve a drop of this size" in one.verdict
    assert "inconclusive, so not refused" in rec.reason
    twenty = checks["distilled/onnx"]
    assert not twenty.meets and twenty.accuracy_refused and twenty.accuracy["clean"]["verdict"] == "exceeds"
    lo, hi = paired_difference_ci(N - 22, 20, 0, 2)
    assert twenty.misses == [f"top-1 drops 22.2 points > 1.0 (95% CI {100 * lo:.1f} to {100 * hi:.1f}, paired on "
                             f"90 samples)"]
    assert lo > 0.01
    # The same drops judged at a 0-point limit: one sample is still no evidence of a drop.
    rec0 = recommend(r, {"max_accuracy_drop": 0.0})
    assert {c.key: c.meets for c in rec0.checks}["int8-static/onnx"]
    # The flags follow the same rule.
    assert any("inconclusive" in f for f in r.cell("int8-static", "onnx").flags)
    assert any("22.2 points on clean data > 1.0" in f for f in r.cell("distilled", "onnx").flags)
    assert r.cell("distilled", "onnx").derived["top1_mcnemar_p"] == pytest.approx(2 * 0.5 ** 20)


def test_a_drop_on_shifted_data_refuses_too():
    c = cell("int8-static", "onnx", 1.0, 1000, seed=2)
    c.accuracy.update(top1_shifted=0.6, paired_shifted={"n": N, "both_right": 54, "reference_only": 30,
                                                        "cell_only": 0, "both_wrong": 6})
    r = report_of(cell("fp32", "onnx", 2.0, 4000), c)
    r.task["reference_top1_shifted"] = 84 / N
    annotate(r, 0.01)
    chk = {k.key: k for k in recommend(r).checks}["int8-static/onnx"]
    assert chk.accuracy_refused and chk.misses[0].startswith("top-1 drops 33.3 points (on shifted data) > 1.0")


# ------------------------------------------------------------------------------------------- latency ties
def test_two_copies_are_tied_and_a_cell_twice_as_slow_is_not():
    drift = _drift(7)
    r = report_of(cell("fp32", "onnx", 2.0, 4000, seed=1, drift=drift),
                  cell("copy-a", "onnx", 1.0, 1000, seed=2, drift=drift, rss=61.0),
                  cell("copy-b", "onnx", 1.0, 1000, seed=3, drift=drift, rss=60.2))
    rec = recommend(r)
    # Same artifact size; copy-b wins on peak RSS (60 vs 61 MB), whichever of the two is faster by noise.
    assert rec.pick is not None and rec.pick.key == "copy-b/onnx"
    assert [m.key for m in rec.tied] == ["copy-a/onnx"] and rec.tie_broken_by == "lower peak RSS"
    checks = {c.key: c for c in rec.checks}
    lo, hi = checks["copy-a/onnx"].ratio_to_pick_ci
    assert lo <= 1.0 <= hi and hi - lo < 0.05  # paired blocks cancel the drift: a narrow interval
    lo, hi = checks["fp32/onnx"].ratio_to_pick_ci
    assert 1.9 < lo <= checks["fp32/onnx"].ratio_to_pick <= hi < 2.1 and not checks["fp32/onnx"].tied
    assert "tied with it on latency: copy-a/onnx" in rec.reason and "lower peak RSS (60 MB vs" in rec.reason
    assert rec.runner_up["cell"] == "copy-a/onnx" and rec.runner_up["told_apart"] is False


def test_a_tie_between_equally_fast_cells_goes_to_the_smaller_artifact():
    drift = _drift(7)
    a = cell("copy-a", "onnx", 1.0, 1000, seed=2, drift=drift)
    b = cell("copy-b", "onnx", 1.0, 1200, seed=3, drift=drift)
    slow = cell("slow", "onnx", 2.0, 900, seed=4, drift=drift)
    rec = recommend(report_of(cell("fp32", "onnx", 3.0, 4000), a, b, slow))
    assert rec.pick.key == "copy-a/onnx" and [m.key for m in rec.tied] == ["copy-b/onnx"]
    assert rec.tie_broken_by == "smaller artifact"


def test_without_blocks_ties_come_from_overlapping_p50_cis():
    r = report_of(cell("fp32", "onnx", 2.0, 4000, blocks=False),
                  cell("a", "onnx", 1.0, 1000, blocks=False, seed=2),
                  cell("b", "onnx", 1.05, 900, blocks=False, seed=3))  # p50 CIs are ±10%: they overlap
    rec = recommend(r)
    assert rec.pick.key == "b/onnx" and [m.key for m in rec.tied] == ["a/onnx"]  # b: tied, and smaller
    assert "interval from the p50 CIs" in rec.reason
    fp32 = {c.key: c for c in rec.checks}["fp32/onnx"]
    assert fp32.ratio_to_pick_ci[0] > 1.0 and not fp32.tied


def test_a_tie_margin_ties_a_cell_told_apart_by_less_than_it():
    drift = _drift(7)
    fast = cell("fast", "onnx", 1.0, 2000, seed=2, drift=drift)
    near = cell("near", "onnx", 1.03, 1000, seed=3, drift=drift)  # 3% slower, told apart, and smaller
    far = cell("far", "onnx", 1.2, 500, seed=4, drift=drift)  # 20% slower: beyond any margin here
    r = report_of(cell("fp32", "onnx", 3.0, 4000), fast, near, far)
    strict = recommend(r)
    assert strict.pick.key == "fast/onnx" and strict.tied == [] and strict.tie_margin == 0.0
    r.task["constraints"]["tie_margin"] = 0.05
    rec = recommend(r)
    assert rec.pick.key == "near/onnx" and [m.key for m in rec.tied] == ["fast/onnx"]
    assert rec.tie_broken_by == "smaller artifact" and rec.to_dict()["tie_margin"] == 0.05
    assert "tied with it on latency (tie margin 5%): fast/onnx" in rec.reason
    assert not {c.key: c for c in rec.checks}["far/onnx"].tied
    assert recommend(r, {"tie_margin": 0.0}).pick.key == "fast/onnx"  # an override wins over the run's


def test_a_cell_tied_only_through_a_noisy_fastest_but_told_apart_from_another_is_not_picked():
    drift = _drift(7)
    noisy = cell("noisy", "onnx", 0.95, 5000, seed=8, drift=drift, noise=0.4)  # the lowest p50, a wide interval
    assert min(noisy.block_p50_ms) > 0
    steady = cell("steady", "onnx", 1.0, 3000, seed=3, drift=drift)
    small = cell("small", "onnx", 1.2, 1000, seed=4, drift=drift)  # 20% slower than steady, and the smallest
    r = report_of(cell("fp32", "onnx", 3.0, 9000), noisy, steady, small)
    r.task["constraints"]["tie_margin"] = 0.03
    rec = recommend(r)
    checks = {c.key: c for c in rec.checks}
    assert min(rec.checks[1:], key=lambda c: c.p50_ms).key == "noisy/onnx"
    # small is tied with the noisy fastest cell (wide interval) but 1.2x steady's latency: steady wins.
    assert rec.pick.key == "steady/onnx", rec.reason
    assert checks["small/onnx"].ratio_to_pick_ci[0] > 1.03 and not checks["small/onnx"].tied
    assert "small/onnx would win the tie-break but is told apart as slower than steady/onnx" in rec.reason


def test_runner_up_told_apart_is_said():
    rec = recommend(report_of(cell("fp32", "onnx", 2.0, 4000, seed=1), cell("int8", "onnx", 1.0, 1000, seed=2)))
    assert rec.pick.key == "int8/onnx" and rec.tied == []
    assert "the runner-up, fp32/onnx, is told apart: p50 ratio to the pick 2.00, 95% CI" in rec.reason
    assert rec.runner_up["told_apart"] is True


# ------------------------------------------------------------------------------------------- files
def test_report_json_carries_the_decision_and_summary_json_the_decisions(tmp_path):
    drift = _drift(3)
    r = report_of(cell("fp32", "onnx", 2.0, 4000, seed=1, drift=drift),
                  cell("copy-a", "onnx", 1.0, 1000, seed=2, drift=drift, lost=1),
                  cell("copy-b", "onnx", 1.0, 1100, seed=3, drift=drift),
                  cell("bad", "onnx", 0.5, 500, seed=4, drift=drift, lost=20),
                  Measurement("broken", "tflite", "failed", error="delegate"))
    folder = write_target_report(r, tmp_path)
    write_summary([r], tmp_path)
    doc = json.loads((folder / "report.json").read_text())
    dec = doc["recommendation"]
    assert dec["pick"] == "copy-a/onnx" and dec["tied"] == ["copy-b/onnx"]
    assert dec["limits"] == {"max_accuracy_drop": 0.01} and dec["tie_break"] == TIE_BREAK
    assert dec["tie_broken_by"] == "smaller artifact" and "copy-a/onnx" in dec["reason"]
    assert {c["cell"]: c["meets"] for c in dec["cells"]} == {"fp32/onnx": True, "copy-a/onnx": True,
                                                             "copy-b/onnx": True, "bad/onnx": False,
                                                             "broken/tflite": False}
    by = {m["variant"]: m for m in doc["measurements"]}
    for name in ("fp32", "copy-a", "copy-b", "bad"):
        lat = by[name]["latency_ms"]
        lo, hi = lat["ratio_to_pick_ci"]
        assert lo <= lat["ratio_to_pick"] <= hi
    assert by["copy-a"]["latency_ms"]["ratio_to_pick"] == 1.0
    assert by["bad"]["latency_ms"]["ratio_to_pick_ci"][1] < 0.6
    assert by["fp32"]["latency_ms"]["ratio_to_pick_ci"][0] > 1.8
    assert by["broken"]["latency_ms"] is None
    acc = by["copy-a"]["accuracy"]
    assert acc["top1_ci"][0] < acc["top1"] < acc["top1_ci"][1]
    summary = json.loads((tmp_path / "summary.json").read_text())
    [t] = summary["targets"]
    assert t["name"] == "dev" and t["report"] == "dev/report.json"
    assert t["recommendation"]["pick"] == "copy-a/onnx" and t["recommendation"]["tied"] == ["copy-b/onnx"]
    assert t["pick"]["p50_ms"] == pytest.approx(r.cell("copy-a", "onnx").latency_ms["p50"])
    # The renderings show the intervals and the tie.
    md = (folder / "report.md").read_text()
    assert "| copy-b/onnx (tied) |" in md and "Tied with copy-a/onnx on latency" in md and "Tie rule:" in md
    assert "| fp32 | onnx | ok |" in md and "reference |" in md  # fp32's own speed-up is not a speed-up
    html = (folder / "report.html").read_text()
    assert "Tie rule:" in html and "vs pick (95% CI)" in html and 'class="ci-bar"' in html
    rows = {row["variant"]: row for row in csv.DictReader((tmp_path / "cells.csv").open())}
    assert float(rows["copy-b"]["ratio_to_pick_ci_lo"]) <= 1.0 <= float(rows["copy-b"]["ratio_to_pick_ci_hi"])
    assert rows["copy-b"]["tied_with_pick"] == "True" and rows["fp32"]["tied_with_pick"] == "False"
    assert float(rows["copy-a"]["top1_ci_lo"]) == pytest.approx(r.cell("copy-a", "onnx").accuracy["top1_ci"][0])
    assert "inconclusive" in rows["copy-a"]["notes"]


def test_a_speedup_whose_ci_contains_one_is_not_called_a_speedup(tmp_path):
    drift = _drift(5)
    r = report_of(cell("fp32", "onnx", 1.0, 4000, seed=1, drift=drift),
                  cell("fp16", "onnx", 1.0, 2000, seed=2, drift=drift),
                  cell("int8", "onnx", 0.5, 1000, seed=3, drift=drift))
    fp16, int8 = r.cell("fp16", "onnx"), r.cell("int8", "onnx")
    assert fp16.derived["speedup_tied"] is True and fp16.derived["speedup_basis"] == "paired blocks"
    lo, hi = fp16.derived["speedup_ci"]
    assert lo <= 1.0 <= hi
    assert int8.derived["speedup_tied"] is False and 1.9 < int8.derived["speedup_ci"][0] < int8.derived["speedup"]
    md = (write_target_report(r, tmp_path) / "report.md").read_text()
    fp16_row = next(line for line in md.splitlines() if line.startswith("| fp16 | onnx |"))
    int8_row = next(line for line in md.splitlines() if line.startswith("| int8 | onnx |"))
    assert "≈1 (tied," in fp16_row and f"{fp16.derived['speedup']:.2f}×" not in fp16_row
    assert f"{int8.derived['speedup']:.2f}× (" in int8_row


def test_rerender_adds_the_decision_to_an_older_report(tmp_path):
    r = report_of(cell("fp32", "onnx", 2.0, 4000), cell("int8", "onnx", 1.0, 1000, seed=2))
    folder = tmp_path / "dev"
    save_report(r, folder / "report.json")  # as written before decisions were stored
    assert load_report(folder / "report.json").recommendation is None
    written = rerender(tmp_path)
    assert folder / "report.json" in written and tmp_path / "summary.json" in written
    again = load_report(folder / "report.json")
    assert again.recommendation["pick"] == "int8/onnx"
    assert again.cell("fp32", "onnx").latency_ms["ratio_to_pick"] == pytest.approx(2.0, rel=0.05)
    assert rerender(folder) == [folder / "report.md", folder / "report.html"]  # nothing new to store
