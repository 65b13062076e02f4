"""Structured (channel) pruning of any torch model, through torch-pruning's dependency graph.

DepGraph finds the layers whose channels must go together (a residual add, a depthwise conv and
the conv feeding it, a squeeze-excite gate, the inputs of a concatenation), so removing channels
keeps the network valid whatever its architecture. The layer producing the model's outputs is
never pruned: the number of classes stays.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from harness.errors import ConfigError

IMPORTANCE = ("l1", "l2", "taylor")
# Budget mode: channels are removed in this many equal steps until the budget is met.
BUDGET_STEPS = 20
MAX_BUDGET_RATIO = 0.95


def count_macs_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, params) of one forward pass on `example`, counted by torch-pruning."""
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The conv/linear layer that ran last in a forward pass: its output channels are the classes."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d))]
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def _importance(name: str) -> Any:
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ConfigError(f"importance must be one of {', '.join(IMPORTANCE)}, got {name!r}")


def _taylor_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Gradients of the loss on a training batch: Taylor importance reads weight * grad."""
    model.eval()  # BN statistics stay as they are while scoring
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def prune_channels(model: nn.Module, example: torch.Tensor, ratio: float = 0.5, importance: str = "l2",
                   macs_fraction: float = 0.0, params_fraction: float = 0.0,
                   batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Remove channels of `model` in place: a `ratio` of each group, or until a budget is met.

    `macs_fraction` / `params_fraction` > 0: prune in small steps until MACs / params are at most
    that fraction of the original. Taylor importance needs `batch` (inputs, labels). Returns the
    counts before and after.
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"prune ratio must be in [0, 1), got {ratio}")
    for key, value in (("macs_fraction", macs_fraction), ("params_fraction", params_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key} must be in (0, 1) (0 = prune by ratio), got {value}")
    if importance == "taylor" and batch is None:
        raise ConfigError("Taylor importance needs a batch of training data")
    imp = _importance(importance)
    macs0, params0 = count_macs_params(model, example)
    budget = macs_fraction > 0 or params_fraction > 0
    steps = BUDGET_STEPS if budget else 1
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=MAX_BUDGET_RATIO if budget
                                      else ratio, iterative_steps=steps, ignored_layers=output_layers(model, example))
    except Exception as e:  # noqa: BLE001 - DepGraph tracing failed: name the model's trouble
        raise ConfigError(f"torch-pruning cannot trace this model: {type(e).__name__}: {e}") from None
    macs, params = macs0, params0
    for _ in range(steps):
        if budget and (not macs_fraction or macs <= macs_fraction * macs0) and \
                (not params_fraction or params <= params_fraction * params0):
            break
        if importance == "taylor":
            _taylor_gradients(model, *batch)  # type: ignore[misc]
        pruner.step()
        macs, params = count_macs_params(model, example)
    model.zero_grad(set_to_none=True)
    if budget and ((macs_fraction and macs > macs_fraction * macs0) or
                   (params_fraction and params > params_fraction * params0)):
        raise ConfigError(f"pruning cannot reach the budget: MACs {macs / macs0:.2f}, params {params / params0:.2f} "
                          f"of the original after removing {MAX_BUDGET_RATIO:.0%} of the prunable channels")
    return {"macs_before": macs0, "macs_after": macs, "params_before": params0, "params_after": params}
