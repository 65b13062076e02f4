"""Image data keep the user's resolution (data.image_size, else the images' own), split sizes are settable, and a
test split too small to resolve a 1-point change is flagged: in the loader, and recorded through a real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.io
from tiny import tiny_config

from harness.api import run_config
from harness.build.data import load_image_folder
from harness.config.run import RunConfig
from harness.errors import ConfigError


def photo_folder(root: Path, size: tuple[int, int] = (96, 96), per_class: int = 20, odd: bool = False) -> Path:
    """Three class folders of PNGs (a different mean colour per class), as a user's photos would be."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            h, w = (64, 80) if odd and i == 0 and c == 0 else size
            img = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
            img[..., c] += 150
            skimage.io.imsave(d / f"{i}.png", img, check_contrast=False)
    return root


def test_folder_data_keep_their_own_size_or_the_configured_one(tmp_path):
    folder = photo_folder(tmp_path / "photos")
    own = load_image_folder(folder)
    assert own.x_train.shape[1:] == (3, 96, 96) and own.info["image_size"] == [96, 96]
    assert own.info["image_size_from"] == "the images' own size"
    resized = load_image_folder(folder, size=48)
    assert resized.x_test.shape[1:] == (3, 48, 48) and resized.info["image_size_from"] == "data.image_size"
    halves = load_image_folder(folder, fractions=(0.5, 0.25, 0.25))
    assert (len(halves.y_train), len(halves.y_val), len(halves.y_test)) == (30, 15, 15)


def test_mixed_sizes_need_an_image_size(tmp_path):
    folder = photo_folder(tmp_path / "photos", per_class=8, odd=True)
    with pytest.raises(ConfigError, match=r"images have 2 sizes \(64x80, 96x96\); set data.image_size"):
        load_image_folder(folder)
    assert load_image_folder(folder, size=32).x_train.shape[2:] == (32, 32)


@pytest.mark.parametrize("data, says", [
    ({"split": [0.7, 0.2, 0.2]}, "data.split must be three fractions"),
    ({"split": [0.9, 0.1]}, "data.split must be three fractions"),
    ({"image_size": 8}, "data.image_size must be between 16 and 1024"),
    ({"timing_sample": "shortest"}, "data.timing_sample = 'shortest' is not one of median, longest, first"),
])
def test_bad_data_settings_are_one_line(data, says):
    with pytest.raises(ConfigError, match=says):
        RunConfig.from_dict(tiny_config(data=data))


def test_the_run_records_the_resolution_it_timed_at_and_flags_a_small_test_split(tmp_path):
    folder = photo_folder(tmp_path / "photos")
    cfg = RunConfig.from_dict(tiny_config(data={"source": "folder", "path": str(folder), "eval_samples": None,
                                                "split": [0.6, 0.2, 0.2]}))
    rep = run_config(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache").reports["local-cpu"]
    res = rep.task["resolution"]
    assert res["image_size"] == res["trained_at"] == res["timed_at"] == [96, 96]
    assert res["from"] == "the images' own size"
    (m,) = rep.measurements
    assert m.status == "ok", m.error
    assert m.settings["timed_shapes"] == {"input": [1, 3, 96, 96]}
    split = rep.task["test_split"]
    assert split["n"] == 12 and split["n_train"] == 36 and split["fractions"] == [0.6, 0.2, 0.2]
    assert not split["resolves_one_point"] and "12 samples" in split["warning"]
    md = (tmp_path / "out" / "local-cpu" / "report.md").read_text()
    assert "Resolution: 96x96 (the images' own size)" in md and "**Test split:** the test split has 12" in md


def test_a_model_trained_at_another_size_is_said_so(tmp_path):
    cfg = RunConfig.from_dict(tiny_config(model={"builtin": None, "factory": "token_models:declared_224",
                                                 "pretrained": False}))
    rep = run_config(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache").reports["local-cpu"]
    res = rep.task["resolution"]
    assert res["declared_input_size"] == [224, 224] and res["timed_at"] == [32, 32]
    assert "trained at 224x224 but is evaluated and timed at 32x32" in res["note"]
