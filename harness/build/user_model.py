"""A user's own model: the factory named in the config, its checkpoint, and a check that it fits the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.build import samples as S
from harness.config.user_code import import_callable
from harness.errors import ModelError


def import_factory(spec: str) -> Any:
    """Resolve model.factory's 'package.module:function'; import errors become one-line config errors."""
    return import_callable(spec, "model.factory")


def load_checkpoint(model: Any, path: Path) -> Any:
    """Load a state dict into `model`; a file that does not fit says which keys disagree."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"checkpoint {path}: cannot be read as a torch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise ModelError(f"checkpoint {path} does not fit the model: {first[:300]}") from None
    return model


def check_fits_data(model: Any, data: Any, name: str) -> None:
    """A user's model must take the task's samples and return one score per class: say so in one line."""
    xs = [torch.from_numpy(a) for a in S.arrays(S.take(data.x_test, slice(0, 2)))]
    try:
        with torch.no_grad():
            y = model.eval()(*xs)
    except Exception as e:
        why = " ".join(str(e).split())[:300]
        given = ", ".join(f"{str(t.dtype).replace('torch.', '')} {list(t.shape)[1:]}" for t in xs)
        raise ModelError(f"model {name} does not accept the data's samples ({given}, from "
                         f"{data.name}): {type(e).__name__}: {why}") from None
    want = (len(xs[0]), len(data.classes))
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
    if got != want:
        raise ModelError(f"model {name} returns {got} for {len(xs[0])} samples; expected {want}: one score per class "
                         f"({len(data.classes)} classes in {data.name})")


def has_initial_bn_statistics(model: Any) -> bool:
    """Whether every BatchNorm layer still has its initial statistics (mean 0, var 1): a model that has
    never seen data, so not pretrained. False for a model without BatchNorm (nothing to tell by)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.running_mean is not None]
    return bool(bns) and all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in bns)


@torch.no_grad()
def kaiming_init(model: Any) -> Any:
    """Re-initialise conv/linear weights (He normal, fan-out), zero biases, BatchNorm to identity: a
    start that trains from scratch (some libraries' defaults, e.g. normal std 0.02, leave a deep CNN stuck)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, 0.01)
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
            torch.nn.init.ones_(m.weight)
        else:
            continue
        if getattr(m, "bias", None) is not None:
            torch.nn.init.zeros_(m.bias)
    return model
