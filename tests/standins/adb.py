"""A stand-in for Android's `adb`, for tests (no phone can exist here): one "phone" that is a local folder.

    adb devices | adb -s SERIAL push LOCAL REMOTE | pull REMOTE LOCAL | shell CMD
    adb -s SERIAL forward tcp:PORT tcp:DEVICE_PORT | forward --remove tcp:PORT | forward --list

Environment: ADB_STANDIN_ROOT is the phone's filesystem (device paths under /data, /sys, /proc, /sdcard map
into it, in push/pull and in shell commands); ADB_STANDIN_SERIAL its serial; ADB_STANDIN_SSH_PORT the
local port that stands for the phone's tcp:8022 (Termux's sshd), which `forward` relays to. The file
ROOT/../unplugged makes the phone vanish, as a pulled cable does. Messages are adb's own wording.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.environ["ADB_STANDIN_ROOT"]
SERIAL = os.environ.get("ADB_STANDIN_SERIAL", "STANDIN0001")
STATE = os.path.join(os.path.dirname(ROOT.rstrip("/")), "adb-state")
DEVICE_DIRS = re.compile(r"(?<![\w./-])/(data|sys|proc|sdcard|system)(?=/|\b)")


def on_phone(path):
    return DEVICE_DIRS.sub(lambda m: ROOT.rstrip("/") + "/" + m.group(1), path)


def unplugged():
    return os.path.exists(os.path.join(os.path.dirname(ROOT.rstrip("/")), "unplugged"))


def fail(msg, code=1):
    sys.stderr.write(msg + "\n")
    return code


def forwards():
    try:
        with open(os.path.join(STATE, "forwards.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_forwards(fw):
    os.makedirs(STATE, exist_ok=True)
    with open(os.path.join(STATE, "forwards.json"), "w") as f:
        json.dump(fw, f)


def relay(listen_port, to_port):
    """The forward itself: 127.0.0.1:listen_port -> 127.0.0.1:to_port, until killed."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(16)

    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    while True:
        conn, _ = srv.accept()
        try:
            up = socket.create_connection(("127.0.0.1", to_port))
        except OSError:
            conn.close()
            continue
        threading.Thread(target=pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, conn), daemon=True).start()


def forward(args):
    fw = forwards()
    if args == ["--list"]:
        for local, info in fw.items():
            print("{} {} {}".format(SERIAL, local, info["remote"]))
        return 0
    if args[:1] == ["--remove"]:
        info = fw.pop(args[1], None)
        if info is None:
            return fail(f"adb: error: listener '{args[1]}' not found")
        try:
            os.kill(info["pid"], signal.SIGKILL)
        except OSError:
            pass
        save_forwards(fw)
        return 0
    local, remote = args
    if local in fw:  # adb rebinds an existing forward
        forward(["--remove", local])
        fw = forwards()
    port = int(local.split(":")[1])
    to = int(os.environ.get("ADB_STANDIN_SSH_PORT", "0"))
    proc = subprocess.Popen([sys.executable, __file__, "--relay", str(port), str(to)], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    fw[local] = {"remote": remote, "pid": proc.pid}
    save_forwards(fw)
    print(port if local == "tcp:0" else "", end="")
    return 0


def main(argv):
    if argv[:1] == ["--relay"]:
        relay(int(argv[1]), int(argv[2]))
        return 0
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        if not unplugged():
            print(f"{SERIAL}\tdevice")
        print()
        return 0
    if argv[:1] != ["-s"] or len(argv) < 3:
        return fail("adb: usage: the stand-in takes -s SERIAL COMMAND ...")
    serial, cmd, args = argv[1], argv[2], argv[3:]
    if serial != SERIAL or unplugged():
        return fail(f"adb: device '{serial}' not found")
    if cmd == "get-state":
        print("device")
        return 0
    if cmd == "push":
        local, remote = args
        dest = on_phone(remote)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(local, dest)
        size = os.path.getsize(dest)
        print(f"{local}: 1 file pushed, 0 skipped. 100.0 MB/s ({size} bytes in 0.001s)")
        return 0
    if cmd == "pull":
        remote, local = args
        shutil.copyfile(on_phone(remote), local)
        print(f"{remote}: 1 file pulled, 0 skipped.")
        return 0
    if cmd == "shell":
        env = dict(os.environ, PATH=os.path.join(ROOT, "system", "bin") + os.pathsep + os.environ.get("PATH", ""))
        return subprocess.run(["sh", "-c", on_phone(" ".join(args))], env=env, cwd=ROOT).returncode
    if cmd == "forward":
        return forward(args)
    return fail(f"adb: unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
