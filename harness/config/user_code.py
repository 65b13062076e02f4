"""A user's code named in a config as 'package.module:function' (model.factory, report.metric)."""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import ConfigError


def import_callable(spec: str, setting: str) -> Any:
    """Resolve 'package.module:function' given as the config's `setting`; failures are one-line config errors."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # a user's module may raise anything on import
        hint = " (is its folder on PYTHONPATH?)" if isinstance(e, ModuleNotFoundError) and e.name == mod_name else ""
        raise ConfigError(f"{setting}: importing {mod_name!r} failed: {type(e).__name__}: {e}{hint}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{setting}: {mod_name!r} has no function {fn_name!r}")
    return fn
