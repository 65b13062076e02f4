"""The contracts as JSON Schemas: generated from the dataclasses, committed fresh, and met by what the harness
writes (a tiny real run here; conftest checks every report the session writes)."""

from __future__ import annotations

import copy
import json
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from jsonschema import Draft202012Validator
from schema_check import problems, validator
from tiny import MINIMAL_TOML, tiny_config

from harness.api import run_config
from harness.cli import main
from harness.config.run import ModelConfig, RunConfig, builtin_config
from harness.errors import ConfigError
from harness.measure.results import Measurement, TargetReport
from harness.report.schema import FILES, SchemaGenerator, render, schemas

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "reports" / "schema"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema-run") / "out"
    return run_config(RunConfig.from_dict(tiny_config(variants=[
        {"name": "fp32", "formats": ["onnx"]},
        {"name": "int8", "precision": "int8-dynamic", "formats": ["onnx"]}])),
        out=out, cache_dir=tmp_path_factory.mktemp("schema-cache"))


def test_committed_schemas_are_fresh():
    for name, schema in schemas().items():
        path = COMMITTED / FILES[name]
        assert path.is_file() and path.read_text() == render(schema), \
            f"{path} is stale: regenerate with `edge-harness schema --out reports/schema`"


def test_schema_command_writes_what_the_tests_compare(tmp_path, capsys):
    assert main(["schema", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == sorted(FILES.values())
    for name, schema in schemas().items():
        text = (tmp_path / FILES[name]).read_text()
        assert text == render(schema)
        Draft202012Validator.check_schema(json.loads(text))


def test_every_dataclass_field_is_in_the_schemas():
    report = schemas()["report"]
    assert list(report["properties"]) == [f.name for f in fields(TargetReport)]
    assert list(report["$defs"]["Measurement"]["properties"]) == [f.name for f in fields(Measurement)]
    assert report["$defs"]["Measurement"]["properties"]["status"]["enum"] == ["ok", "failed", "skipped"]
    config = schemas()["config"]
    assert list(config["properties"]) == [f.name for f in fields(RunConfig)]
    hints = typing.get_type_hints(RunConfig)
    nested = [typing.get_args(hints[f.name])[0] if typing.get_origin(hints[f.name]) is list else hints[f.name]
              for f in fields(RunConfig)]
    for cls in [c for c in nested if is_dataclass(c)]:
        assert list(config["$defs"][cls.__name__]["properties"]) == [g.name for g in fields(cls)], cls
    assert config["$defs"]["ModelConfig"]["properties"]["init"]["default"] == ModelConfig().init


@dataclass
class Inner:
    """A nested table."""

    x: int


@dataclass
class Sample:
    name: str
    mode: Literal["a", "b"] = "a"
    ratio: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    pairs: list[tuple[float, float]] = field(default_factory=list)
    inner: Inner | None = None
    tags: list[str | None] = field(default_factory=list)
    anything: Any = None


def test_the_generator_types_each_kind_of_field():
    gen = SchemaGenerator(closed=True, defaults=True)
    doc = gen.document(Sample, "sample", "a test")
    v = Draft202012Validator(doc)
    ok = {"name": "n", "mode": "b", "ratio": 2, "counts": {"a": 1}, "pairs": [[1.0, 2.5]], "inner": {"x": 3},
          "tags": ["t", None], "anything": [1, "x"]}
    assert not list(v.iter_errors(ok)) and v.is_valid({"name": "n"})
    for key, value in [("mode", "c"), ("ratio", "1"), ("counts", {"a": 1.5}), ("pairs", [[1.0]]),
                       ("inner", {"x": 1, "y": 2}), ("inner", {}), ("tags", [3]), ("name", None), ("extra", 1)]:
        assert not v.is_valid({**ok, key: value}), (key, value)
    assert not v.is_valid({"mode": "a"})  # name has no default: required
    assert doc["properties"]["mode"]["default"] == "a" and doc["$defs"]["Inner"]["description"] == "A nested table."

    @dataclass
    class Odd:
        blob: bytes

    with pytest.raises(TypeError, match="Odd.blob"):
        SchemaGenerator().document(Odd, "odd", "")


def test_a_tiny_run_writes_reports_that_meet_the_schemas(tiny_run):
    folder = tiny_run.report_dirs["local-cpu"]
    assert problems(folder / "report.json") == []
    assert problems(tiny_run.out / "summary.json") == []
    doc = json.loads((folder / "report.json").read_text())
    assert [m["status"] for m in doc["measurements"]] == ["ok", "ok"]
    assert doc["measurements"][0]["latency_ms"]["p50"] > 0 and doc["recommendation"]["pick"]


@pytest.mark.parametrize("change", [
    lambda d: d.update(schema_version=2),
    lambda d: d.update(surprise=1),  # a key outside TargetReport: the contract drifted
    lambda d: d.pop("target"),
    lambda d: d["measurements"][0].update(status="fine"),
    lambda d: d["measurements"][0].update(op_profile_typo={}),
    lambda d: d["measurements"][0]["latency_ms"].update(p50="1.2"),
    lambda d: d["measurements"][0]["artifact"].update(size_bytes="big"),
    lambda d: d["measurements"][0].update(raw_latencies_ms=[1.0, "x"]),
    lambda d: d["measurements"][0].update(flags="one"),
])
def test_the_report_schema_refuses_drift(tiny_run, change):
    doc = json.loads((tiny_run.report_dirs["local-cpu"] / "report.json").read_text())
    change(doc)
    assert not validator("report").is_valid(doc)


def test_known_keys_may_be_null_and_others_may_be_added(tiny_run):
    doc = json.loads((tiny_run.report_dirs["local-cpu"] / "report.json").read_text())
    lat = doc["measurements"][0]["latency_ms"]
    lat.update(p99=None, p50_ci=None, source="benchmark_model", ratio_to_pick=1.0)
    doc["measurements"][1].update(status="failed", error="one line", latency_ms=None, artifact=None)
    assert problems(Path("report.json"), doc) == []


def _config_errors(doc: dict[str, Any]) -> list[str]:
    return [e.message for e in validator("config").iter_errors(doc)]


def test_configs_that_load_meet_the_config_schema():
    docs = [tiny_config(), tomllib.loads(MINIMAL_TOML), tomllib.loads(builtin_config("demo").read_text()),
            tiny_config(variants=[{"name": "p", "recipe": "prune", "settings": {"sparsity": 0.3, "seed": 1}},
                                  {"name": "d", "recipe": "distill", "settings": {"epochs": 2}}])]
    for doc in docs:
        RunConfig.from_dict(copy.deepcopy(doc))
        assert _config_errors(doc) == []


@pytest.mark.parametrize("doc", [
    tiny_config(surprise=1),
    tiny_config(measure={"runs": "many"}),
    tiny_config(measure={"rnus": 5}),
    tiny_config(data={"source": "tapes"}),
    tiny_config(variants=[{"name": "x", "recipe": "magic"}]),
    tiny_config(variants=[{"name": "x", "precision": "int4"}]),
    tiny_config(variants=[{"name": "x", "formats": ["coreml"]}]),
    tiny_config(variants=[{"name": "x", "recipe": "prune", "settings": {"sparsity": 1.5}}]),
    tiny_config(variants=[{"name": "x", "recipe": "prune", "settings": {"sparsty": 0.5}}]),
    tiny_config(variants=[{"name": "x", "settings": {"sparsity": 0.5}}]),  # the reference takes no settings
    tiny_config(variants=[{"recipe": "prune"}]),
    tiny_config(variants=[]),
])
def test_configs_the_loader_refuses_the_schema_refuses_too(doc):
    with pytest.raises(ConfigError):
        RunConfig.from_dict(copy.deepcopy(doc))
    assert _config_errors(doc), doc


def test_schema_files_are_draft_2020_12():
    for name in FILES.values():
        doc = json.loads((COMMITTED / name).read_text())
        assert doc["$schema"].endswith("2020-12/schema")
        jsonschema.validators.validator_for(doc).check_schema(doc)
