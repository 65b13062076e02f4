"""Config files: every key and value checked, one-line errors that name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny import MINIMAL_TOML

from harness.config.run import RunConfig, load_config
from harness.config.targets_file import load_targets_file, make_target
from harness.errors import ConfigError

GOOD = MINIMAL_TOML


def _write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_demo_configs_load():
    from harness.api import demo_config

    full, quick = demo_config(), demo_config(quick=True)
    assert len(full.variants) >= 7 and {"onnx", "tflite", "torch"} <= {f for v in full.variants for f in v.formats}
    assert quick.data.per_class is not None


def test_round_trip_to_dict(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("text, needle", [
    ("colour = 'red'\n" + GOOD, "unknown key 'colour'"),
    (GOOD + "colour = 'red'\n", "unknown key 'variants[0].colour'"),
    (GOOD.replace('builtin = "tiny_cnn"', 'builtin = "tiny_cnn"\nweights = 3'), "unknown key 'model.weights'"),
    (GOOD + "[measure]\nruns = 'many'\n", "measure.runs must be int"),
    (GOOD + "[measure]\nruns = 0\n", "measure.runs must be >= 1"),
    (GOOD + "[[variants]]\nname = 'x'\nrecipe = 'magic'\n", "recipe = 'magic' is not one of"),
    (GOOD + "[[variants]]\nname = 'x'\nprecision = 'int4'\n", "precision = 'int4'"),
    (GOOD + "[[variants]]\nname = 'x'\nformats = ['coreml']\n", "formats = 'coreml'"),
    (GOOD + "[[variants]]\nname = 'fp32'\n", "duplicate variant name"),
    (GOOD + "[[variants]]\nname = 'x'\nprecision = 'fp16'\nformats = ['torch']\n", "torch eager baseline"),
    (GOOD.replace('builtin = "tiny_cnn"', 'builtin = "tiny_cnn"\ncheckpoint = "missing.pt"'),
     "model.checkpoint file not found"),
    (GOOD.replace('builtin = "tiny_cnn"', 'builtin = "tiny_cnn"\nfactory = "mymod:build"'),
     "exactly one of model.builtin"),
    (GOOD + "[data]\nsource = 'npz'\n", "data.path is required"),
    (GOOD + "[report]\nmax_accuracy_drop = 5\n", "fraction"),
    ("name = [", "not valid TOML"),
])
def test_bad_configs_name_the_problem(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_run_with_unknown_key_is_one_line(tmp_path):
    p = _write(tmp_path, "bogus = 1\n" + GOOD)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(p), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown key 'bogus'" in out.stderr


def test_cli_run_with_missing_checkpoint_is_one_line(tmp_path):
    p = _write(tmp_path, GOOD.replace('builtin = "tiny_cnn"', 'builtin = "tiny_cnn"\ncheckpoint = "gone.pt"'))
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(p)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "gone.pt" in out.stderr


def test_targets_file_checks_keys_and_names(tmp_path):
    p = _write(tmp_path, '[targets.pi]\nkind = "ssh"\nhost = "h"\nspeed = 3\n', "t.toml")
    with pytest.raises(ConfigError, match="unknown key targets.pi.speed"):
        load_targets_file(p)
    specs = load_targets_file(_write(tmp_path, '[targets.box]\nkind = "local"\nthreads = 1\n', "t2.toml"))
    assert "local-cpu" in specs and specs["box"]["threads"] == 1
    with pytest.raises(ConfigError, match="unknown target 'nothere'"):
        make_target("nothere", specs)
    t = make_target("box", specs)
    try:
        assert t.threads == 1 and t.kind == "local"
    finally:
        t.close()
