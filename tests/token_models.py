"""A two-input token model (int64 ids + mask) and a user metric, named by tests as `token_models:...`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB, WIDTH, CLASSES = 64, 12, 3


class BagOfTokens(nn.Module):
    """Embeddings averaged over the attention mask, then a linear classifier."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)[..., None]
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(pooled)  # type: ignore[no-any-return]


def bag_of_tokens(num_classes: int) -> nn.Module:
    return BagOfTokens(num_classes)


def worst_recall(outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """A user metric: the recall of the worst class (decides), and the mean recall beside it."""
    pred = outputs.argmax(1)
    recalls = [float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)]
    return {"worst_recall": min(recalls), "mean_recall": float(np.mean(recalls))}


def broken_metric(outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    raise ValueError("no scores today")


def write_token_npz(path: Path, seed: int = 0, n: tuple[int, int, int] = (240, 60, 120)) -> Path:
    """Sentences of 3..12 token ids; each class draws most tokens from its own range. Padded with 0."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        y = rng.integers(0, CLASSES, count)
        ids = np.zeros((count, WIDTH), dtype=np.int64)
        mask = np.zeros((count, WIDTH), dtype=np.int64)
        for i, c in enumerate(y):
            length = int(rng.integers(3, WIDTH + 1))
            own = rng.integers(1 + 20 * c, 1 + 20 * (c + 1), length)
            noise = rng.integers(1, VOCAB, length)
            ids[i, :length] = np.where(rng.random(length) < 0.6, own, noise)
            mask[i, :length] = 1
        arrays.update({f"input_ids_{split}": ids, f"attention_mask_{split}": mask, f"y_{split}": y})
    np.savez(path, **arrays)
    return path


def declared_224(num_classes: int) -> nn.Module:
    """A small CNN that says it was trained at 224x224 (as a user's checkpointed model might)."""
    from harness.build.models import TinyCNN

    model = TinyCNN(num_classes)
    model.input_size = 224  # type: ignore[assignment]
    return model


def regressor(num_classes: int) -> nn.Module:
    """Four features -> one value (num_classes is 1 for one regression target)."""
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, num_classes))


def write_regression_npz(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w = np.array([1.5, -2.0, 0.5, 3.0], dtype=np.float32)
    arrays = {}
    for split, n in (("train", 300), ("val", 60), ("test", 80)):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = (x @ w + 0.1 * rng.normal(size=n)).astype(np.float32)
    np.savez(path, **arrays)
    return path
