"""Compression recipes: the function behind each recipe that harness.config.recipes names.

`apply_recipe` never touches the reference: each recipe works on a deep copy and returns a
plain nn.Module (no pruning reparametrisations) that exports like the original; `qat` returns
its converted int8 graph wrapped as a module. `check_recipe` runs before any training.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from harness.build.data import Dataset
from harness.build.fit_inputs import score_any
from harness.build.models import MODELS, build_model, count_params, sparsity
from harness.build.pruning import prune_channels
from harness.build.qat import quantization_aware_training
from harness.build.sensitivity import layer_sensitivity
from harness.build.training import Progress, has_head, recalibrate_bn, train
from harness.build.user_model import check_fits_data, import_factory
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

def _example(data: Dataset) -> torch.Tensor:
    return torch.from_numpy(data.x_train[:1])


def _prune_structured(model: nn.Module, data: Dataset, s: Settings,
                      progress: Progress | None) -> nn.Module:
    torch.manual_seed(s["seed"])
    batch = (torch.from_numpy(data.x_train[:64]), torch.from_numpy(data.y_train[:64]))
    counts = prune_channels(model, _example(data), s["ratio"], s["importance"], s["macs_fraction"],
                            s["params_fraction"], batch=batch)
    if progress:
        progress(f"pruned channels: MACs {counts['macs_before']:,} -> {counts['macs_after']:,}, "
                 f"params {counts['params_before']:,} -> {counts['params_after']:,}")
    # Removing channels shifts every later activation: re-estimate BN statistics, refit the
    # classifier on the new features (cheap, cached) where the model has that split, then
    # fine-tune the whole network.
    recalibrate_bn(model, data.x_train)
    if has_head(model):
        train(model, data, HEAD_REFIT_EPOCHS, seed=s["seed"], freeze_backbone=True)
    train(model, data, s["finetune_epochs"], lr=s["lr"], seed=s["seed"], freeze_bn=True,
          keep_best=True, progress=progress)
    return model


# ---- distillation -------------------------------------------------------------------------

def build_student(s: Settings, teacher: nn.Module, data: Dataset) -> nn.Module:
    """The student a distill recipe trains: built-in, a user's factory, or the pruned teacher."""
    torch.manual_seed(s["seed"])  # the student's initialisation is part of the recipe
    name, n = s["student"], len(data.classes)
    if name == "pruned":
        student = copy.deepcopy(teacher)
        prune_channels(student, _example(data), s["student_ratio"])
        recalibrate_bn(student, data.x_train)
        return student
    if ":" in name:
        try:
            factory = import_factory(name)
        except ConfigError as e:
            raise ConfigError(f"distill student {name}: {str(e).removeprefix('model.factory: ')}") from None
        try:
            student = factory(num_classes=n)
        except Exception as e:  # noqa: BLE001 - the user's code: one line naming it
            raise ConfigError(f"distill student {name} raised {type(e).__name__}: {e}") from None
        if not isinstance(student, nn.Module):
            raise ConfigError(f"distill student {name} returned {type(student).__name__}, not a torch.nn.Module")
    else:
        student = build_model(name, n, pretrained=True)
    check_fits_data(student, data, f"distill student {name}")
    return student.train()


def _distill(teacher: nn.Module, data: Dataset, s: Settings,
             progress: Progress | None) -> nn.Module:
    student = build_student(s, teacher, data)
    return train(student, data, s["epochs"], lr=s["lr"], batch_size=s["batch_size"], seed=s["seed"],
                 teacher=teacher, distill_alpha=s["alpha"], distill_temperature=s["temperature"],
                 keep_best=True, progress=progress)


# ---- quantization -------------------------------------------------------------------------

def _qat(model: nn.Module, data: Dataset, s: Settings, progress: Progress | None) -> nn.Module:
    return quantization_aware_training(model, data, s, progress)


def _mixed_precision(model: nn.Module, data: Dataset, s: Settings, progress: Progress | None) -> nn.Module:
    """The model unchanged; its per-layer sensitivity and float layers go to `info` (see apply_recipe)."""
    return model


def _reference(model: nn.Module, data: Dataset, s: Settings, progress: Progress | None) -> nn.Module:
    return model


def sensitivity_info(model: nn.Module, data: Dataset, s: Settings) -> dict[str, Any]:
    """Per-layer int8 sensitivity on validation samples and the layers a mixed variant keeps float."""
    x_eval, y_eval = data.x_val[: s["samples"]], data.y_val[: s["samples"]]
    if len(x_eval) == 0:
        x_eval, y_eval = data.x_train[: s["samples"]], data.y_train[: s["samples"]]
    rows = layer_sensitivity(model, data.x_train[:64], x_eval, y_eval)
    keep = [r["layer"] for r in rows[: s["float_layers"]]]
    for r in rows:
        r["kept_float"] = r["layer"] in keep
    return {"sensitivity": rows, "float_layers": keep}


# The behaviour of each recipe named in harness.config.recipes (the one list of names and settings).
RecipeFn = Callable[[nn.Module, Dataset, Settings, Progress | None], nn.Module]
IMPLEMENTATIONS: dict[str, RecipeFn] = {
    "reference": _reference,
    "prune": _prune,
    "prune_structured": _prune_structured,
    "distill": _distill,
    "qat": _qat,
    "mixed_precision": _mixed_precision,
}
assert set(IMPLEMENTATIONS) == set(RECIPES), "every configured recipe has one implementation"
assert set(RECIPES["distill"].choices["student"]) == {*MODELS, "pruned"}, "students are the built-in models"


def apply_recipe(recipe: str, reference: nn.Module, data: Dataset, settings: Settings | None,
                 progress: Progress | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Compress a deep copy of `reference` with a named recipe; returns (model, info)."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    effective = RECIPES[recipe].resolve(settings)
    model = IMPLEMENTATIONS[recipe](copy.deepcopy(reference), data, effective, progress).eval()
    info = {"params": count_params(model), "sparsity": sparsity(model), "settings": effective,
            "val_accuracy": score_any(model, data.x_val, data.y_val)}  # one array or named inputs
    if recipe == "mixed_precision":
        info.update(sensitivity_info(model, data, effective))
    return model, info


def check_recipe(recipe: str, reference: nn.Module, data: Dataset, settings: Settings | None) -> Settings:
    """What can be checked before any training: the settings, and that a distill student builds and fits."""
    effective = RECIPES[recipe].resolve(settings)
    if recipe == "distill" and effective["student"] != "pruned":
        build_student(effective, reference, data)
    return effective
