"""Second-pass hardening of the face and the report files: the last-resort handler, non-finite and over-long
config values, unwritable output folders, formula-safe cells.csv, passwords out of reprs, collision-free
folder names, and --resume that reuses a cell only when nothing that changes its figures changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny import TINY, tiny_config, to_toml

import harness.cli
from harness.api import run_config
from harness.cli import main
from harness.config.run import RunConfig
from harness.errors import ConfigError
from harness.measure.results import Measurement, TargetReport
from harness.report.cells import safe_name
from harness.report.cells_csv import cells_csv
from targets.ssh.connection import resolve


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_a_bug_is_one_line_with_a_log_for_users_and_raises_in_tests(tmp_path, monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(harness.cli, "cmd_report", broken)
    with pytest.raises(RuntimeError):  # tests (EDGE_HARNESS_DEBUG=1, set in conftest) see the bug
        main(["report", str(tmp_path)])
    monkeypatch.setenv("EDGE_HARNESS_DEBUG", "0")
    assert main(["report", str(tmp_path)]) == 3
    err = _one_line(capsys)
    assert err.startswith("edge-harness: internal error: RuntimeError: something unexpected (traceback in ")
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "broken" in log.read_text()
    log.unlink()


@pytest.mark.parametrize("section, key, value", [
    ("measure", "min_time_s", "nan"), ("measure", "target_rel_ci", "inf"), ("measure", "budget_s", "-inf"),
    ("report", "max_latency_ms", "nan"), ("finetune", "lr", "nan"),
])
def test_non_finite_numbers_in_a_config_are_refused(tmp_path, capsys, section, key, value):
    base = tiny_config()
    base.get(section, {}).pop(key, None)
    text = to_toml(base).replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n")
    if f"[{section}]" not in text:
        text += f"\n[{section}]\n{key} = {value}\n"
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "finite number" in _one_line(capsys)


def test_non_finite_recipe_setting_is_refused():
    with pytest.raises(ConfigError, match="finite number"):
        RunConfig.from_dict(tiny_config(variants=[{"name": "d", "recipe": "distill",
                                                   "settings": {"temperature": float("inf")}}]))


def test_over_long_names_are_refused_or_shortened(tmp_path, capsys):
    with pytest.raises(ConfigError, match="at most 100"):
        RunConfig.from_dict(tiny_config(variants=[{"name": "v" * 300}]))
    with pytest.raises(ConfigError, match="name must be a plain name"):
        RunConfig.from_dict(tiny_config(name="n" * 300))
    assert len(safe_name("t" * 1000)) <= 90


def test_unwritable_output_folder_is_one_line(tmp_path, cnn_onnx, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["bench", str(cnn_onnx), "--out", str(tmp_path / "file" / "o"), "-q"]) == 2
    assert "cannot write to the output folder" in _one_line(capsys)
    if os.geteuid() != 0:  # root writes through a read-only mode
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["bench", str(cnn_onnx), "--out", str(ro / "o"), "-q"]) == 2


def test_target_names_that_differ_only_in_odd_characters_get_their_own_folders():
    names = ["pi 4", "pi/4", "pi_4", "pi:4", "..pi_4", "pi\u00e94", "pi\u00e84"]
    folders = [safe_name(n) for n in names]
    assert len(set(folders)) == len(names), folders
    assert safe_name("pi_4") == "pi_4" and safe_name("local-cpu") == "local-cpu"
    assert all(set(f) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") for f in folders)


def test_device_strings_cannot_become_spreadsheet_formulas():
    evil = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1"]
    m = Measurement(variant=evil[0], format="onnx", status="failed", error=evil[1])
    rep = TargetReport(target={"name": evil[3], "kind": "ssh", "host": evil[2],
                               "device": {"cpu_model": evil[4], "os": evil[2]}}, measurements=[m])
    text = cells_csv([rep])
    for cell in [c for line in text.splitlines()[1:] for c in line.split(",")]:
        assert cell.strip('"')[:1] not in ("=", "+", "-", "@", "\t"), cell


def test_a_password_never_appears_in_a_repr(monkeypatch):
    monkeypatch.setenv("EH_TEST_PASSWORD", "hunter2-secret")
    ep = resolve("dev", "127.0.0.1", user="u", password_env="EH_TEST_PASSWORD", ssh_config=None)
    assert ep.password == "hunter2-secret" and "hunter2" not in repr(ep) and "hunter2" not in str(ep)


def test_resume_reuses_a_cell_only_when_its_fingerprint_matches(tmp_path):
    cfg = dict(TINY, measure=dict(TINY["measure"], threads=1))
    first = run_config(RunConfig.from_dict(cfg), out=tmp_path / "o", cache_dir=tmp_path / "c")
    (m1,) = first.reports["local-cpu"].measurements
    assert m1.ok and m1.settings["fingerprint"]
    same = run_config(RunConfig.from_dict(cfg), out=tmp_path / "o", cache_dir=tmp_path / "c", resume=True)
    assert same.reports["local-cpu"].measurements[0].raw_latencies_ms == m1.raw_latencies_ms  # reused
    for change in ({"threads": 2}, {"runs": 7}, {"mode": "adaptive"}):
        other = dict(cfg, measure=dict(cfg["measure"], **change))
        again = run_config(RunConfig.from_dict(other), out=tmp_path / "o", cache_dir=tmp_path / "c", resume=True)
        (m2,) = again.reports["local-cpu"].measurements
        assert m2.settings["fingerprint"] != m1.settings["fingerprint"], change
        assert m2.raw_latencies_ms != m1.raw_latencies_ms, change  # measured again
    saved = json.loads((tmp_path / "o" / "local-cpu" / "report.json").read_text())
    assert saved["measurements"][0]["settings"]["fingerprint"] == m2.settings["fingerprint"]
