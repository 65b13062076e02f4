"""Per-step logs: converter and library chatter goes to OUT/logs/<step>.log, not to the terminal.

Converters talk on every channel: Python warnings, `logging`, print(), and C code (TensorFlow,
absl, onnxruntime) writing straight to file descriptors 1 and 2. `capture(path)` points fds 1 and
2 at the log file (os.dup2) for the duration of a step, which catches all of them; the harness's
own lines go to `console()`, a copy of the terminal's stderr taken before any capture.

File descriptors belong to the process, not to a thread: only the main thread switches them. A
capture asked for in another thread is a no-op (its output lands in the log open at the time).
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, TextIO

__all__ = ["capture", "capturing", "console", "log_name", "terminal"]

_lock = threading.Lock()
_console: TextIO | None = None
_depth = 0  # captures open in the main thread (nested steps switch to their own log and back)


def log_name(what: str) -> str:
    """A file name for a step's log: `export fp16/onnx` -> `export-fp16-onnx.log`."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", what).strip("-.") or "step")[:120] + ".log"


def console() -> TextIO:
    """A stream on the terminal's stderr that captures never redirect (the harness's own lines)."""
    global _console
    with _lock:
        if _console is None:
            try:
                fd = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
                _console = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
            except (OSError, ValueError, AttributeError):
                _console = sys.stderr  # no real fd 2 (an embedding host): captures then skip fds
        return _console


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


@contextmanager
def capture(path: Path | None, tee: IO[str] | None = None) -> Iterator[Path | None]:
    """Send fds 1/2 (and so print, warnings, logging and C-level output) to `path` while the block runs.

    `tee` (e.g. `console()` under -v) also gets a copy of everything, through a pipe and a reader
    thread. `path=None`, or a call outside the main thread, captures nothing.
    """
    global _depth
    if path is None or threading.current_thread() is not threading.main_thread():
        yield path
        return
    console()  # the terminal copy must exist before fd 2 first moves
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    log = open(path, "ab")  # noqa: SIM115 - closed below; append: a step run twice keeps both
    _flush()
    saved = (os.dup(1), os.dup(2))
    reader: threading.Thread | None = None
    write_fd = log.fileno()
    if tee is not None:
        read_fd, write_fd = os.pipe()
        reader = threading.Thread(target=_pump, args=(read_fd, log, tee), daemon=True, name="log-tee")
        reader.start()
    streams = sys.stdout, sys.stderr
    showwarning = warnings.showwarning
    try:
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        # Python-level output too, where sys.stdout/sys.stderr are not fds 1/2 (pytest, notebooks):
        # streams that write to the fds themselves, wherever those point at the time.
        sys.stdout, sys.stderr = _FdStream(1), _FdStream(2)
        warnings.showwarning = _show_warning  # also past a warnings recorder (pytest's) set up earlier
        _depth += 1
        yield path
    finally:
        _flush()
        warnings.showwarning = showwarning
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        _depth -= 1
        if reader is not None:
            os.close(write_fd)  # the reader sees end-of-file once every copy of the write end is gone
            reader.join(timeout=5)
        log.close()
        if not existed and path.stat().st_size == 0:
            path.unlink()  # a step that said nothing leaves no file


def capturing() -> bool:
    """Whether a capture is open now (fds 1/2 point at a log)."""
    return _depth > 0


def terminal() -> TextIO:
    """Where a line for the user goes now: `console()` while a step's output is captured, else sys.stderr."""
    return console() if capturing() else sys.stderr


class _FdStream(io.TextIOBase):
    """A text stream that writes straight to a file descriptor (unbuffered), wherever it points now."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, s: str) -> int:
        os.write(self.fd, s.encode("utf-8", errors="replace"))
        return len(s)

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: IO[str] | None = None, line: str | None = None) -> None:
    os.write(2, warnings.formatwarning(message, category, filename, lineno, line).encode("utf-8", "replace"))


def _pump(read_fd: int, log: IO[bytes], tee: IO[str]) -> None:
    """Copy a pipe into the log file and onto `tee` until the pipe closes."""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        for chunk in iter(lambda: pipe.read(65536), b""):
            log.write(chunk)
            log.flush()
            try:
                tee.write(chunk.decode("utf-8", errors="replace"))
                tee.flush()
            except (OSError, ValueError):
                pass
