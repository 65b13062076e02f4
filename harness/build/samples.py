"""Samples as one array or as several named arrays (one per model input, any dtype), and what is timed.

A task's x is either an ndarray (one input, e.g. float32 NCHW images) or a dict of named arrays in the
model's argument order (e.g. int64 `input_ids` and `attention_mask`). These helpers treat both alike:
slice, count, write as runner inputs, feed to a torch model. Sequence inputs are padded to one width in
the files; `timing_sample` picks the timed sample from the data (the median length by default) and trims
it to its own length, so a model with a dynamic sequence dimension is timed at a length users send.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from harness.errors import ConfigError

Samples = Union[np.ndarray, dict[str, np.ndarray]]
SINGLE_INPUT = "input"  # the name a one-input model's array gets in runner files (the ONNX exporter's name)


def is_named(x: Samples) -> bool:
    return isinstance(x, dict)


def count(x: Samples) -> int:
    """Number of samples."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Samples, index: Any) -> Samples:
    """x[index] for every input (a slice or an index array)."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def concat(parts: list[Samples]) -> Samples:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # type: ignore[index]
    return np.concatenate(parts)  # type: ignore[arg-type]


def feeds(x: Samples) -> dict[str, np.ndarray]:
    """The arrays of a runner input file: one per model input, by name."""
    return dict(x) if isinstance(x, dict) else {SINGLE_INPUT: x}


def arrays(x: Samples) -> list[np.ndarray]:
    """The arrays in the model's argument order."""
    return list(x.values()) if isinstance(x, dict) else [x]


def describe(x: Samples) -> dict[str, Any]:
    """Per input: dtype and the shape of one sample (recorded in the report's task)."""
    return {k: {"dtype": v.dtype.name, "shape": list(v.shape[1:])} for k, v in feeds(x).items()}


def is_image(x: Samples) -> bool:
    """One float NCHW array with 1 or 3 channels: what image corruptions and resolutions apply to."""
    return isinstance(x, np.ndarray) and x.ndim == 4 and x.shape[1] in (1, 3) and x.dtype.kind == "f"


def sequence_inputs(x: Samples) -> list[str]:
    """Names of integer (N, L) inputs: token ids, masks, type ids; their dim 1 is the sequence length."""
    return [k for k, v in feeds(x).items() if v.ndim == 2 and v.dtype.kind in "iub"] if is_named(x) else []


def lengths(x: Samples) -> np.ndarray | None:
    """Each sample's real length: from an input named like a mask, else the non-zero ids; None without
    sequence inputs."""
    seq = sequence_inputs(x)
    if not seq:
        return None
    f = feeds(x)
    mask = next((k for k in seq if "mask" in k.lower()), None)
    used = f[mask] != 0 if mask else f[seq[0]] != 0
    # The length is up to the last used position (a mask may have holes; trimming keeps them).
    width = used.shape[1]
    last = width - np.argmax(used[:, ::-1], axis=1)
    return np.where(used.any(axis=1), last, 1).astype(np.int64)


def timing_sample(x: Samples, rule: str = "median") -> tuple[Samples, dict[str, Any]]:
    """The one sample that is timed, and how it was chosen (recorded in the report).

    Sequence data: the sample of median length (or the longest, or the first), trimmed to that length.
    Other data: the first test sample.
    """
    lens = lengths(x)
    if lens is None or rule == "first":
        chosen = 0
    elif rule == "longest":
        chosen = int(np.argmax(lens))
    else:
        chosen = int(np.argsort(lens, kind="stable")[(len(lens) - 1) // 2])
    one = take(x, slice(chosen, chosen + 1))
    info: dict[str, Any] = {"sample": chosen, "rule": rule if lens is not None else "first"}
    if lens is not None:
        n = int(lens[chosen])
        seq = set(sequence_inputs(x))
        one = {k: (v[:, :n] if k in seq else v) for k, v in one.items()}  # type: ignore[union-attr]
        info.update(seq_len=n, padded_len=int(feeds(x)[next(iter(seq))].shape[1]),
                    lengths={"min": int(lens.min()), "median": float(np.median(lens)), "max": int(lens.max())})
    info["inputs"] = describe(one)
    return one, info


def check_named_split(path: Any, data: dict[str, np.ndarray], names: list[str], split: str) -> None:
    """Every input of one split: present, numeric, finite, and as many samples as the labels."""
    n = len(data[f"y_{split}"])
    for name in names:
        key = f"{name}_{split}"
        if key not in data:
            raise ConfigError(f"{path}: input {name!r} has no {key!r} array (every input needs one per split)")
        a = data[key]
        if a.ndim < 1 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ConfigError(f"{path}: {key} must be a numeric array (N, ...), got {a.dtype.name}")
        if len(a) != n:
            raise ConfigError(f"{path}: {key} has {len(a)} samples but y_{split} has {n}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ConfigError(f"{path}: {key} contains NaN or inf")
    if n == 0:
        raise ConfigError(f"{path}: y_{split} is empty")


def flat(x: Samples) -> np.ndarray:
    """One array with every input's values per sample (float64): content to hash, not to run."""
    if not isinstance(x, dict):
        return x
    return np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in x.values()], axis=1)
