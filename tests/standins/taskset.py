"""A stand-in for the phone's toybox `taskset MASK CMD...`, for tests: this machine lacks the phone's 8 cores, so
it records the mask in $TASKSET_STANDIN_LOG and runs the command unpinned."""

import os
import sys

if __name__ == "__main__":
    mask, cmd = sys.argv[1], sys.argv[2:]
    if os.environ.get("TASKSET_STANDIN_LOG"):
        with open(os.environ["TASKSET_STANDIN_LOG"], "a") as f:
            f.write(mask + "\n")
    os.execvp(cmd[0], cmd)
