"""Data loaders: the texture task, .npz and image-folder inputs, the shifted copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.build.data import Dataset, load_image_folder, load_npz, load_textures, shifted
from harness.errors import ConfigError


@pytest.fixture(scope="module")
def textures() -> Dataset:
    return load_textures(patch=32, per_class=20)


def test_textures_shapes_and_normalisation(textures: Dataset) -> None:
    assert textures.classes == ["brick", "grass", "gravel"]
    assert textures.input_shape == (3, 32, 32)
    # per_class=20 is shared 60/20/20 among the splits, per class.
    assert [len(textures.y_train), len(textures.y_val), len(textures.y_test)] == [36, 12, 12]
    for split in ("train", "val", "test"):
        x, y = getattr(textures, f"x_{split}"), getattr(textures, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert np.bincount(y, minlength=3).tolist() == [len(y) // 3] * 3
        # grayscale photos replicated to RGB
        assert np.array_equal(x[:, 0], x[:, 2])


def test_texture_splits_share_no_patch() -> None:
    data = load_textures(patch=32)
    seen = {split: {p.tobytes() for p in getattr(data, f"x_{split}")}
            for split in ("train", "val", "test")}
    assert len(data.x_train) > len(data.x_val) > 0
    assert not seen["train"] & seen["val"]
    assert not seen["train"] & seen["test"]
    assert not seen["val"] & seen["test"]


def test_fingerprint_is_stable_and_sensitive(textures: Dataset) -> None:
    again = load_textures(patch=32, per_class=20)
    assert textures.fingerprint() == again.fingerprint()
    assert len(textures.fingerprint()) == 64
    assert load_textures(patch=32, per_class=20, seed=1).fingerprint() != textures.fingerprint()
    again.y_test = again.y_test.copy()
    again.y_test[0] = (again.y_test[0] + 1) % 3
    assert again.fingerprint() != textures.fingerprint()


def test_shifted_changes_data_but_keeps_shape_and_range(textures: Dataset) -> None:
    x = textures.x_test
    out = shifted(x, seed=0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    # every image is changed, by a moderate amount
    per_image = np.abs(out - x).reshape(len(x), -1).mean(1)
    assert (per_image > 0.01).all() and per_image.mean() < 0.5
    assert np.array_equal(out, shifted(x, seed=0))
    assert not np.array_equal(out, shifted(x, seed=1))


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _arrays(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.normal(size=(n, 3, 8, 8)).astype(np.float32),
            "y_train": rng.integers(0, 2, n), "x_test": rng.normal(size=(6, 3, 8, 8)),
            "y_test": rng.integers(0, 2, 6)}


def test_load_npz_carves_validation_split(tmp_path: Path) -> None:
    data = load_npz(_save_npz(tmp_path / "task.npz", **_arrays(20), classes=np.array(["a", "b"])))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (17, 3, 6)
    assert data.classes == ["a", "b"] and data.name == "task"
    assert data.x_test.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.fingerprint() == load_npz(tmp_path / "task.npz").fingerprint()


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("y_test"), "y_test"),
    (lambda a: a.update(x_train=np.zeros((0, 3, 8, 8)), y_train=np.zeros(0, int)), "empty"),
    (lambda a: a.update(y_test=np.zeros(5, int)), "y_test"),
    (lambda a: a.update(y_train=np.full(20, 0.5)), "integer"),
    (lambda a: a["x_test"].__setitem__((0, 0, 0, 0), np.nan), "x_test"),
    (lambda a: a.update(x_val=np.zeros((2, 3, 8, 8))), "x_val"),
])
def test_load_npz_rejects_bad_files(tmp_path: Path, change, words: str) -> None:
    arrays = _arrays()
    change(arrays)
    path = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=words) as err:
        load_npz(path)
    assert "bad.npz" in str(err.value)


def test_load_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_npz(tmp_path / "nope.npz")


def _write_images(folder: Path, n: int, value: int) -> None:
    import skimage.io

    folder.mkdir(parents=True)
    for i in range(n):
        img = np.full((20, 24, 3), value, dtype=np.uint8)
        img[i % 20] = 255 - value
        skimage.io.imsave(folder / f"{i}.png", img, check_contrast=False)


def test_load_image_folder(tmp_path: Path) -> None:
    _write_images(tmp_path / "cats", 8, 10)
    _write_images(tmp_path / "dogs", 8, 200)
    data = load_image_folder(tmp_path, size=16)
    assert data.classes == ["cats", "dogs"]
    assert data.input_shape == (3, 16, 16)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (12, 2, 2)
    assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0
    # the dark class stays dark after resizing and normalising
    assert data.x_train[data.y_train == 0].mean() < -0.5 < data.x_train[data.y_train == 1].mean()


def test_load_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_image_folder(tmp_path / "missing")
    _write_images(tmp_path / "only", 8, 10)
    with pytest.raises(ConfigError, match="at least 2"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        load_image_folder(tmp_path)
