"""The device's workdir as a content-addressed file store, kept over SFTP (no shell on the device involved).

Files go to `workdir/blobs/<sha256><suffix>`; an upload is checked by its sha256 on the device, then
renamed into place, so a half-sent or altered file never counts; a file already there is reused only when
its sha256 on the device matches. The workdir holds code the device will run, so it must be the user's
alone: owned by the login's uid (by `stat`, never by whether chmod succeeds: root's always does), mode
700, under folders only the owner or root can change. `workdir/device.lock` is the device's lock
(`flock`): one job per device across processes and hosts.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import paramiko

from targets.device_lock import Waiting, holder_text
from targets.errors import TargetError
from targets.ssh.connection import Connection
from targets.ssh.shell import last_line, q

LOCK_GRACE_S = 6.0  # the device lets go of its lock this long after the host's heartbeat stops (a cut link)

# Held on the device while the host sends a byte a second: flock on the lock file, who holds it written
# inside. Exits (and so unlocks) when the host closes the channel or its heartbeat stops.
_HOLD = ("import fcntl,os,select,sys,time\n"
         "f=open(sys.argv[1],'a+')\n"
         "try:\n fcntl.flock(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n"
         "except OSError:\n f.seek(0);print('EH-BUSY '+' '.join(f.read().split())[:200],flush=True);sys.exit(75)\n"
         "f.seek(0);f.truncate();f.write(sys.argv[2]);f.flush()\n"
         "print('EH-LOCKED',flush=True)\n"
         "g=float(sys.argv[3]);last=time.monotonic()\n"
         "while time.monotonic()-last<g:\n"
         " if select.select([0],[],[],0.5)[0]:\n"
         "  if not os.read(0,64):break\n"
         "  last=time.monotonic()\n")


def safe_suffix(path: Path) -> str:
    """The file's suffix if it is plain (".onnx"), else none: device paths never carry user text."""
    s = path.suffix
    return s if s[1:].isalnum() and s.isascii() and len(s) <= 12 else ""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class DeviceStore:
    """Files under one workdir on the device: blobs named by content, folders made and removed over SFTP.

    `free_bytes` asks the device how much room its workdir has (None when it cannot tell); it turns a
    failed upload into advice.
    """

    def __init__(self, conn: Connection, workdir: str, stats: dict[str, int],
                 free_bytes: Callable[[], int | None]) -> None:
        self.conn = conn
        self.workdir = workdir
        self.stats = stats
        self.free_bytes = free_bytes
        self._digests: dict[tuple[str, int, int], str] = {}
        self._uid: int | None = None  # the login's uid on the device, asked once
        self.lock = WorkdirLock(conn, f"{workdir.rstrip('/')}/device.lock")

    @property
    def name(self) -> str:
        return self.conn.endpoint.name

    def prepare(self) -> None:
        """Make `workdir/blobs` and `workdir/jobs`, and the workdir private (after each connection)."""
        self.makedirs(self.workdir)
        self._make_private(self.workdir)
        for sub in ("blobs", "jobs"):
            self.makedirs(f"{self.workdir}/{sub}")
            self._check_owned(f"{self.workdir}/{sub}")

    def digest(self, path: Path) -> str:
        """Hex sha256 of a local file; hashed once per version (path, size, mtime)."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    def blob_path(self, path: Path) -> tuple[str, int]:
        """Where `path` lives in the store (named by its content) and its size."""
        return f"{self.workdir}/blobs/{self.digest(path)}{safe_suffix(path)}", path.stat().st_size

    def upload(self, local: Path, remote: str, size: int) -> None:
        """Send a file to `remote` unless it is there with the same sha256 (checked on the device).

        A file of the right size but other content is replaced, never run; the upload itself is checked
        on the device before a rename gives it its name, so a half-sent or damaged copy never counts.
        """
        want = self.digest(local)
        part = None
        try:
            sftp = self.conn.sftp()
            try:
                there = sftp.stat(remote).st_size == size
            except OSError:
                there = False  # not there yet
            if there and self.remote_sha256(remote) == want:  # every time: the copy there is what will run
                self.stats["files_reused"] += 1
                return
            part = f"{remote}.part-{uuid.uuid4().hex[:8]}"
            sftp.put(str(local), part, confirm=True)
            got = self.remote_sha256(part)
            if got != want:
                raise OSError(f"the copy on the device has sha256 {got or '?'}, not {want}")
            sftp.posix_rename(part, remote)  # only checked files get the content-addressed name
        except (paramiko.SSHException, EOFError, OSError) as e:
            hint = self._after_failed_upload(part, size)
            self.conn.drop()
            raise TargetError(f"target {self.name}: upload of {local.name} failed: {e or type(e).__name__}"
                              f"{hint}") from None
        self.stats["bytes_sent"] += size
        self.stats["files_sent"] += 1

    def _after_failed_upload(self, part: str | None, size: int) -> str:
        """Remove a half-sent file (it would fill the disk further); say so if the workdir is full."""
        try:
            sftp = self.conn.current_sftp
            if part is not None and sftp is not None:
                sftp.remove(part)
            free = self.free_bytes()
        except (TargetError, paramiko.SSHException, EOFError, OSError, ValueError, IndexError):
            return ""
        if free is not None and free < size:
            return (f" (the device has {free / 1e6:.2f} MB free in {self.workdir}, the file is {size / 1e6:.2f} MB: "
                    "free space there or set `workdir` to a folder with room)")
        return ""

    def remote_sha256(self, path: str) -> str | None:
        """The sha256 of a file as the device reads it (sha256sum, or python3 where there is none)."""
        py = "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"
        code, out = self.conn.exec(f"{{ sha256sum -- {q(path)} || python3 -c {q(py)} {q(path)}; }} 2>/dev/null",
                                   timeout=max(60.0, self.conn.endpoint.timeout_s))
        words = out.split()
        return words[0].lower() if code == 0 and words and len(words[0]) == 64 else None

    def login_uid(self) -> int:
        """The uid the SSH login runs as on the device."""
        code, out = self.conn.exec("id -u", timeout=self.conn.endpoint.timeout_s)
        try:
            return int(out.split()[-1]) if code == 0 else -1
        except (ValueError, IndexError):
            return -1

    def _make_private(self, path: str) -> None:
        """The workdir holds code the device will run: it must be ours alone (owner, mode 700).

        In a shared folder such as /tmp another user could create it first and plant a runner. Ownership
        is read with `stat`: a chmod that succeeds proves nothing for root, whose chmod always does.
        """
        sftp = self.conn.current_sftp
        assert sftp is not None  # called right after connecting
        self._check_owned(path, mode_too=False)  # its mode is set right below, once it is known to be ours
        try:
            sftp.chmod(path, 0o700)
            mode = sftp.stat(path).st_mode or 0
        except OSError as e:
            raise TargetError(f"target {self.name}: workdir {path} on the device cannot be made private "
                              f"({e.strerror or e}); set `workdir` to a folder of your own, e.g. under the home "
                              "directory") from None
        if mode & 0o077:
            raise TargetError(f"target {self.name}: workdir {path} stays open to other users (mode "
                              f"{mode & 0o777:o}); set `workdir` to a folder of your own")
        parent = posixpath.dirname(path.rstrip("/"))
        while parent and parent != path:
            self._check_parent(parent)
            path, parent = parent, posixpath.dirname(parent)

    def _check_owned(self, path: str, mode_too: bool = True) -> None:
        """Refuse `path` unless the login's uid owns it (read by stat) and only it may write there."""
        sftp = self.conn.current_sftp
        assert sftp is not None
        if self._uid is None:
            self._uid = self.login_uid()
        uid = self._uid
        try:
            st = sftp.lstat(path)
        except OSError as e:
            raise TargetError(f"target {self.name}: cannot stat {path} on the device ({e.strerror or e})") from None
        mode = st.st_mode or 0
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise TargetError(f"target {self.name}: {path} on the device is not a plain folder (a link?); set "
                              "`workdir` to a folder of your own")
        if uid < 0 or st.st_uid != uid:
            raise TargetError(f"target {self.name}: {path} on the device belongs to uid {st.st_uid}, not to the "
                              f"login's uid {uid}: another account may have prepared it; set `workdir` to a folder "
                              "of your own, e.g. under the home directory")
        if mode_too and mode & 0o022:
            raise TargetError(f"target {self.name}: {path} on the device is writable by other users (mode "
                              f"{mode & 0o777:o}); set `workdir` to a folder of your own")

    def _check_parent(self, path: str) -> None:
        """A folder above the workdir: others must not be able to swap the workdir (owner or root, or sticky)."""
        sftp = self.conn.current_sftp
        assert sftp is not None
        try:
            st = sftp.stat(path)
        except OSError:
            return  # unreadable above us (a home under /data): nothing to judge by
        mode = st.st_mode or 0
        if st.st_uid not in (0, self._uid) or (mode & 0o022 and not mode & stat.S_ISVTX):
            raise TargetError(f"target {self.name}: {path} above the workdir on the device can be changed by "
                              f"another account (uid {st.st_uid}, mode {mode & 0o7777:o}); set `workdir` to a "
                              "folder of your own")

    def clean(self) -> tuple[int, int]:
        """Remove every blob and job folder from the workdir (not its venv); returns (files, bytes) removed."""
        sftp = self.conn.sftp()
        files = size = 0
        for sub in ("blobs", "jobs"):
            try:
                entries = sftp.listdir_attr(f"{self.workdir}/{sub}")
            except FileNotFoundError:
                continue
            for e in entries:
                path = f"{self.workdir}/{sub}/{e.filename}"
                if e.st_mode is not None and stat.S_ISDIR(e.st_mode):
                    self.remove_tree(path)
                else:
                    sftp.remove(path)
                files += 1
                size += e.st_size or 0
        return files, size

    def makedirs(self, path: str) -> None:
        """`mkdir -p` over SFTP (no shell on the device involved)."""
        sftp = self.conn.sftp()
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            try:
                sftp.stat(sub)
            except FileNotFoundError:
                try:
                    sftp.mkdir(sub)
                except OSError as e:
                    if _is_dir(sftp, sub):
                        continue  # another process (a concurrent run) made it meanwhile
                    # SFTP says only "Failure"; the device's own mkdir says why (read-only, full, denied).
                    why = str(e) or type(e).__name__
                    try:
                        code, out = self.conn.exec(f"mkdir -- {q(sub)}", timeout=self.conn.endpoint.timeout_s)
                        if code != 0:
                            why = last_line(out)
                    except TargetError:
                        pass
                    raise TargetError(f"target {self.name}: cannot create {sub} on the device ({why}); "
                                      "set `workdir` to a writable folder") from None

    def read_bytes(self, path: str) -> bytes:
        """A small file's bytes from the device (a /proc file too: read to its end, whatever size it shows)."""
        with self.conn.lock, self.conn.sftp().open(path) as f:
            return bytes(f.read())

    def fetch(self, folder: str, names: tuple[str, ...], local: Path) -> None:
        """Copy those of `names` that `folder` holds on the device into the local folder `local`."""
        with self.conn.lock:
            sftp = self.conn.sftp()
            try:
                present = set(sftp.listdir(folder))
            except FileNotFoundError:
                present = set()
            for name in names:
                if name in present:
                    sftp.get(f"{folder}/{name}", str(local / name))

    def remove_tree(self, path: str) -> None:
        """`rm -rf` over SFTP, for a job's own small folder."""
        sftp = self.conn.sftp()
        try:
            entries = sftp.listdir_attr(path)
        except FileNotFoundError:
            return
        for e in entries:
            child = f"{path}/{e.filename}"
            if e.st_mode is not None and stat.S_ISDIR(e.st_mode):
                self.remove_tree(child)
            else:
                sftp.remove(child)
        sftp.rmdir(path)


class WorkdirLock:
    """The device's lock across processes and hosts: `flock` on `workdir/device.lock`, held by a small
    process on the device for as long as this host keeps its channel open and its heartbeat going."""

    def __init__(self, conn: Connection, path: str) -> None:
        self.conn, self.path = conn, path
        self._chan: paramiko.Channel | None = None
        self._stop = threading.Event()
        self._shared = False  # another target of this very process holds it

    def held(self) -> bool:
        """Whether this host holds the device now (its holder on the device is still running)."""
        chan = self._chan
        if self._shared:
            return False  # try for our own again: the other target may have let go
        return chan is not None and not chan.closed and not chan.exit_status_ready() and self.conn.is_open()

    def acquire(self, target: str, python: str, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Hold the device; while another process holds it, wait (saying who) or fail (`--no-wait`)."""
        if self.held():
            return
        self.release()
        waiting = Waiting(target, cancelled)
        me = holder_text()
        while True:
            chan, first = self._try(target, python, me)
            if not first.startswith("EH-") and python != "python3":
                chan.close()  # the target's python may not exist yet (`targets setup` makes it): the system's
                chan, again = self._try(target, "python3", me)
                if not again.startswith("EH-"):
                    raise TargetError(f"target {target}: {python} not found on the device ({last_line(first)}): set "
                                      f"`python` in the targets file, or run `edge-harness targets setup {target}`")
                first = again
            if first.startswith("EH-LOCKED"):
                self._chan, self._stop, self._shared = chan, threading.Event(), False
                threading.Thread(target=_heartbeat, args=(chan, self._stop), daemon=True,
                                 name=f"lock-{target}").start()
                return
            chan.close()
            if not first.startswith("EH-BUSY"):
                raise TargetError(f"target {target}: cannot lock {self.path} on the device: {last_line(first)}")
            held_by = first.removeprefix("EH-BUSY").strip()
            if held_by.startswith(me.split(" since ")[0] + " "):
                self._shared = True  # this process already holds it (another target on the same device)
                return
            waiting.busy(held_by)

    def _try(self, target: str, python: str, me: str) -> tuple[paramiko.Channel, str]:
        """Start the holder on the device; returns its channel and the first line it printed."""
        ep = self.conn.endpoint
        try:
            transport = self.conn.client().get_transport()
            assert transport is not None
            chan = transport.open_session(timeout=ep.timeout_s)
            chan.set_combine_stderr(True)
            chan.settimeout(ep.timeout_s + 30)
            chan.exec_command(f"exec {q(python)} -u -c {q(_HOLD)} {q(self.path)} {q(me)} {LOCK_GRACE_S:g}")
            out = bytearray()
            deadline = time.monotonic() + ep.timeout_s + 30
            while b"EH-" not in out or not out.rstrip(b" ").endswith(b"\n"):
                data = chan.recv(4096)
                if not data or time.monotonic() > deadline:
                    break
                out += data
        except (paramiko.SSHException, EOFError, OSError) as e:
            self.conn.drop()
            raise TargetError(f"target {target}: cannot lock the device ({e or 'timed out'})") from None
        text = out.decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith("EH-")]
        return chan, (lines[0] if lines else text or "no output (is `python` right?)")

    def release(self) -> None:
        """Let go of the device: the holder there sees its channel close and exits, unlocking it."""
        self._stop.set()
        chan, self._chan, self._shared = self._chan, None, False
        if chan is not None:
            try:
                chan.shutdown_write()
                chan.close()
            except Exception:
                pass  # a dead link: the holder on the device lets go after LOCK_GRACE_S


def _heartbeat(chan: paramiko.Channel, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            chan.send(b".")
        except Exception:
            return  # the link is gone: the holder on the device lets go by itself


def _is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except OSError:
        return False
