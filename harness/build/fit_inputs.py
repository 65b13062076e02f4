"""Training and inference for models that take several named inputs (token ids, masks, any dtype).

The image trainer (training.py) augments with flips and feeds one NCHW tensor; here samples are dicts of
arrays fed as positional arguments in order, with no augmentation. Same shape of recipe: with a
`features(*inputs)` / Linear `classifier` split and pretrained weights, the head trains first on features
computed once, then (unfreeze_epochs) the whole network gently; otherwise the whole network trains. The
state with the best validation score is kept. Class labels train with cross-entropy, values with MSE.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.build import samples as S
from harness.build import training as T
from harness.build.data import Dataset
from harness.build.models import finetune_tail

Progress = Callable[[str], None]


def _tensors(x: S.Samples) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in S.arrays(x)]


@torch.inference_mode()
def predict_any(model: nn.Module, x: S.Samples, batch_size: int = 64) -> np.ndarray:
    """Outputs of `model` (eval mode) on one array (images) or named inputs, float32 (N, ...)."""
    if not S.is_named(x):
        return T.predict(model, x, batch_size)
    model.eval()
    return _by_length(model, x, batch_size).numpy().astype(np.float32)


def _by_length(model: Any, x: S.Samples, batch_size: int) -> torch.Tensor:
    """`model(*inputs)` over batches of similar length, each trimmed to its longest sample (padding is masked
    out, so the outputs are those at full width, 4x sooner for short sentences), in the samples' order."""
    lens = S.lengths(x)
    order = np.argsort(lens, kind="stable") if lens is not None else np.arange(S.count(x))
    seq = set(S.sequence_inputs(x))
    outs = []
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        width = int(lens[idx].max()) if lens is not None else None
        batch = [torch.from_numpy(np.ascontiguousarray(a[idx][:, :width] if k in seq else a[idx]))
                 for k, a in S.feeds(x).items()]
        outs.append(model(*batch))
    out = torch.cat(outs)
    return out[torch.from_numpy(np.argsort(order, kind="stable"))]


def score_any(model: nn.Module, x: S.Samples, y: np.ndarray) -> float:
    """Top-1 for class labels; minus the MSE for values (so that higher is better for both)."""
    out = predict_any(model, x)
    if y.dtype.kind == "f":
        return -float(np.mean((out.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2))
    return float(np.mean(out.reshape(len(y), -1).argmax(1) == y))


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dtype.is_floating_point:
        return F.mse_loss(out.reshape(len(y), -1), y.reshape(len(y), -1))
    return F.cross_entropy(out, y)


def _epochs(step: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor], inputs: list[torch.Tensor],
            y: torch.Tensor, epochs: int, batch_size: int, gen: torch.Generator, opt: torch.optim.Optimizer,
            validate: Callable[[], float], keep: nn.Module, progress: Progress | None, label: str) -> None:
    """Mini-batch epochs of `step`; after each, validate and keep `keep`'s best state (ties: the earlier)."""
    best = (validate(), copy.deepcopy(keep.state_dict()))
    for epoch in range(epochs):
        total = 0.0
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            loss = _loss(step([t[idx] for t in inputs], y[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        val = validate()
        if progress:
            progress(f"{label} {epoch + 1}/{epochs}: loss {total / len(y):.4f}, val score {val:.3f}")
        if val > best[0]:
            best = (val, copy.deepcopy(keep.state_dict()))
    keep.load_state_dict(best[1])


def _features(model: nn.Module, x: S.Samples, batch_size: int = 64) -> torch.Tensor:
    """model.features on every sample (eval mode, no gradients), as a plain tensor the head can train on."""
    model.eval()
    with torch.inference_mode():
        out = _by_length(model.features, x, batch_size)
    return out.clone()  # out of inference mode


def train_inputs(model: nn.Module, data: Dataset, epochs: int, unfreeze_epochs: int = 0, lr: float = 1e-3,
                 batch_size: int = 32, seed: int = 0, progress: Progress | None = None, pretrained: bool = True,
                 lr_factor: float = T.UNFREEZE_LR_FACTOR, trainable: str = "auto") -> nn.Module:
    """Train a named-input model in place (seeded); returns it in eval mode (see the module docstring)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(data.y_train)
    inputs = _tensors(data.x_train)
    head = T.has_head(model) and pretrained and trainable in ("auto", "head", "tail")
    if head:
        classifier: nn.Linear = model.classifier  # type: ignore[assignment]
        feats, val_feats = _features(model, data.x_train), _features(model, data.x_val)
        dropout = getattr(model, "dropout", nn.Identity())

        def head_step(batch: list[torch.Tensor], _: torch.Tensor) -> torch.Tensor:
            dropout.train()
            return classifier(dropout(batch[0]))  # type: ignore[no-any-return]

        @torch.inference_mode()
        def head_score() -> float:  # on the validation features, computed once like the training ones
            out = classifier(val_feats).numpy()
            if data.y_val.dtype.kind == "f":
                return -float(np.mean((out.reshape(len(out), -1) - data.y_val.reshape(len(out), -1)) ** 2))
            return float(np.mean(out.argmax(1) == data.y_val))
        _epochs(head_step, [feats], y, epochs, batch_size, gen, torch.optim.Adam(classifier.parameters(), lr=lr),
                head_score, classifier, progress, "head epoch")
        if unfreeze_epochs == 0 or trainable == "head":
            return model.eval()
    rounds = unfreeze_epochs if head else epochs + unfreeze_epochs
    step_lr = lr * lr_factor if pretrained else lr

    def step(batch: list[torch.Tensor], _: torch.Tensor) -> torch.Tensor:
        model.train()
        return model(*batch)  # type: ignore[no-any-return]
    tail = finetune_tail(model) if head else None  # after the head: the last blocks, as the plan says
    params = [p for m in tail for p in m.parameters()] if tail else list(model.parameters())
    chosen = {id(p) for p in params}
    frozen = [p for p in model.parameters() if id(p) not in chosen and p.requires_grad]
    for p in frozen:  # no backward pass through the frozen trunk (MiniLM's embeddings are most of it)
        p.requires_grad_(False)
    try:
        _epochs(step, inputs, y, rounds, batch_size, gen, torch.optim.Adam(params, lr=step_lr),
                lambda: score_any(model, data.x_val, data.y_val), model, progress,
                "unfrozen epoch" if head else "epoch")
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return model.eval()


def finetune_inputs_cached(build: Callable[[], nn.Module], data: Dataset, cache_dir: Path,
                           key_parts: dict[str, Any], **train_kwargs: Any) -> tuple[nn.Module, str]:
    """Build and train a named-input model, or load it from `cache_dir/<key>.pt`; (model, checkpoint sha256)."""
    return T.finetune_cached(build, data, cache_dir, {**key_parts, "trainer": "inputs"}, trainer=train_inputs,
                             **train_kwargs)
