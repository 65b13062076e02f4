"""Talking to the device's shell: every path and argument is quoted, and its output is read back as one line."""

from __future__ import annotations

import shlex


def q(s: str) -> str:
    """Quote for the device's shell: every path and argument goes through here."""
    return shlex.quote(str(s))


def last_line(text: str) -> str:
    """The last non-empty line of a command's output (what a one-line error quotes)."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
