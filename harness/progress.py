"""A small progress display for long steps: one line per step, elapsed time, on stderr."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO


class Progress:
    """Prints `[  12.3s] step: detail` lines; quiet=True prints nothing (tests, API use)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.start = time.monotonic()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            self.stream.write(f"[{time.monotonic() - self.start:7.1f}s] {msg}\n")
            self.stream.flush()

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Announce a step and report its duration (or its failure) when it ends."""
        self(f"{what} ...")
        t0 = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self(f"{what}: {'done' if ok else 'FAILED'} in {time.monotonic() - t0:.1f}s")
