"""Training a user's model: a BatchNorm network from random weights learns; a run whose reference stays at
chance is flagged at the top of the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_config

from harness.api import run_config
from harness.build.data import load_textures
from harness.build.reference import chance_check, train_reference
from harness.build.training import predict
from harness.build.user_model import has_initial_bn_statistics
from harness.config.run import RunConfig
from harness.progress import Progress

FACTORY = {"builtin": None, "factory": "archs:resnet", "pretrained": None}


def test_a_bn_net_from_random_weights_trains_through_a_user_factory(tmp_path: Path) -> None:
    cfg = RunConfig.from_dict(tiny_config(model=FACTORY, data={"per_class": 40},
                                          finetune={"epochs": 6, "unfreeze_epochs": 0, "lr": 3e-3}))
    data = load_textures(patch=32, per_class=40)
    task: dict = {}
    model, _ = train_reference(cfg, data, tmp_path, Progress(quiet=True), task)
    # detected as untrained (BatchNorm statistics at their initial values): BN trains with the network
    assert task["training"]["pretrained"] is False and task["training"]["bn_frozen"] is False
    assert task["training"]["trainable"] == "all" and "random weights" in task["training"]["text"]
    assert not has_initial_bn_statistics(model)
    correct = int(np.sum(predict(model, data.x_test).argmax(1) == data.y_test))
    check = chance_check(correct, len(data.y_test), 3)
    assert check["above_chance"] and check["p_value"] < 1e-4 and check["top1"] > 0.6


def test_a_reference_at_chance_is_flagged_on_top_of_the_report(tmp_path: Path, capsys) -> None:
    # lr 1e-9: the network cannot move from its random weights
    cfg = RunConfig.from_dict(tiny_config(model=FACTORY, data={"per_class": 40, "eval_samples": 30},
                                          finetune={"epochs": 1, "lr": 1e-9}))
    result = run_config(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache", progress=Progress())
    folder = result.report_dirs["local-cpu"]
    task = json.loads((folder / "report.json").read_text())["task"]
    assert task["chance"]["above_chance"] is False and task["chance"]["n"] >= 20
    md = (folder / "report.md").read_text().splitlines()
    assert md[2].startswith("> **Warning:** the fp32 reference is not clearly above chance")
    assert "not clearly above chance" in (folder / "report.html").read_text()
    assert "WARNING: the fp32 reference is not clearly above chance" in capsys.readouterr().err


@pytest.mark.parametrize("setting, pretrained", [({"pretrained": True}, True), ({"init": "kaiming"}, False)])
def test_pretrained_is_the_users_to_say(tmp_path: Path, setting: dict, pretrained: bool) -> None:
    cfg = RunConfig.from_dict(tiny_config(model={**FACTORY, **setting}, finetune={"epochs": 1}))
    task: dict = {}
    torch.manual_seed(0)
    train_reference(cfg, load_textures(patch=32, per_class=8), tmp_path, Progress(quiet=True), task)
    assert task["training"]["pretrained"] is pretrained and task["training"]["bn_frozen"] is pretrained
