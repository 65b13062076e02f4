"""The targets file (TOML) and the built-in target names `local-cpu` and `local-gpu`."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import targets  # noqa: F401  (importing registers the built-in kinds)
from harness.errors import ConfigError
from targets.base import TARGETS, Target

BUILTIN = {
    "local-cpu": {"kind": "local"},
    "local-gpu": {"kind": "gpu"},
}

def load_targets_file(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read `[targets.NAME]` tables; unknown keys and kinds are rejected by name."""
    specs: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN.items()}
    if path is None:
        return specs
    path = Path(path).expanduser()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"targets file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    extra = set(doc) - {"targets"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {sorted(extra)[0]!r} (expected [targets.NAME] tables)")
    tables = doc.get("targets") or {}
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: targets must be tables [targets.NAME], got {type(tables).__name__}")
    for name, spec in tables.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: targets.{name} must be a table")
        if len(name) > 100 or not name.strip():
            raise ConfigError(f"{path}: target name {name[:40]!r} must be 1 to 100 characters")
        kind = spec.get("kind", "ssh" if "host" in spec else "local")
        if not isinstance(kind, str) or kind not in TARGETS:
            raise ConfigError(f"{path}: targets.{name}.kind {kind!r} is not one of {', '.join(sorted(TARGETS))}")
        types = TARGETS[kind].setting_types()
        for key in spec:
            if key not in types:
                raise ConfigError(f"{path}: unknown key targets.{name}.{key} (allowed for kind {kind}: "
                                  f"{', '.join(sorted(types))})")
        for key, value in spec.items():
            want = types.get(key)
            if want and (not isinstance(value, want) or isinstance(value, bool) and bool not in want):
                what = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                        list: "a list", dict: "a table"}[want[-1]]
                raise ConfigError(f"{path}: targets.{name}.{key} must be {what}, got {value!r}")
        if "threads" in spec and (not isinstance(spec["threads"], int) or spec["threads"] < 1):
            raise ConfigError(f"{path}: targets.{name}.threads must be a positive integer")
        for key, value in spec.items():
            if key.endswith("_s") and isinstance(value, (int, float)) and not 0 < value < 1e9:
                raise ConfigError(f"{path}: targets.{name}.{key} must be a positive number of seconds, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{path}: targets.{name}.{key} must be a finite number, got {value!r}")
        if "port" in spec and not 0 < spec["port"] < 65536:
            raise ConfigError(f"{path}: targets.{name}.port must be in 1-65535, got {spec['port']!r}")
        for key in TARGETS[kind].REQUIRED:
            if not spec.get(key):
                raise ConfigError(f"{path}: targets.{name}.{key} is required for kind {kind}"
                                  + (" (an address or an alias from ~/.ssh/config)" if key == "host" else ""))
        specs[name] = {**spec, "kind": kind}
    return specs


def expand_replicas(names: list[str], specs: dict[str, dict[str, Any]]) -> list[str]:
    """Names to measure, with a table that stands for several boards (labgrid `count = N`) replaced by
    one name per board; their specs are added to `specs`."""
    out: list[str] = []
    for name in names:
        spec = specs.get(name)
        kind = TARGETS.get(str(spec.get("kind"))) if spec else None
        if spec is None or kind is None:
            out.append(name)  # make_target says what is wrong with it
            continue
        for member, member_spec in kind.replicas(name, spec).items():
            if member != name:
                specs[member] = member_spec
            out.append(member)
    return out


def make_target(name: str, specs: dict[str, dict[str, Any]], threads: int | None = None) -> Target:
    """Build the Target called `name`; an unknown name lists the known ones."""
    if name not in specs:
        raise ConfigError(f"unknown target {name!r} (known: {', '.join(sorted(specs))}; add it to a targets file)")
    spec = dict(specs[name])
    kind = spec.pop("kind")
    if kind not in TARGETS:
        raise ConfigError(f"target {name!r}: kind {kind!r} is not available in this installation")
    if threads is not None:
        spec["threads"] = threads
    return TARGETS[kind](name=name, **spec)
