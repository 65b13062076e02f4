"""The one tiny run config the tests share: a small CNN on 32 px texture patches, few samples, few runs.

`tiny_config(section=overrides)` merges per section, so a test states only what it changes;
`to_toml` writes it as a config file for the CLI; `cli` runs the CLI and `one_line_error` checks
that a mistake gave one error line.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "model": {"builtin": "tiny_cnn", "pretrained": False},
    "data": {"source": "textures", "patch": 32, "per_class": 8, "eval_samples": 12},
    "finetune": {"epochs": 0, "unfreeze_epochs": 0, "baselines": False},
    "measure": {"runs": 5, "warmup": 1, "min_time_s": 0.0, "parity_samples": 8, "strategy": "sequential"},
    "variants": [{"name": "fp32", "formats": ["onnx"]}],
}

# The smallest config that loads: for tests of config errors.
MINIMAL_TOML = '''name = "t"
[model]
builtin = "tiny_cnn"
[[variants]]
name = "fp32"
'''


def tiny_config(**sections: Any) -> dict[str, Any]:
    """TINY with each given section merged in (tables) or replaced (name, variants, lists)."""
    cfg = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def to_toml(cfg: dict[str, Any]) -> str:
    """A config dict as TOML (scalars, lists and one level of tables; variants as [[variants]])."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.items() if not isinstance(v, (dict, list)) or
             (isinstance(v, list) and k != "variants")]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
    for var in cfg.get("variants", []):
        lines.append("[[variants]]")
        lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in var.items() if not isinstance(vv, dict)]
        for kk, vv in var.items():
            if isinstance(vv, dict):
                lines.append(f"[variants.{kk}]")
                lines += [f"{a} = {json.dumps(b)}" for a, b in vv.items()]
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess:
    """`edge-harness ARGS` in a subprocess (this checkout's CLI), output captured."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The one `edge-harness: error:` line a user mistake must give (exit 2); returns it."""
    # Another run holding this machine makes ours wait first, and say so: not part of the error.
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("edge-harness: waiting for ")]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("edge-harness: error: "), out.stderr
    return lines[0]
