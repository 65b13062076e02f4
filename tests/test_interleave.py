"""Interleaved, raced measurement with resident runners: real onnxruntime and torch models, real processes."""

from __future__ import annotations

import pytest
from resident_check import idle_while_other_works
from tiny import tiny_config

from harness.api import run_config
from harness.config.run import RunConfig
from harness.measure.stats import paired_ratio
from targets import Job, LocalTarget


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """fp32 in ONNX and in torch eager (about 10x slower here), plus an identical copy of the ONNX cell."""
    tmp = tmp_path_factory.mktemp("raced")
    cfg = RunConfig.from_dict(tiny_config(
        name="raced", measure={"strategy": "interleaved", "min_rounds": 4, "max_rounds": 12},
        variants=[{"name": "fp32", "formats": ["onnx", "torch"]}, {"name": "copy", "formats": ["onnx"]}]))
    return run_config(cfg, out=tmp / "out", cache_dir=tmp / "cache").reports["local-cpu"]


def test_racing_stops_a_clearly_slower_cell_early(raced):
    cells = {m.key: m for m in raced.measurements}
    assert all(m.ok for m in cells.values()), [(m.key, m.error) for m in cells.values()]
    slow = cells["fp32/torch"]
    fast = max(cells["fp32/onnx"], cells["copy/onnx"], key=lambda m: m.settings["rounds_timed"])
    # Racing may stop a cell only from round 8 on (min_rounds 4 is raised to it), and this one stops then.
    assert slow.settings["stopped"].startswith("stopped after 8 rounds: slower than")
    assert slow.settings["rounds_timed"] == 8 <= fast.settings["rounds_timed"] == raced.measurement["rounds"]
    assert slow.block_p50_ms[8:] == [None] * (len(slow.block_p50_ms) - 8)
    assert slow.latency_ms["p50"] > 2 * fast.latency_ms["p50"]
    # The two copies race on until they are told apart, shown within the tie margin of each other
    # ("equivalent": more rounds cannot change the pick), or the rounds or the budget run out.
    assert raced.measurement["strategy"] == "interleaved" and raced.measurement["stopped_by"] in (
        "separated", "equivalent", "max_rounds", "budget")
    if raced.measurement["rounds"] == 8:
        assert raced.measurement["stopped_by"] in ("separated", "equivalent")


def test_identical_copies_pair_up_near_one(raced):
    cells = {m.key: m for m in raced.measurements}
    pr = paired_ratio(cells["copy/onnx"].block_p50_ms, cells["fp32/onnx"].block_p50_ms)
    assert pr is not None and pr["n"] == raced.measurement["rounds"]
    lo, hi = pr["ci"]
    assert lo <= pr["ratio"] <= hi and lo < 1.25 and hi > 0.8  # the same model: the interval reaches 1
    for m in cells.values():
        assert m.settings["runs_per_block"] >= 10 and m.settings["runs"] == sum(
            1 for b in m.block_p50_ms if b is not None) * m.settings["runs_per_block"]
        assert m.accuracy and m.accuracy["n"] == min(12, raced.task["n_test"]) and m.cold_start_ms["load"] > 0


def test_an_idle_resident_runner_uses_no_cpu_while_another_is_timed(cnn_onnx, tmp_path):
    import numpy as np

    np.savez(tmp_path / "x.npz", input=np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32"))
    target = LocalTarget("idle-check", threads=2)
    job = dict(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "x.npz"), runs=0, warmup=0)
    try:
        active, idle = target.open_resident(Job(**job)), target.open_resident(Job(**job))
        assert active.initial.ok and idle.initial.ok
        busy, used, wall = idle_while_other_works(active, idle, 300)
        assert busy > 0.25 * wall  # the active one really worked (a quarter core at least on a loaded machine)
        assert used / wall < 0.02, f"idle runner used {100 * used / wall:.1f}% of a core"
    finally:
        target.close()


def test_a_resident_runner_that_dies_fails_its_block_in_one_line(cnn_onnx, tmp_path):
    import os
    import signal

    import numpy as np

    from harness.errors import TargetError

    np.savez(tmp_path / "x.npz", input=np.zeros((1, 3, 16, 16), "float32"))
    target = LocalTarget("dies")
    try:
        r = target.open_resident(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "x.npz"),
                                     runs=0, warmup=0))
        os.kill(r.proc.pid, signal.SIGKILL)
        r.proc.wait()
        with pytest.raises(TargetError) as e:
            r.block(10)
        assert "\n" not in str(e.value) and "exited" in str(e.value)
    finally:
        target.close()


def test_a_model_that_fails_to_load_gives_a_failed_start_not_an_exception(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    target = LocalTarget("bad-model")
    try:
        r = target.open_resident(Job(artifact=str(bad), format="onnx", runs=0, warmup=0))
        assert not r.initial.ok and "\n" not in r.initial.error and "bad.onnx" in r.initial.error
        assert r.proc.poll() is not None  # the process is gone, and closing again is harmless
        r.close()
    finally:
        target.close()


def test_a_deferred_evaluation_pass_runs_on_command_and_the_runner_times_on(cnn_onnx, tmp_path):
    """Resident runners load and run their first inference alone, one after another, and evaluate later, on the
    host's command (several at once): the outputs then equal a one-shot job's, and blocks still time."""
    import numpy as np

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "x.npz", input=rng.standard_normal((1, 3, 16, 16)).astype("float32"))
    np.savez(tmp_path / "e.npz", input=rng.standard_normal((20, 3, 16, 16)).astype("float32"))
    target = LocalTarget("deferred", threads=1)
    job = dict(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "x.npz"),
               eval_inputs=str(tmp_path / "e.npz"), eval_batch=8, runs=0, warmup=0)
    try:
        r = target.open_resident(Job(**job, defer_eval=True))
        assert r.initial.ok and r.initial.outputs is None and "eval_n" not in r.initial.data
        raw = r.evaluate(60)
        assert raw.ok and raw.data["eval_n"] == 20 and raw.data["eval_batch"] == 8
        assert raw.data["memory_mb"]["peak_rss_with_eval"] >= raw.data["memory_mb"]["peak_rss"]
        once = target.run(Job(**job))
        np.testing.assert_allclose(raw.outputs[0], once.outputs[0], rtol=1e-6, atol=1e-6)
        assert len(r.block(5)) == 5
    finally:
        target.close()


def test_an_evaluation_pass_that_fails_is_a_failed_result_not_a_dead_runner(cnn_onnx, tmp_path):
    import numpy as np

    np.savez(tmp_path / "x.npz", input=np.zeros((1, 3, 16, 16), "float32"))
    np.savez(tmp_path / "e.npz", input=np.zeros((4, 5, 7), "float32"))  # not the model's shape
    target = LocalTarget("deferred-bad", threads=1)
    try:
        r = target.open_resident(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "x.npz"),
                                     eval_inputs=str(tmp_path / "e.npz"), runs=0, warmup=0, defer_eval=True))
        raw = r.evaluate(60)
        assert not raw.ok and "\n" not in raw.error and "evaluation" in raw.error
        assert len(r.block(3)) == 3  # the runner is still there
    finally:
        target.close()


@pytest.mark.parametrize("cores, threads, want", [(2, 2, 1), (4, 2, 2), (8, 1, 4), (1, None, 1), (None, 2, 1)])
def test_evaluation_passes_run_side_by_side_only_where_the_cores_hold_their_threads(cores, threads, want):
    from types import SimpleNamespace

    from harness.measure.interleave import eval_parallel

    runner = SimpleNamespace(initial=SimpleNamespace(data={"device": {"cores": cores}}))
    opened = [(None, SimpleNamespace(threads=threads), runner) for _ in range(3)]
    assert eval_parallel(opened) == want
