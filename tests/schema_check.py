"""Checking written report.json / summary.json files against the JSON Schemas generated from the dataclasses.

The schemas come from harness.report.schema at check time (not from the committed files), so a field
added to a dataclass today is expected in the reports at once; tests/test_schema.py checks that the
committed copies are fresh.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from harness.report.schema import schemas

SCHEMA_OF = {"report.json": "report", "summary.json": "summary"}


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas()[name])


def _refuse(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (not JSON)")


def problems(path: Path, doc: Any = None) -> list[str]:
    """What is wrong with one report.json / summary.json (read from `path` unless `doc` is given), one line each."""
    if doc is None:
        try:
            doc = json.loads(Path(path).read_text(), parse_constant=_refuse)
        except (OSError, ValueError) as e:
            return [f"{path}: not readable as strict JSON ({e})"]
    errors = sorted(validator(SCHEMA_OF[Path(path).name]).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    return [f"{path}: at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors]


def written_reports(root: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Every report.json and summary.json under `root`, except under its top-level folders named in `skip`
    (pytest names a test's tmp_path after the test, cut to 30 characters, plus a number)."""
    out = []
    for name in SCHEMA_OF:
        for path in Path(root).rglob(name):
            top = path.relative_to(root).parts[0]
            if not any(top.startswith(s[:30]) for s in skip):
                out.append(path)
    return sorted(out)
