"""Compression recipes: the function behind each recipe that harness.config.recipes names.

`apply_recipe` never touches the reference: each recipe works on a deep copy and returns a
plain nn.Module (no pruning reparametrisations) that exports like the original.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from harness.build.data import Dataset
from harness.build.models import ConvBN, MBConv, TinyCNN, build_model, count_params, sparsity
from harness.build.training import Progress, evaluate, train
from harness.config.recipes import RECIPES, Settings
from harness.errors import ConfigError

# Epochs of classifier training on cached features after channels are removed (~1 s).
HEAD_REFIT_EPOCHS = 30


# ---- unstructured magnitude pruning -------------------------------------------------------

def _prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def global_magnitude_masks(model: nn.Module, amount: float) -> list[torch.Tensor]:
    """Boolean keep-masks zeroing the `amount` fraction of smallest |w| over all conv/linear."""
    weights = _prunable_weights(model)
    flat = torch.cat([w.abs().flatten() for w in weights])
    keep = torch.ones_like(flat, dtype=torch.bool)
    # argsort, not a threshold: ties at the threshold would overshoot the target.
    keep[torch.argsort(flat)[:round(amount * flat.numel())]] = False
    return [m.view_as(w) for m, w in zip(keep.split([w.numel() for w in weights]), weights, strict=True)]


def _prune(model: nn.Module, data: Dataset, s: Settings, progress: Progress | None) -> nn.Module:
    if not 0.0 <= s["sparsity"] < 1.0:
        raise ConfigError(f"prune sparsity must be in [0, 1), got {s['sparsity']}")
    masks = global_magnitude_masks(model, s["sparsity"])
    weights = _prunable_weights(model)

    @torch.no_grad()
    def apply_masks(m: nn.Module) -> None:
        for w, keep in zip(weights, masks, strict=True):
            w.mul_(keep)

    apply_masks(model)
    # Masks are re-applied after every step, so Adam's momentum cannot revive a zero.
    train(model, data, s["finetune_epochs"], lr=s["lr"], seed=s["seed"], freeze_bn=True,
          keep_best=True, after_step=apply_masks, progress=progress)
    return model


# ---- structured (channel) pruning ---------------------------------------------------------

def _slice_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None = None,
                in_idx: torch.Tensor | None = None) -> nn.Conv2d:
    """A smaller copy of `conv` keeping output channels `out_idx` / input channels `in_idx`."""
    w = conv.weight.detach()
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None and not depthwise:
        w = w[:, in_idx]
    cout = w.shape[0]
    cin = cout if depthwise else w.shape[1] * conv.groups
    new = nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding,
                    groups=cout if depthwise else conv.groups, bias=conv.bias is not None)
    new.weight.data.copy_(w)
    if conv.bias is not None:
        bias = conv.bias.detach()
        new.bias.data.copy_(bias[out_idx] if out_idx is not None else bias)
    return new


def _slice_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    """A BatchNorm2d over the channels `idx` of `bn`, statistics included."""
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    new.weight.data.copy_(bn.weight.detach()[idx])
    new.bias.data.copy_(bn.bias.detach()[idx])
    new.running_mean.copy_(bn.running_mean[idx])
    new.running_var.copy_(bn.running_var[idx])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _keep_count(channels: int, ratio: float) -> int:
    return max(1, channels - round(ratio * channels))


@torch.no_grad()
def shrink_mbconv(block: MBConv, ratio: float) -> None:
    """Remove `ratio` of the block's hidden channels in place, lowest importance first.

    Importance: L1 norm of the channel's expand filter times its project weights, i.e.
    how strongly a channel is produced and how strongly it reaches the block output.
    """
    if block.expand is None:
        return  # without an expand conv the hidden channels are the block's inputs
    score = block.expand.conv.weight.abs().sum((1, 2, 3)) * \
        block.project.conv.weight.abs().sum((0, 2, 3))
    keep = torch.sort(torch.topk(score, _keep_count(len(score), ratio)).indices).values
    block.expand.conv = _slice_conv(block.expand.conv, out_idx=keep)
    block.expand.bn = _slice_bn(block.expand.bn, keep)
    block.depthwise.conv = _slice_conv(block.depthwise.conv, out_idx=keep)
    block.depthwise.bn = _slice_bn(block.depthwise.bn, keep)
    block.project.conv = _slice_conv(block.project.conv, in_idx=keep)


@torch.no_grad()
def shrink_conv_chain(model: TinyCNN, ratio: float) -> None:
    """Remove `ratio` of each conv layer's output channels (and the matching inputs after it)."""
    layers: list[ConvBN] = list(model.convs)  # type: ignore[arg-type]
    for i, layer in enumerate(layers):
        score = layer.conv.weight.abs().sum((1, 2, 3))
        keep = torch.sort(torch.topk(score, _keep_count(len(score), ratio)).indices).values
        layer.conv = _slice_conv(layer.conv, out_idx=keep)
        layer.bn = _slice_bn(layer.bn, keep)
        if i + 1 < len(layers):
            layers[i + 1].conv = _slice_conv(layers[i + 1].conv, in_idx=keep)
        else:
            # Pooling keeps channel order, so the classifier's inputs are these channels.
            old = model.classifier
            model.classifier = nn.Linear(len(keep), old.out_features)
            model.classifier.weight.data.copy_(old.weight.detach()[:, keep])
            model.classifier.bias.data.copy_(old.bias.detach())


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset, batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics on the training data (after removing channels)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the whole pass
    model.train()
    x = torch.from_numpy(data.x_train)
    for i in range(0, len(x), batch_size):
        model(x[i:i + batch_size])
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    model.eval()


def _prune_structured(model: nn.Module, data: Dataset, s: Settings,
                      progress: Progress | None) -> nn.Module:
    if not 0.0 <= s["ratio"] < 1.0:
        raise ConfigError(f"prune_structured ratio must be in [0, 1), got {s['ratio']}")
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    if blocks:
        for block in blocks:
            shrink_mbconv(block, s["ratio"])
    elif isinstance(model, TinyCNN):
        shrink_conv_chain(model, s["ratio"])
    else:
        raise ConfigError("prune_structured supports EfficientNet-Lite (MBConv) and tiny_cnn models")
    # Removing channels shifts every later activation: re-estimate BN statistics, refit the
    # classifier on the new features (cheap, cached), then fine-tune the whole network.
    recalibrate_bn(model, data)
    train(model, data, HEAD_REFIT_EPOCHS, seed=s["seed"], freeze_backbone=True)
    train(model, data, s["finetune_epochs"], lr=s["lr"], seed=s["seed"], freeze_bn=True,
          keep_best=True, progress=progress)
    return model


# ---- distillation -------------------------------------------------------------------------

def _distill(teacher: nn.Module, data: Dataset, s: Settings,
             progress: Progress | None) -> nn.Module:
    torch.manual_seed(s["seed"])  # the student's initialisation is part of the recipe
    student = build_model(s["student"], len(data.classes), pretrained=True)
    return train(student, data, s["epochs"], lr=s["lr"], batch_size=s["batch_size"], seed=s["seed"],
                 teacher=teacher, distill_alpha=s["alpha"], distill_temperature=s["temperature"],
                 keep_best=True, progress=progress)


def _reference(model: nn.Module, data: Dataset, s: Settings, progress: Progress | None) -> nn.Module:
    return model


# The behaviour of each recipe named in harness.config.recipes (the one list of names and settings).
RecipeFn = Callable[[nn.Module, Dataset, Settings, Progress | None], nn.Module]
IMPLEMENTATIONS: dict[str, RecipeFn] = {
    "reference": _reference,
    "prune": _prune,
    "prune_structured": _prune_structured,
    "distill": _distill,
}
assert set(IMPLEMENTATIONS) == set(RECIPES), "every configured recipe has one implementation"


def apply_recipe(recipe: str, reference: nn.Module, data: Dataset, settings: Settings | None,
                 progress: Progress | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Compress a deep copy of `reference` with a named recipe; returns (model, info)."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    effective = RECIPES[recipe].resolve(settings)
    model = IMPLEMENTATIONS[recipe](copy.deepcopy(reference), data, effective, progress).eval()
    info = {"params": count_params(model), "sparsity": sparsity(model), "settings": effective,
            "val_accuracy": evaluate(model, data.x_val, data.y_val)}
    return model, info
