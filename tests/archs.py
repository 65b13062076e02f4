"""Two small architectures written for the tests, unlike the built-in ones: a ResNet-style net with residual
adds, and a MobileNetV2-style net with depthwise convolutions, inverted residuals, a squeeze-excite gate and a
concatenation. Both are factories as a user writes them: `build(num_classes=N)`."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=False)) if act else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual add (a 1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), _conv_bn(cout, cout, 3, act=False))
        self.skip = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride, act=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.skip(x))


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = _conv_bn(3, width, 3, 2)
        self.layer1 = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, width, 1))
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> squeeze-excite -> project 1x1, with a residual add at stride 1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn(cin, hidden, 1)
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = SqueezeExcite(hidden, max(4, hidden // 8))
        self.project = _conv_bn(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.se(self.depthwise(self.expand(x))))
        return x + h if self.residual else h


class TinyMobileNetV2(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2)
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                                    InvertedResidual(24, 24, 1))
        self.side = _conv_bn(16, 8, 3, 2)  # a branch from the stem, concatenated before the head
        self.head = _conv_bn(24 + 8, 64, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        h = torch.cat([self.blocks(s), self.side(s)], dim=1)
        return self.classifier(torch.flatten(self.pool(self.head(h)), 1))


def resnet(num_classes: int) -> nn.Module:
    """The ResNet-style factory."""
    return TinyResNet(num_classes)


def mobilenet(num_classes: int) -> nn.Module:
    """The MobileNetV2-style factory."""
    return TinyMobileNetV2(num_classes)


def untrainable(num_classes: int) -> nn.Module:
    """A net that cannot learn: every weight frozen at zero-ish init (outputs constant)."""
    model = TinyResNet(num_classes)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
