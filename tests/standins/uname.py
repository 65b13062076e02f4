"""A stand-in for the phone's `uname`, for tests: an arm64 Android kernel."""

import sys

if __name__ == "__main__":
    print({"-m": "aarch64", "-r": "5.10.157-android13-4-00001-g5c4ea0b7b4f6"}.get(sys.argv[1] if sys.argv[1:] else "",
                                                                                "Linux"))
