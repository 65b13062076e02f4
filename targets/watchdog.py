#!/usr/bin/env python3
"""The watchdog that runs beside the runner on a device: no runner outlives the host's attention.

    python3 -u watchdog.py GRACE_S DEADLINE_S PIDFILE COMMAND...

It starts COMMAND (the runner) in a process group of its own, writes the group's PID to PIDFILE,
and reads the host's heartbeat from stdin (a byte a second). It kills the whole group when no
byte came for GRACE_S seconds (a cut link), when stdin closes (the host ended the session), after
DEADLINE_S seconds, or on SIGTERM, SIGHUP or SIGINT, and then exits with KILLED. Otherwise it exits
with the runner's status (128 + N for a runner ended by signal N, as a shell reports it).

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


def main(argv):
    grace, deadline, pidfile = float(argv[1]), float(argv[2]), argv[3]
    child = subprocess.Popen(argv[4:], stdin=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(pidfile + ".tmp", pidfile)  # the host never reads a half-written PID
    wake_r, wake_w = os.pipe()

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
        ready = select.select([0, wake_r], [], [], POLL_S)[0]
        if wake_r in ready:
            os.read(wake_r, 64)
        if 0 in ready:
            if not os.read(0, 4096):
                kill("the host closed the session")
            last = time.monotonic()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
