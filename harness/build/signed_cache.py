"""Cache entries that hold whole torch models (pickles), signed so that a planted file is never loaded.

A compressed variant (a pruned network, a student, a QAT graph) has no fixed architecture to rebuild
from a state dict, so its cache entry is a pickle, and unpickling runs code. Each entry is signed with
an HMAC whose key lives in the user's own config folder (0600, outside the cache, which may be shared
via EDGE_HARNESS_CACHE): whoever can write the cache but not that key cannot make an entry that loads.
Temporary files get unique names, so concurrent runs never share one.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import torch

SIGNATURE_SUFFIX = ".sig"


def key_path() -> Path:
    """Where the signing key lives: EDGE_HARNESS_KEY, else ~/.config/edge-harness/cache.key."""
    return Path(os.environ.get("EDGE_HARNESS_KEY", Path.home() / ".config" / "edge-harness" / "cache.key"))


def signing_key() -> bytes:
    """This user's signing key, made on first use (0600 in a 0700 folder)."""
    path = key_path()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key.")
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # first writer wins; a concurrent run reads the same key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def _mac(data: bytes) -> str:
    return hmac.new(signing_key(), data, hashlib.sha256).hexdigest()


def save(obj: Any, path: Path) -> str:
    """torch.save `obj` to `path` with its signature beside it, each written through a unique temp name;
    returns the sha256 of the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        data = Path(tmp).read_bytes()
        sig = Path(tmp + SIGNATURE_SUFFIX)
        sig.write_text(_mac(data))
        os.replace(sig, path.with_name(path.name + SIGNATURE_SUFFIX))
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()
    finally:
        for leftover in (Path(tmp), Path(tmp + SIGNATURE_SUFFIX)):
            leftover.unlink(missing_ok=True)


def signed_bytes(path: Path) -> bytes | None:
    """The bytes of `path` if its signature is this user's, else None."""
    try:
        data = path.read_bytes()
        sig = path.with_name(path.name + SIGNATURE_SUFFIX).read_text().strip()
    except OSError:
        return None
    return data if hmac.compare_digest(sig, _mac(data)) else None


def loads(data: bytes) -> Any:
    """The object in bytes that `signed_bytes` returned (signed by us: trusted)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def load(path: Path) -> Any | None:
    """The object in `path` if its signature is this user's; None (a cache miss) for anything else."""
    data = signed_bytes(path)
    return None if data is None else loads(data)
