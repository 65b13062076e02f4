"""Model definitions: the pretrained EfficientNet-Lite0 mapping, the registry, the counters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.build.models import (
    MBConv,
    build_model,
    count_params,
    efficientnet_lite0,
    map_reference_key,
    pretrained_weights_path,
    sparsity,
    student_model,
)
from harness.errors import ConfigError


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    return torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)


def test_pretrained_loads_every_backbone_tensor(reference_state) -> None:
    model = efficientnet_lite0(num_classes=3, pretrained=True)
    ours = model.state_dict()
    backbone = [k for k in reference_state if not k.startswith("_fc.")]
    assert len(backbone) == len(ours) - 2  # all but the fresh classifier weight and bias
    for key in backbone:
        assert torch.equal(ours[map_reference_key(key)], reference_state[key]), key
    assert torch.equal(model.blocks[15].project.conv.weight,
                       reference_state["_blocks.15._project_conv.weight"])
    assert model.classifier.weight.shape == (3, 1280)


def test_lite0_architecture_matches_reference(reference_state) -> None:
    model = efficientnet_lite0(num_classes=1000, pretrained=False)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {map_reference_key(k): tuple(v.shape) for k, v in reference_state.items()}
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    assert len(blocks) == 16 and blocks[0].expand is None and blocks[1].hidden_channels == 96


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite0_student", "tiny_cnn"])
def test_registry_models_classify(name: str) -> None:
    model = build_model(name, num_classes=5, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
        assert model.features(torch.randn(1, 3, 32, 32)).shape[0] == 1


def test_student_is_clearly_smaller() -> None:
    big = count_params(efficientnet_lite0(3, pretrained=False))
    small = count_params(student_model(3))
    assert small < big / 4
    assert count_params(build_model("tiny_cnn", 3)) < small


def test_registry_and_options_errors() -> None:
    with pytest.raises(ConfigError, match="tiny_cnn"):
        build_model("resnet50", 3)
    with pytest.raises(ConfigError, match="pretrained"):
        efficientnet_lite0(3, pretrained=True, width_mult=0.5)


def test_count_params_and_sparsity() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
    assert count_params(model) == (2 + 2) + (2 + 2) + (4 + 2)
    with torch.no_grad():
        model[0].weight.zero_()
        model[3].weight[0].zero_()
    # zeros among conv/linear weights only: 2 + 2 of 2 + 4
    assert sparsity(model) == pytest.approx(4 / 6)
