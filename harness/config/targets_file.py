"""The targets file (TOML) and the built-in target names `local-cpu` and `local-gpu`."""

from __future__ import annotations

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
    for name, spec in (doc.get("targets") or {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: targets.{name} must be a table")
        kind = spec.get("kind", "ssh" if "host" in spec else "local")
        if kind not in TARGETS:
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
                        list: "a list"}[want[-1]]
                raise ConfigError(f"{path}: targets.{name}.{key} must be {what}, got {value!r}")
        if "threads" in spec and (not isinstance(spec["threads"], int) or spec["threads"] < 1):
            raise ConfigError(f"{path}: targets.{name}.threads must be a positive integer")
        for key in TARGETS[kind].REQUIRED:
            if not spec.get(key):
                raise ConfigError(f"{path}: targets.{name}.{key} is required for kind {kind}"
                                  + (" (an address or an alias from ~/.ssh/config)" if key == "host" else ""))
        specs[name] = {**spec, "kind": kind}
    return specs


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
