"""The reference model: built (a built-in network or the user's factory), trained, and judged against chance.

Whether the model starts from pretrained weights decides how it trains: pretrained networks are
fine-tuned gently with BatchNorm statistics frozen; a network from random weights trains whole,
BatchNorm included. The report says which (`task.training`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from exporters.base import sha256_file
from harness.build import models as M
from harness.build import samples as S
from harness.build import training as T
from harness.build.cache import cached_result, code_hash, content_key, model_code_hash
from harness.build.fit_inputs import finetune_inputs_cached, score_any
from harness.build.user_model import (
    check_fits_data,
    has_initial_bn_statistics,
    import_factory,
    kaiming_init,
    load_checkpoint,
)
from harness.config.run import RunConfig
from harness.errors import ConfigError
from harness.progress import Progress


def model_builder(cfg: RunConfig, data: Any) -> tuple[Callable[[], nn.Module], str, str | None]:
    """(build, name, checkpoint sha256): `build()` makes the untrained reference, checked against the data."""
    mc = cfg.model
    n_classes = len(data.classes)
    if mc.factory:
        factory = import_factory(mc.factory)

        def build() -> nn.Module:
            try:
                model = factory(num_classes=n_classes)
            except Exception as e:  # noqa: BLE001 - the user's code: one line naming it
                raise ConfigError(f"model.factory {mc.factory} raised {type(e).__name__}: {e}") from None
            if not isinstance(model, torch.nn.Module):
                raise ConfigError(f"model.factory {mc.factory} returned {type(model).__name__}, not a "
                                  f"torch.nn.Module")
            if mc.init == "kaiming":
                kaiming_init(model)
            if mc.checkpoint:
                load_checkpoint(model, Path(mc.checkpoint))
            check_fits_data(model, data, mc.factory or "")
            return model
        return build, mc.factory, sha256_file(Path(mc.checkpoint)) if mc.checkpoint else None

    def build_builtin() -> nn.Module:
        model = M.build_model(mc.builtin or "", n_classes, pretrained=is_pretrained(cfg, None))
        if mc.init == "kaiming":
            kaiming_init(model)
        check_fits_data(model, data, mc.builtin or "")
        return model
    return build_builtin, mc.builtin or "", None


def is_pretrained(cfg: RunConfig, model: nn.Module | None) -> bool:
    """model.pretrained if set; else built-in: has weights; factory: a checkpoint, or BN statistics that moved."""
    mc = cfg.model
    if mc.pretrained is not None:
        return mc.pretrained
    if mc.init == "kaiming" and not mc.checkpoint:
        return False
    if mc.builtin:
        return mc.builtin in M.PRETRAINED
    return bool(mc.checkpoint) or model is None or not has_initial_bn_statistics(model)


def train_reference(cfg: RunConfig, data: Any, cache: Path, progress: Progress,
                    task: dict[str, Any]) -> tuple[nn.Module, str]:
    """The trained fp32 reference and its checkpoint hash; fills task[model, training, finetuned_top1]."""
    fc = cfg.finetune
    build, name, ckpt_hash = model_builder(cfg, data)
    torch.manual_seed(cfg.seed)
    probe = build()
    pretrained = is_pretrained(cfg, probe)
    task["model"] = name
    if fc.epochs == 0 and fc.unfreeze_epochs == 0:
        torch.manual_seed(cfg.seed)  # a random head must be the same in every run (lineage, --resume)
        model = build().eval()
        sha = ckpt_hash or content_key(name, "untrained")
        task["training"] = {"pretrained": pretrained, "text": "not trained (finetune.epochs = 0): used as built"}
    else:
        plan = T.training_plan(probe, pretrained, fc.train, fc.freeze_bn)
        task["training"] = plan
        with progress.step(f"training {name} on {data.name} ({len(data.y_train)} train samples; {plan['text']})",
                           stage="fine-tune", log="train-reference"):
            # Named inputs (token ids, masks), other arrays, values to predict: no flips, no BatchNorm (fit_inputs.py).
            finetune = finetune_inputs_cached if not S.is_image(data.x_train) or data.regression else \
                functools.partial(T.finetune_cached, freeze_bn=fc.freeze_bn)
            model, sha = finetune(
                build, data, cache / "checkpoints", {"model": name, "checkpoint": ckpt_hash, "init": cfg.model.init,
                                                     "code": model_code_hash(cfg.model.factory)},
                epochs=fc.epochs, unfreeze_epochs=fc.unfreeze_epochs, lr=fc.lr, batch_size=fc.batch_size,
                seed=cfg.seed, progress=progress, pretrained=pretrained, trainable=fc.train,
                lr_factor=fc.lr_factor)
        if not data.regression:
            task["finetuned_top1"] = score_any(model, data.x_test, data.y_test)
    task["checkpoint_sha256"] = sha
    return model.eval(), sha


def baselines(cfg: RunConfig, data: Any, cache: Path) -> dict[str, float]:
    """Accuracy without transfer: the same network from random weights, and pixels + a linear model.

    Cached like the fine-tune (keyed by model, data, settings and the training code): a rerun reads them.
    """
    fc = cfg.finetune
    if not S.is_image(data.x_train):
        return {}  # both baselines are image ones; a text task reports its reference against chance instead
    key = content_key("baselines", cfg.model.builtin, data.fingerprint(), fc.scratch_epochs, fc.batch_size,
                      cfg.seed, code_hash())
    return dict(cached_result(cache / "baselines", key, lambda: _train_baselines(cfg, data, cache)))


def _train_baselines(cfg: RunConfig, data: Any, cache: Path) -> dict[str, float]:
    fc = cfg.finetune

    def build_scratch() -> nn.Module:
        return M.build_model(cfg.model.builtin or "", len(data.classes), pretrained=False)
    # Trained whole (a head on random features learns nothing): the fair no-transfer baseline.
    scratch, _ = T.finetune_cached(build_scratch, data, cache / "checkpoints",
                                   {"model": cfg.model.builtin, "pretrained": False},
                                   epochs=fc.scratch_epochs, lr=1e-3, batch_size=fc.batch_size, seed=cfg.seed)
    # BatchNorm running statistics lag far behind a network trained from scratch for a few
    # epochs (eval mode then predicts one class); re-estimate them on the training data.
    T.recalibrate_bn(scratch, data.x_train)
    return {"same network, random init": T.evaluate(scratch.eval(), data.x_test, data.y_test),
            "linear model on pixels": T.pixel_baseline_accuracy(data)}


def chance_check(correct: int, n: int, classes: int, alpha: float = 0.01) -> dict[str, Any]:
    """One-sided binomial test of an accuracy against guessing (1/classes): is it clearly above chance?"""
    from scipy.stats import binomtest  # about a second to import: only when a run asks

    p = float(binomtest(int(correct), int(n), 1.0 / classes, alternative="greater").pvalue) if n else 1.0
    return {"top1": correct / n if n else float("nan"), "n": int(n), "chance": 1.0 / classes, "p_value": p,
            "alpha": alpha, "above_chance": p < alpha}


def flag_chance(task: dict[str, Any], correct: int, n: int, progress: Progress) -> None:
    """task["chance"]: a binomial test of the reference's top-1 against 1/classes; warn when not clearly above."""
    check = chance_check(correct, n, int(task.get("classes") or 2))
    task["chance"] = check
    if not check["above_chance"]:
        check["warning"] = (f"the fp32 reference is not clearly above chance: top-1 {check['top1']:.3f} on {n} "
                            f"samples vs {check['chance']:.3f} by guessing (binomial p = {check['p_value']:.2g}); "
                            f"agreement figures of a model at chance mean nothing: check the training settings")
        progress(f"WARNING: {check['warning']}")
