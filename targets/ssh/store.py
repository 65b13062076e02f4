"""The device's workdir as a content-addressed file store, kept over SFTP (no shell on the device involved).

Files go to `workdir/blobs/<sha256><suffix>`; a finished upload is renamed into place, so a half-sent
file never counts, and a file that is there with its size is not sent again. The workdir holds code
the device will run, so it must be the user's alone.
"""

from __future__ import annotations

import hashlib
import stat
import uuid
from pathlib import Path
from typing import Callable

import paramiko

from targets.errors import TargetError
from targets.ssh.connection import Connection
from targets.ssh.shell import last_line, q


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

    @property
    def name(self) -> str:
        return self.conn.endpoint.name

    def prepare(self) -> None:
        """Make `workdir/blobs` and `workdir/jobs`, and the workdir private (after each connection)."""
        for sub in ("blobs", "jobs"):
            self.makedirs(f"{self.workdir}/{sub}")
        self._make_private(self.workdir)

    def blob_path(self, path: Path) -> tuple[str, int]:
        """Where `path` lives in the store (named by its content) and its size; hashes once per version."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = sha256_file(path)
        return f"{self.workdir}/blobs/{self._digests[key]}{safe_suffix(path)}", st.st_size

    def upload(self, local: Path, remote: str, size: int) -> None:
        """Send a file to `remote` unless it is there with this size; a rename makes it appear whole."""
        part = None
        try:
            sftp = self.conn.sftp()
            try:
                if sftp.stat(remote).st_size == size:
                    self.stats["files_reused"] += 1
                    return
            except OSError:
                pass  # not there yet
            part = f"{remote}.part-{uuid.uuid4().hex[:8]}"
            sftp.put(str(local), part, confirm=True)
            sftp.posix_rename(part, remote)  # only complete files get the content-addressed name
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

    def _make_private(self, path: str) -> None:
        """The workdir holds code the device will run: it must be ours alone (mode 700).

        In a shared folder such as /tmp another user could create it first and plant a runner whose
        size matches ours; chmod succeeds only for the owner, so a folder we do not own is refused.
        """
        sftp = self.conn.current_sftp
        assert sftp is not None  # called right after connecting
        try:
            sftp.chmod(path, 0o700)
            mode = sftp.stat(path).st_mode or 0
        except OSError as e:
            raise TargetError(f"target {self.name}: workdir {path} on the device cannot be made private "
                              f"({e.strerror or e}): it may belong to another user; set `workdir` to a folder of "
                              f"your own, e.g. under the home directory") from None
        if mode & 0o077:
            raise TargetError(f"target {self.name}: workdir {path} stays open to other users (mode "
                              f"{mode & 0o777:o}); set `workdir` to a folder of your own")

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
