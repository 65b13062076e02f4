"""Training helpers and compression recipes on tiny data and tiny models."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.build.data import Dataset, load_textures
from harness.build.models import MBConv, build_model, count_params
from harness.build.pruning import count_macs_params
from harness.build.recipes import RECIPES, apply_recipe, check_recipe, global_magnitude_masks
from harness.build.training import (
    evaluate,
    finetune_cached,
    pixel_baseline_accuracy,
    predict,
    train,
)
from harness.errors import ConfigError


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_textures(patch=32, per_class=60)


@pytest.fixture(scope="module")
def data64() -> Dataset:
    # The pretrained backbone needs >= ~48 px: at 32 px its 1x1 final map is all zeros.
    return load_textures(patch=64, per_class=20)


def _tiny_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny_cnn", 3)


@pytest.fixture(scope="module")
def tiny(data: Dataset) -> torch.nn.Module:
    return train(_tiny_cnn(), data, epochs=8, lr=3e-3, batch_size=16, seed=0)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---- training ------------------------------------------------------------------------------

def test_train_is_seeded_and_learns(data: Dataset, tiny: torch.nn.Module) -> None:
    again = train(_tiny_cnn(), data, epochs=8, lr=3e-3, batch_size=16, seed=0)
    assert np.allclose(predict(again, data.x_val), predict(tiny, data.x_val), atol=1e-5)
    assert evaluate(tiny, data.x_train, data.y_train) > 0.6
    logits = predict(tiny, data.x_test)
    assert logits.shape == (len(data.x_test), 3) and logits.dtype == np.float32


def test_keep_best_restores_the_best_validation_state(data: Dataset, tiny: torch.nn.Module) -> None:
    model = copy.deepcopy(tiny)
    start = evaluate(model, data.x_val, data.y_val)
    messages: list[str] = []
    # A learning rate this large wrecks the weights; keep_best must hand back a good state.
    train(model, data, epochs=2, lr=5.0, keep_best=True, progress=messages.append)
    assert evaluate(model, data.x_val, data.y_val) >= start
    assert all("val accuracy" in m for m in messages) and len(messages) == 2


def test_freeze_backbone_trains_only_the_classifier(data: Dataset) -> None:
    model = build_model("tiny_cnn", 3)
    before = _state(model)
    messages: list[str] = []
    train(model, data, epochs=2, freeze_backbone=True, progress=messages.append)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert len(messages) == 2


def test_unfreeze_epochs_trains_head_then_only_the_tail(data: Dataset) -> None:
    model = _tiny_cnn()
    before = _state(model)
    messages: list[str] = []
    train(model, data, epochs=2, lr=3e-3, unfreeze_epochs=1, progress=messages.append)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"classifier.weight", "classifier.bias"} <= changed
    # the trunk and every BN statistic stay as they were; only convs[-1] may also move
    assert all(k.startswith(("classifier.", "convs.2.conv.", "convs.2.bn.weight", "convs.2.bn.bias"))
               for k in changed)
    assert all(p.requires_grad for p in model.parameters())
    assert [m.split(":")[0] for m in messages] == ["head epoch 1/2", "head epoch 2/2",
                                                   "unfrozen epoch 1/1"]


def test_unfreeze_epochs_on_a_model_without_head_split(data: Dataset) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    train(model, data, epochs=1, unfreeze_epochs=1)
    assert predict(model, data.x_val).shape == (len(data.x_val), 3)


def test_pretrained_head_beats_pixel_baseline(data64: Dataset) -> None:
    model = train(build_model("efficientnet_lite0", 3), data64, epochs=20, freeze_backbone=True)
    accuracy = evaluate(model, data64.x_test, data64.y_test)
    assert accuracy >= 0.9 and accuracy > pixel_baseline_accuracy(data64)


def test_finetune_cached_reuses_checkpoint(data: Dataset, tmp_path: Path) -> None:
    builds: list[int] = []

    def build() -> torch.nn.Module:
        builds.append(1)
        return build_model("tiny_cnn", 3)

    first, sha1 = finetune_cached(build, data, tmp_path, {"model": "tiny_cnn"}, epochs=1)
    second, sha2 = finetune_cached(build, data, tmp_path, {"model": "tiny_cnn"}, epochs=1,
                                   progress=print)
    assert sha1 == sha2 and len(sha1) == 64 and len(list(tmp_path.glob("*.pt"))) == 1
    assert np.array_equal(predict(first, data.x_val), predict(second, data.x_val))
    _, sha3 = finetune_cached(build, data, tmp_path, {"model": "tiny_cnn"}, epochs=2)
    assert len(list(tmp_path.glob("*.pt"))) == 2 and not list(tmp_path.glob("*.tmp"))
    assert len(builds) == 3


# ---- recipes --------------------------------------------------------------------------------

def test_reference_recipe_copies(data: Dataset, tiny: torch.nn.Module) -> None:
    model, info = apply_recipe("reference", tiny, data, {})
    assert model is not tiny
    assert info["params"] == count_params(tiny) and info["settings"] == {}
    assert info["val_accuracy"] == evaluate(tiny, data.x_val, data.y_val)


def test_prune_hits_sparsity_and_zeros_stay_zero(data: Dataset, tiny: torch.nn.Module) -> None:
    before = _state(tiny)
    masks = global_magnitude_masks(copy.deepcopy(tiny), 0.6)
    model, info = apply_recipe("prune", tiny, data, {"sparsity": 0.6, "finetune_epochs": 1,
                                                     "lr": 1e-3})
    assert info["sparsity"] == pytest.approx(0.6, abs=0.02)
    assert info["settings"] == {"sparsity": 0.6, "finetune_epochs": 1, "lr": 1e-3, "seed": 0}
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    originals = [m.weight.detach() for m in tiny.modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer, keep in zip(layers, masks, strict=True):
        assert not layer.weight[~keep].any()  # pruned entries are still exactly zero
        assert not layer._forward_pre_hooks  # plain weights, no pruning reparametrisation
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    # fine-tuning moved the surviving weights, and the reference was not touched
    assert any(not torch.equal(layer.weight[keep], w[keep])
               for layer, w, keep in zip(layers, originals, masks, strict=True))
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())


def test_prune_structured_shrinks_tiny_cnn(data: Dataset, tiny: torch.nn.Module) -> None:
    model, info = apply_recipe("prune_structured", tiny, data, {"ratio": 0.5,
                                                                "finetune_epochs": 1})
    assert info["params"] < 0.5 * count_params(tiny)
    assert [layer.conv.out_channels for layer in model.convs] == [8, 16, 32]
    x = torch.from_numpy(data.x_test[:4])
    assert model(x).shape == tiny(x).shape == (4, 3)


def test_prune_structured_keeps_mbconv_blocks_consistent(data: Dataset) -> None:
    reference = build_model("efficientnet_lite0_student", 3).eval()
    model, info = apply_recipe("prune_structured", reference, data, {"finetune_epochs": 0})
    old = [b for b in reference.modules() if isinstance(b, MBConv)]
    new = [b for b in model.modules() if isinstance(b, MBConv)]
    for a, b in zip(old, new, strict=True):
        assert b.hidden_channels < a.hidden_channels
        assert b.depthwise.conv.groups == b.depthwise.conv.out_channels == b.hidden_channels  # still depthwise
        if b.expand is not None:
            assert b.expand.conv.out_channels == b.hidden_channels == b.project.conv.in_channels
    assert model.classifier.out_features == 3
    assert info["params"] < 0.5 * count_params(reference)
    with torch.no_grad():
        assert model(torch.from_numpy(data.x_test[:2])).shape == (2, 3)


@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_prune_structured_to_a_macs_budget(data: Dataset, tiny: torch.nn.Module, importance: str) -> None:
    example = torch.from_numpy(data.x_test[:1])
    macs0, _ = count_macs_params(tiny, example)
    model, _ = apply_recipe("prune_structured", tiny, data, {"macs_fraction": 0.4, "importance": importance,
                                                             "finetune_epochs": 0})
    macs, _ = count_macs_params(model, example)
    assert 0.2 * macs0 < macs <= 0.4 * macs0


def test_distill_into_a_users_student(data: Dataset, tiny: torch.nn.Module) -> None:
    model, info = apply_recipe("distill", tiny, data, {"student": "archs:resnet", "epochs": 1})
    assert type(model).__name__ == "TinyResNet" and info["settings"]["student"] == "archs:resnet"
    with pytest.raises(ConfigError, match="archs:nothing"):
        check_recipe("distill", tiny, data, {"student": "archs:nothing"})


def test_distill_gives_smaller_student(data64: Dataset) -> None:
    teacher = train(build_model("efficientnet_lite0", 3), data64, epochs=5, freeze_backbone=True)
    model, info = apply_recipe("distill", teacher, data64, {"epochs": 1})
    assert info["params"] < count_params(teacher) / 4
    assert info["settings"]["student"] == "efficientnet_lite0_student"
    assert 0.0 <= info["val_accuracy"] <= 1.0


def test_recipe_errors(data: Dataset, tiny: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match="prune_structured"):
        apply_recipe("quantize_magic", tiny, data, {})
    with pytest.raises(ConfigError, match="'amount'"):
        apply_recipe("prune", tiny, data, {"amount": 0.5})
    with pytest.raises(ConfigError, match="'sparsity'"):
        apply_recipe("prune", tiny, data, {"sparsity": "half"})
    with pytest.raises(ConfigError, match="sparsity"):
        apply_recipe("prune", tiny, data, {"sparsity": 1.5})
    with pytest.raises(ConfigError, match="'student' must be one of"):
        apply_recipe("distill", tiny, data, {"student": "nope"})
    with pytest.raises(ConfigError, match="cannot reach the budget"):
        apply_recipe("prune_structured", tiny, data, {"macs_fraction": 0.001, "finetune_epochs": 0})
    assert set(RECIPES) == {"reference", "prune", "prune_structured", "distill", "qat", "mixed_precision"}
