"""JSON Schemas of the file contracts, generated from the dataclasses: report.json, summary.json, the run config.

The generator walks each dataclass's fields and type hints (str, int, float, bool, None, unions, Literal,
list[...], tuple[...], dict[str, ...], nested dataclasses), so a field added to a dataclass is in the
next generation; a hint it cannot express raises, naming the field. `edge-harness schema --out DIR` (or
`python -m harness.report.schema DIR`) writes the files; reports/schema/ holds the committed copies.
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

from exporters import EXPORTERS, PRECISIONS, Artifact
from harness.config.recipes import RECIPES
from harness.config.run import DATA_SOURCES, DataConfig, RunConfig, VariantConfig
from harness.measure.results import SCHEMA_VERSION, Measurement, TargetReport
from harness.measure.stats import LatencyStats

DIALECT = "https://json-schema.org/draft/2020-12/schema"
GENERATED = "Generated from the dataclasses by `edge-harness schema` (harness/report/schema.py); do not edit."
FILES = {"report": "report.schema.json", "summary": "summary.schema.json", "config": "config.schema.json"}

# Free-form dict fields whose known keys a dataclass types: the dict is that dataclass's to_dict(). Known keys
# are optional and may be null (a figure that could not be measured), other keys are allowed (later stages
# add some, e.g. latency_ms.ratio_to_pick).
REPORT_SHAPES: dict[tuple[type, str], type] = {
    (Measurement, "artifact"): Artifact,
    (Measurement, "latency_ms"): LatencyStats,
}
# Strings with a fixed set of values (Measurement.status is a str whose values results.py checks).
REPORT_CHOICES: dict[tuple[type, str], Sequence[str]] = {(Measurement, "status"): ("ok", "failed", "skipped")}
# Config strings that must name an entry of a registry (for a list: each item).
CONFIG_CHOICES: dict[tuple[type, str], Sequence[str]] = {
    (VariantConfig, "recipe"): tuple(RECIPES),
    (VariantConfig, "precision"): tuple(PRECISIONS),
    (VariantConfig, "formats"): tuple(EXPORTERS),
    (DataConfig, "source"): tuple(DATA_SOURCES),
}
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


class SchemaGenerator:
    """Turns dataclasses into JSON Schema objects, one `$defs` entry per dataclass.

    `closed`: dataclass objects refuse keys that are not fields (configs refuse them; reports are
    asdict() of the dataclass, so any other key is drift). `defaults`: record each field's default.
    """

    def __init__(self, closed: bool = True, defaults: bool = False,
                 shapes: dict[tuple[type, str], type] | None = None,
                 choices: dict[tuple[type, str], Sequence[str]] | None = None) -> None:
        self.closed, self.defaults = closed, defaults
        self.shapes, self.choices = shapes or {}, choices or {}
        self.defs: dict[str, dict[str, Any]] = {}

    def of(self, hint: Any, where: str) -> dict[str, Any]:
        """The schema of one type hint; `where` names the field in the error for a hint it cannot express."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is Any or hint is object:
            return {}
        if hint in _JSON_TYPES or hint is None:
            return {"type": _JSON_TYPES[type(None) if hint is None else hint]}
        if origin in (typing.Union, types.UnionType):
            return _any_of([self.of(a, where) for a in args])
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (list, set, frozenset, Sequence) or origin is tuple and len(args) == 2 and args[1] is ...:
            return {"type": "array", "items": self.of(args[0], where)} if args else {"type": "array"}
        if origin is tuple:
            return {"type": "array", "prefixItems": [self.of(a, where) for a in args], "minItems": len(args),
                    "maxItems": len(args)}
        if origin is dict or hint is dict:
            if args and args[0] is not str:
                raise TypeError(f"{where}: JSON object keys are strings, not {args[0]!r}")
            return {"type": "object", **({"additionalProperties": self.of(args[1], where)}
                                         if args and args[1] is not Any else {})}
        if hint is list:
            return {"type": "array"}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return {"enum": [m.value for m in hint]}
        if isinstance(hint, type) and is_dataclass(hint):
            return self.ref(hint)
        raise TypeError(f"{where}: no JSON Schema for the type {hint!r}")

    def ref(self, cls: type) -> dict[str, Any]:
        """A `$ref` to the dataclass's entry in `$defs`, made on first use."""
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: a dataclass that refers to itself ends here
            self.defs[name] = self.dataclass(cls)
        return {"$ref": f"#/$defs/{name}"}

    def dataclass(self, cls: type) -> dict[str, Any]:
        """A dataclass as an object: its fields typed; those without a default are required."""
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        for f in fields(cls):
            where = f"{cls.__name__}.{f.name}"
            s = self.of(hints[f.name], where)
            if (cls, f.name) in self.shapes:
                s = self.shape(s, self.shapes[(cls, f.name)])
            if (cls, f.name) in self.choices:
                s = _restrict(s, list(self.choices[(cls, f.name)]), where)
            if self.defaults and (default := _default(f)) is not MISSING:
                s = {**s, "default": default}
            props[f.name] = s
        out: dict[str, Any] = {"type": "object", "title": cls.__name__}
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(f"{cls.__name__}("):  # not dataclass's generated signature
            out["description"] = doc.split("\n\n")[0].replace("\n", " ")
        out["properties"] = props
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        if required:
            out["required"] = required
        out["additionalProperties"] = not self.closed
        return out

    def shape(self, field_schema: dict[str, Any], cls: type) -> dict[str, Any]:
        """A free-form dict field whose known keys `cls` types: open, known keys optional and nullable."""
        name = f"{cls.__name__}Keys"
        if name not in self.defs:
            hints = typing.get_type_hints(cls)
            doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            self.defs[name] = {"type": "object", "title": name,
                               "description": f"The keys of {cls.__name__}: {doc}".strip(),
                               "properties": {f.name: _any_of([self.of(hints[f.name], f"{cls.__name__}.{f.name}"),
                                                               {"type": "null"}]) for f in fields(cls)},
                               "additionalProperties": True}
        ref = {"$ref": f"#/$defs/{name}"}
        nullable = "null" in _types(field_schema)
        return _any_of([ref, {"type": "null"}]) if nullable else ref

    def document(self, root: type, title: str, description: str) -> dict[str, Any]:
        """A whole schema file: the root dataclass inline, every other one under `$defs`."""
        body = self.dataclass(root)
        return {"$schema": DIALECT, "$comment": GENERATED, "title": title, "description": description,
                **{k: v for k, v in body.items() if k not in ("title", "description")}, "$defs": dict(self.defs)}


def report_schema() -> dict[str, Any]:
    """report.json: TargetReport.to_dict(), one Measurement per cell."""
    doc = SchemaGenerator(closed=True, shapes=REPORT_SHAPES, choices=REPORT_CHOICES).document(
        TargetReport, "report", "OUT/<target>/report.json: everything measured on one target (edge-harness).")
    doc["properties"]["schema_version"] = {"const": SCHEMA_VERSION}  # readers refuse any other
    doc["required"] = sorted(set(doc.get("required", [])) | {"schema_version", "target", "measurements"})
    return doc


def summary_schema() -> dict[str, Any]:
    """summary.json: the decision per target. It is built as a dict (report/files.py), not from a dataclass,
    so only its envelope is stated here; the decision inside is the report's free-form `recommendation`."""
    text, opt_text = {"type": "string"}, {"type": ["string", "null"]}
    target = {"type": "object", "properties": {
        "name": text, "kind": opt_text, "host": opt_text, "cpu_model": opt_text, "report": text,
        "recommendation": {"type": "object"}, "pick": {"type": ["object", "null"]}},
        "required": ["name", "report", "recommendation", "pick"]}
    return {"$schema": DIALECT, "$comment": GENERATED, "title": "summary",
            "description": "OUT/summary.json: the decision per target, for a CI job to gate on.",
            "type": "object", "properties": {"schema_version": {"const": SCHEMA_VERSION},
                                             "targets": {"type": "array", "items": target}},
            "required": ["schema_version", "targets"]}


def config_schema() -> dict[str, Any]:
    """A run config as TOML loads it: RunConfig's tables, unknown keys refused, defaults recorded."""
    gen = SchemaGenerator(closed=True, defaults=True, choices=CONFIG_CHOICES)
    doc = gen.document(RunConfig, "config", "A run config (edge-harness run CONFIG.toml), as TOML loads it.")
    doc["$defs"][VariantConfig.__name__]["allOf"] = _recipe_settings()
    doc["required"] = sorted(set(doc.get("required", [])) | {"variants"})  # validate(): "no [[variants]] given"
    doc["properties"]["variants"]["minItems"] = 1
    return doc


def _recipe_settings() -> list[dict[str, Any]]:
    """Per recipe, the settings it takes, typed by their defaults (RecipeSpec), in the variant's `settings`."""
    default = next(f.default for f in fields(VariantConfig) if f.name == "recipe")
    rules = []
    for name, spec in RECIPES.items():
        props = {}
        for key, value in spec.defaults.items():
            s = {"type": _JSON_TYPES[type(value)]}
            if key in spec.ranges:
                lo, hi = spec.ranges[key]
                s.update(minimum=lo, exclusiveMaximum=hi)
            props[key] = s
        when: dict[str, Any] = {"properties": {"recipe": {"const": name}}}
        if name != default:
            when["required"] = ["recipe"]
        rules.append({"if": when, "then": {"properties": {"settings": {
            "type": "object", "properties": props, "additionalProperties": False}}}})
    return rules


def schemas() -> dict[str, dict[str, Any]]:
    """Every contract's schema by name (report, summary, config)."""
    return {"report": report_schema(), "summary": summary_schema(), "config": config_schema()}


def render(schema: dict[str, Any]) -> str:
    """The file text of a schema: stable key order and indentation, so a regenerated file diffs cleanly."""
    return json.dumps(schema, indent=2, allow_nan=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema into `folder` (made if missing); returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / FILES[name]
        path.write_text(render(schema))
        written.append(path)
    return written


def _types(s: dict[str, Any]) -> set[str]:
    t = s.get("type")
    out = {t} if isinstance(t, str) else set(t or ())
    for part in s.get("anyOf", []):
        out |= _types(part)
    return out


def _any_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A union: a list of types where every part is a bare type, else anyOf (duplicates dropped)."""
    unique: list[dict[str, Any]] = []
    for p in parts:
        for q in p.get("anyOf", [p]) if set(p) == {"anyOf"} else [p]:
            if q not in unique:
                unique.append(q)
    if any(q == {} for q in unique):
        return {}
    if all(set(q) == {"type"} for q in unique):
        names = list(dict.fromkeys(t for q in unique for t in ([q["type"]] if isinstance(q["type"], str)
                                                                 else q["type"])))
        if "integer" in names and "number" in names:
            names.remove("integer")
        return {"type": names[0] if len(names) == 1 else names}
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def _restrict(s: dict[str, Any], allowed: list[str], where: str) -> dict[str, Any]:
    """A string (or each item of a list of strings) limited to the registry's names."""
    if s.get("type") == "array":
        return {**s, "items": {**s.get("items", {}), "enum": allowed}}
    if "string" in _types(s):
        return {**s, "enum": allowed + ([None] if "null" in _types(s) else [])}
    raise TypeError(f"{where}: a registry choice needs a string field")


def _default(f: Any) -> Any:
    """A field's default as JSON, or MISSING when it has none or it is not plain data (a nested table)."""
    value = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                         else MISSING)
    if value is MISSING or is_dataclass(value):
        return MISSING
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return MISSING
    return value


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/schema")):
        print(written_path)
