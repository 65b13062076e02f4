"""A runner's output folder (result.json, outputs.npz) read back into a RawResult, whatever state it is in.

Local targets read the folder the runner wrote; SSH targets read the copy fetched from the device.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np

from targets.base import RawResult


def describe_exit(code: int) -> str:
    """A readable reason for a runner's exit status (signals included)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"runner died with {name}{hint}"
    return f"runner exited with status {code}"


def read_result(out_dir: Path, code: int | None, log: str) -> RawResult:
    """Turn a runner's output folder into a RawResult, whatever state it is in."""
    result_file = out_dir / "result.json"
    if not result_file.is_file():
        reason = describe_exit(code) if code is not None else "runner wrote no result"
        tail = log.strip().splitlines()[-1:] if log.strip() else []
        if tail:
            reason += f": {tail[0][:300]}"
            # CPython's compile() and friends return NULL without an exception when an allocation fails
            if any(sign in tail[0] for sign in ("MemoryError", "Cannot allocate memory",
                                                 "returned NULL without setting an exception")):
                reason += " (out of memory on the device?)"
        return RawResult.failed(reason, exit_code=code, log=log)
    try:
        data = json.loads(result_file.read_text())
    except (OSError, ValueError) as e:
        return RawResult.failed(f"the runner's result.json is unreadable ({e})", exit_code=code, log=log)
    if data.get("status") != "ok":
        # One line, whatever the runtime said or the file was called (a report row's error is one line).
        error = " ".join(str(data.get("error") or "runner failed").split())
        return RawResult.failed(error, data=data, exit_code=code, log=log)
    outputs = None
    npz = out_dir / "outputs.npz"
    if npz.is_file():
        try:
            with np.load(npz) as f:
                outputs = [f[k] for k in sorted(f.files, key=lambda k: int(k.rsplit("_", 1)[1]))]
        except (OSError, ValueError, KeyError, EOFError) as e:  # a half-written file (disk full)
            return RawResult.failed(f"the runner's outputs.npz is unreadable ({' '.join(str(e).split())[:200]})",
                                    data=data, exit_code=code, log=log)
    return RawResult(status="ok", data=data, outputs=outputs, exit_code=code, log=log)
