"""A stand-in for Android's `getprop`, for tests: the properties of one phone, in getprop's "[key]: [value]" lines.

The values describe a Pixel 7 (Tensor G2, Android 14); $GETPROP_STANDIN_JSON may name a JSON file of
other properties.
"""

import json
import os
import sys

PROPS = {
    "ro.product.manufacturer": "Google", "ro.product.model": "Pixel 7", "ro.product.brand": "google",
    "ro.soc.manufacturer": "Google", "ro.soc.model": "GS201", "ro.board.platform": "gs201",
    "ro.hardware": "panther", "ro.build.version.release": "14", "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a", "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
}


def main(argv):
    props = dict(PROPS)
    if os.environ.get("GETPROP_STANDIN_JSON"):
        with open(os.environ["GETPROP_STANDIN_JSON"]) as f:
            props.update(json.load(f))
    if argv:
        print(props.get(argv[0], ""))
        return 0
    for k in sorted(props):
        print(f"[{k}]: [{props[k]}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
