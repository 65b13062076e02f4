"""A stand-in for Termux's `pkg`, for tests: records `pkg install -y ...` in PREFIX/pkg-standin.log and installs nothing
(the stand-in Termux's python already has numpy and onnxruntime)."""

import os
import sys

if __name__ == "__main__":
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pkg-standin.log"), "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\n")
    print("Reading package lists... Done")
