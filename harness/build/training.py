"""Fine-tuning, distillation, evaluation and a cached fine-tune for the reference model."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exporters.base import sha256_file
from harness.build.data import Dataset
from harness.build.models import finetune_tail
from harness.errors import ConfigError

Progress = Callable[[str], None]
# Learning rate of unfrozen pretrained layers relative to the head's.
UNFREEZE_LR_FACTOR = 0.01
TRAINABLE = ("auto", "head", "tail", "all")
# Bump when training changes what a given set of arguments produces: old checkpoints go stale.
CACHE_VERSION = 2


def random_flips(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per sample (textures are flip-invariant)."""
    n = x.shape[0]
    h = torch.rand(n, generator=gen) < 0.5
    v = torch.rand(n, generator=gen) < 0.5
    x = torch.where(h[:, None, None, None], x.flip(3), x)
    return torch.where(v[:, None, None, None], x.flip(2), x)


def has_head(model: nn.Module) -> bool:
    """Whether the model splits into features() and a Linear `classifier` (all harness models do)."""
    return isinstance(getattr(model, "classifier", None), nn.Linear) and \
        callable(getattr(model, "features", None))


@torch.inference_mode()
def features(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Backbone features of `x` in eval mode, shape (N, C)."""
    model.eval()
    x = torch.as_tensor(x)
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _train_head(model: nn.Module, data: Dataset, epochs: int, lr: float, batch_size: int,
                gen: torch.Generator, progress: Progress | None) -> nn.Module:
    """Train only the classifier on backbone features computed once (all four flips)."""
    if not has_head(model):
        raise ConfigError("freeze_backbone needs a model with features() and a Linear classifier")
    head: nn.Linear = model.classifier  # type: ignore[assignment]
    x = torch.from_numpy(data.x_train)
    views = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    feats = torch.cat([features(model, v) for v in views])
    labels = torch.from_numpy(data.y_train).repeat(len(views))
    dropout = getattr(model, "dropout", nn.Identity())
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for epoch in range(epochs):
        dropout.train()
        total = 0.0
        order = torch.randperm(len(feats), generator=gen)
        for i in range(0, len(feats), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(head(dropout(feats[idx])), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(f"head epoch {epoch + 1}/{epochs}: loss {total / len(feats):.4f}")
    return model.eval()


def _fit(model: nn.Module, data: Dataset, epochs: int, lr: float, batch_size: int,
         gen: torch.Generator, params: list[nn.Parameter], teacher: nn.Module | None = None,
         alpha: float = 0.7, temperature: float = 4.0, freeze_bn: bool = False,
         keep_best: bool = False, after_step: Callable[[nn.Module], None] | None = None,
         progress: Progress | None = None, label: str = "epoch") -> nn.Module:
    """The training loop over images: only `params` train; see `train` for the options.

    With BatchNorm training, its running statistics are re-estimated before each validation:
    from random weights they lag far behind (eval mode would then predict one class).
    """
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    soft = None
    if teacher is not None:
        # Teacher logits once, on unflipped inputs: the labels are flip-invariant and the
        # teacher is near-invariant, so this saves a teacher forward per batch and epoch.
        soft = torch.from_numpy(predict(teacher, data.x_train, batch_size=128))
    chosen = {id(p) for p in params}
    frozen = [p for p in model.parameters() if id(p) not in chosen and p.requires_grad]
    for p in frozen:  # no gradients, and no backward pass through a frozen trunk
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=lr)
    t = temperature
    best = (evaluate(model, data.x_val, data.y_val), copy.deepcopy(model.state_dict())) \
        if keep_best else None
    for epoch in range(epochs):
        model.train()
        if freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        total = 0.0
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            logits = model(random_flips(x[idx], gen))
            loss = F.cross_entropy(logits, y[idx])
            if soft is not None:
                kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(soft[idx] / t, 1),
                              reduction="batchmean")
                loss = alpha * t * t * kd + (1 - alpha) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += float(loss.detach()) * len(idx)
        message = f"{label} {epoch + 1}/{epochs}: loss {total / len(x):.4f}"
        if best is not None and not freeze_bn:
            recalibrate_bn(model, x)
        if best is not None:
            val = evaluate(model, data.x_val, data.y_val)
            message += f", val accuracy {val:.3f}"
            if val > best[0]:  # on a tie, keep the less-trained state
                best = (val, copy.deepcopy(model.state_dict()))
        if progress:
            progress(message)
    for p in frozen:
        p.requires_grad_(True)
    if best is not None:
        model.load_state_dict(best[1])
    return model.eval()


def _transfer(model: nn.Module, data: Dataset, epochs: int, unfreeze_epochs: int, lr: float,
              batch_size: int, gen: torch.Generator, progress: Progress | None, pretrained: bool = True,
              trainable: str = "auto", freeze_bn: bool | None = None,
              lr_factor: float = UNFREEZE_LR_FACTOR) -> nn.Module:
    """Transfer learning from pretrained weights, or training from random weights (see `train`)."""
    plan = training_plan(model, pretrained, trainable, freeze_bn)
    # Unfrozen pretrained layers need smaller steps than a fresh head.
    tail_lr = lr * lr_factor if pretrained else lr
    if plan["trainable"] == "all":
        return _fit(model, data, epochs + unfreeze_epochs, tail_lr, batch_size, gen, list(model.parameters()),
                    freeze_bn=plan["bn_frozen"], keep_best=True, progress=progress)
    _train_head(model, data, epochs, lr, batch_size, gen, progress)
    if unfreeze_epochs == 0 or plan["trainable"] == "head":
        return model
    tail = finetune_tail(model)
    params = [p for m in tail for p in m.parameters()] if tail else list(model.parameters())
    return _fit(model, data, unfreeze_epochs, tail_lr, batch_size, gen, params, freeze_bn=plan["bn_frozen"],
                keep_best=True, progress=progress, label="unfrozen epoch")


def training_plan(model: nn.Module, pretrained: bool, trainable: str = "auto",
                  freeze_bn: bool | None = None) -> dict[str, Any]:
    """What transfer training does with this model (which parameters, BatchNorm), also in words."""
    if trainable not in TRAINABLE:
        raise ConfigError(f"finetune.train must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    if trainable == "auto":
        trainable = "tail" if pretrained and has_head(model) else "all"
    if trainable in ("head", "tail") and not has_head(model):
        raise ConfigError(f"finetune.train = {trainable!r} needs a model with features() and a Linear "
                          f"classifier; use 'all'")
    # BN statistics of pretrained layers stay fixed (a few small batches of one task would
    # overwrite ImageNet's); a network from random weights must learn them.
    bn_frozen = bool(pretrained if freeze_bn is None else freeze_bn)
    what = {"head": "classifier only, on frozen features", "tail": "classifier, then the last blocks unfrozen",
            "all": "the whole network"}[trainable]
    origin = "fine-tuned from pretrained weights" if pretrained else "trained from random weights"
    return {"pretrained": pretrained, "trainable": trainable, "bn_frozen": bn_frozen,
            "text": f"{origin}: {what}; BatchNorm statistics {'frozen' if bn_frozen else 'trained'}"}


def train(model: nn.Module, data: Dataset, epochs: int, lr: float = 1e-3, batch_size: int = 32,
          seed: int = 0, freeze_backbone: bool = False, teacher: nn.Module | None = None,
          distill_alpha: float = 0.7, distill_temperature: float = 4.0,
          progress: Progress | None = None, unfreeze_epochs: int | None = None,
          freeze_bn: bool | None = None, keep_best: bool = False,
          after_step: Callable[[nn.Module], None] | None = None, pretrained: bool = True,
          trainable: str = "auto", lr_factor: float = UNFREEZE_LR_FACTOR) -> nn.Module:
    """Train `model` in place on data.x_train (seeded, flip augmentation); returns it in eval mode.

    `freeze_backbone`: only the classifier trains, on cached features. `unfreeze_epochs=k`
    (transfer learning): `epochs` of the head, then k epochs with the last blocks unfrozen at
    lr/100, keeping the best state on validation. With `teacher`: loss = alpha*T^2*KL(teacher
    || student at temperature T) + (1-alpha)*CE. `pretrained=False` (with `unfreeze_epochs`): the
    whole network trains at `lr`, BatchNorm included; `trainable` ("auto", "head", "tail", "all")
    picks the parameters, `lr_factor` the pretrained layers' relative learning rate. `freeze_bn` keeps
    BatchNorm statistics fixed (None: fixed only when transferring pretrained weights);
    `keep_best` restores the state (initial or after an epoch) with the best validation
    accuracy; `after_step(model)` runs after each optimizer step (pruning masks).
    """
    if epochs < 0 or batch_size < 1 or lr <= 0 or (unfreeze_epochs or 0) < 0:
        raise ConfigError(f"bad training settings: epochs={epochs} unfreeze_epochs={unfreeze_epochs} "
                          f"batch_size={batch_size} lr={lr}")
    if teacher is not None and (freeze_backbone or unfreeze_epochs is not None):
        raise ConfigError("distillation trains the whole student; drop freeze_backbone/unfreeze_epochs")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if unfreeze_epochs is not None:
        return _transfer(model, data, epochs, unfreeze_epochs, lr, batch_size, gen, progress, pretrained,
                         trainable, freeze_bn, lr_factor)
    if freeze_backbone:
        return _train_head(model, data, epochs, lr, batch_size, gen, progress)
    return _fit(model, data, epochs, lr, batch_size, gen, list(model.parameters()), teacher,
                distill_alpha, distill_temperature, bool(freeze_bn), keep_best, after_step, progress)


@torch.inference_mode()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of `model` (put in eval mode) on `x`, float32 (N, classes)."""
    model.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    out = [model(xt[i:i + batch_size]) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> float:
    """Top-1 accuracy of `model` on (x, y)."""
    if len(x) == 0:
        return float("nan")
    return float((predict(model, x, batch_size).argmax(1) == np.asarray(y)).mean())


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics on `x` (training data), cumulatively over one pass."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    x = torch.as_tensor(x)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the whole pass
    model.train()
    for i in range(0, len(x), batch_size):
        if len(x[i:i + batch_size]) > 1:
            model(x[i:i + batch_size])
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    model.eval()


def pixel_baseline_accuracy(data: Dataset, steps: int = 300, weight_decay: float = 1e-3) -> float:
    """Test accuracy of logistic regression on raw standardised pixels: the no-transfer floor."""
    torch.manual_seed(0)
    x = torch.from_numpy(data.x_train.reshape(len(data.x_train), -1))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    y = torch.from_numpy(data.y_train)
    lin = nn.Linear(x.shape[1], len(data.classes))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(lin(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        xt = (torch.from_numpy(data.x_test.reshape(len(data.x_test), -1)) - mean) / std
        return float((lin(xt).argmax(1).numpy() == data.y_test).mean())



def cache_key(key_parts: dict[str, Any], data: Dataset, train_kwargs: dict[str, Any]) -> str:
    """Hash of what determines a fine-tuned checkpoint: caller's parts, data, train settings."""
    keyed = {k: v for k, v in train_kwargs.items() if k != "progress"}
    try:
        text = json.dumps({"parts": key_parts, "data": data.fingerprint(), "train": keyed,
                           "version": CACHE_VERSION}, sort_keys=True)
    except TypeError as e:
        # A teacher or callback has no stable identity to key on; a bug in the caller.
        raise TypeError(f"finetune_cached keys only JSON values: {e}") from e
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def finetune_cached(build: Callable[[], nn.Module], data: Dataset, cache_dir: Path,
                    key_parts: dict[str, Any], trainer: Callable[..., Any] | None = None,
                    **train_kwargs: Any) -> tuple[nn.Module, str]:
    """Build and train a model (with `trainer`, default `train`), or load it from `cache_dir/<key>.pt`;
    returns (model, ckpt sha256). A different trainer must put its name in `key_parts`."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cache_key(key_parts, data, train_kwargs)}.pt"
    # Seed before building too, so a fresh head's initialisation is part of what the key fixes.
    torch.manual_seed(train_kwargs.get("seed", 0))
    model = build()
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval(), sha256_file(path)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
            torch.manual_seed(train_kwargs.get("seed", 0))
            model = build()  # a truncated or stale checkpoint: retrain and overwrite it
    (trainer or train)(model, data, **train_kwargs)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return model.eval(), sha256_file(path)
