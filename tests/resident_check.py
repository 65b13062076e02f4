"""The idle-resident check both transports share: time one runner for 2 s while another sits idle."""

from __future__ import annotations

import time
from typing import Any

from harness.measure.interleave import settle


def idle_while_other_works(active: Any, idle: Any, block_runs: int) -> tuple[float, float, float]:
    """Warm `idle` up, then time `active` in blocks of `block_runs` for 2 s; (active CPU s, idle CPU s, wall s)."""
    idle.block(500)  # it has run, so its runtime's threads exist and may spin
    settle(idle)
    c0, t0 = idle.cpu_seconds(), time.monotonic()
    busy = 0.0
    while time.monotonic() - t0 < 2.0:
        b0 = active.cpu_seconds()
        assert len(active.block(block_runs, discard=5)) == block_runs
        busy += active.cpu_seconds() - b0
    return busy, idle.cpu_seconds() - c0, time.monotonic() - t0
