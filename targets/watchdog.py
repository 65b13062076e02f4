#!/usr/bin/env python3
"""The watchdog that runs beside the runner on a device: no runner outlives the host's attention.

    python3 -u watchdog.py [--forward] GRACE_S DEADLINE_S PIDFILE COMMAND...

It starts COMMAND (the runner) in a process group of its own, writes the group's PID to PIDFILE,
and reads the host's heartbeat from stdin (a byte a second). It kills the whole group when no
byte came for GRACE_S seconds (a cut link), when stdin closes (the host ended the session), after
DEADLINE_S seconds, or on SIGTERM, SIGHUP or SIGINT, and then exits with KILLED. Otherwise it exits
with the runner's status (128 + N for a runner ended by signal N, as a shell reports it).

With --forward (a resident runner, `runner.py JOB.json --serve`) the runner's stdin is a pipe
from the watchdog: complete command lines on the watchdog's stdin (a line starts with "{" and ends
with a newline) are passed on to it, and every other byte is a heartbeat only. Every byte, a
command's too, counts as a heartbeat, and every kill rule above still holds. The runner's stdout
and stderr are the watchdog's own (the SSH channel), so its answers go straight to the host.

Standard library only, Python 3.8 or newer: like the runner, this file is copied alone to devices.
"""

import os
import select
import signal
import subprocess
import sys
import time

KILLED = 124  # the exit status when the watchdog killed the runner
POLL_S = 0.5  # how often the clocks are checked while nothing arrives
MAX_LINE = 1 << 16  # a command line longer than this is dropped (the host sends lines of tens of bytes)


def take_commands(data, partial):
    """The complete command lines in `data`, with `partial` (a bytearray) holding an unfinished one
    between calls; bytes outside a line (heartbeats) are dropped."""
    done = bytearray()
    i = 0
    while i < len(data):
        if not partial:  # between lines: skip heartbeats up to the next "{"
            i = data.find(b"{", i)
            if i < 0:
                break
        end = data.find(b"\n", i)
        if end < 0:
            partial += data[i:]
            if len(partial) > MAX_LINE:
                del partial[:]
            break
        partial += data[i:end + 1]
        done += partial
        del partial[:]
        i = end + 1
    return bytes(done)


def main(argv):
    forward = len(argv) > 1 and argv[1] == "--forward"
    if forward:
        argv = argv[:1] + argv[2:]
    grace, deadline, pidfile = float(argv[1]), float(argv[2]), argv[3]
    child = subprocess.Popen(argv[4:], stdin=subprocess.PIPE if forward else subprocess.DEVNULL,
                             start_new_session=True)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(pidfile + ".tmp", pidfile)  # the host never reads a half-written PID
    wake_r, wake_w = os.pipe()
    to_runner = -1
    if forward:
        to_runner = child.stdin.fileno()
        os.set_blocking(to_runner, False)  # a runner that stops reading must not stop the clocks
    partial = bytearray()  # a command line still arriving
    queued = bytearray()  # complete lines not yet taken by the runner

    def kill(why):
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass
        child.wait()
        sys.stderr.write(f"edge-harness watchdog: runner killed ({why})\n")
        sys.exit(KILLED)

    # The runner's exit wakes the select at once instead of at the next poll.
    signal.signal(signal.SIGCHLD, lambda *a: os.write(wake_w, b"x"))
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda s, f: kill(f"signal {s}"))
    start = last = time.monotonic()
    while True:
        code = child.poll()
        if code is not None:
            return 128 - code if code < 0 else code
        now = time.monotonic()
        if now - start > deadline:
            kill(f"deadline of {deadline:g} s passed")
        if now - last > grace:
            kill(f"no heartbeat from the host for {grace:g} s: link lost?")
        ready = select.select([0, wake_r], [to_runner] if queued else [], [], POLL_S)[0]
        if wake_r in ready:
            os.read(wake_r, 64)
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                kill("the host closed the session")
            last = time.monotonic()
            if forward:
                queued += take_commands(data, partial)
        if queued:  # written at once (a non-blocking pipe); what does not fit waits for the runner to read
            try:
                del queued[:os.write(to_runner, queued)]
            except BlockingIOError:
                pass
            except OSError:  # the runner closed its stdin (it is exiting): its status comes next
                del queued[:]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
