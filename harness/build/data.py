"""Task data: the offline texture task, user .npz files, image folders, and a shifted copy.

All loaders return a `Dataset` of float32 NCHW arrays normalised as EfficientNet-Lite
expects, `(x/255 - 0.5) / 0.5`, so values lie in [-1, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import ConfigError

SPLITS = ("train", "val", "test")
TEXTURES = ("brick", "grass", "gravel")
# Rows of each photo given to train / val / test: disjoint regions, so no patch of one
# split shares a pixel with a patch of another.
REGION_FRACTIONS = (0.6, 0.2, 0.2)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Dataset:
    """A classification task split three ways; x is float32 NCHW, y is int64."""

    name: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def fingerprint(self) -> str:
        """sha256 over classes and every array (dtype, shape, bytes): stable across runs."""
        h = hashlib.sha256()
        h.update("\x00".join(self.classes).encode())
        for split in SPLITS:
            for arr in (getattr(self, f"x_{split}"), getattr(self, f"y_{split}")):
                arr = np.ascontiguousarray(arr)
                h.update(f"{arr.dtype.str}{arr.shape}".encode())
                h.update(arr.tobytes())
        return h.hexdigest()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (3, 64, 64)."""
        return tuple(self.x_train.shape[1:])


def normalise(images_uint8_nhwc: np.ndarray) -> np.ndarray:
    """uint8-range NHWC RGB -> float32 NCHW in [-1, 1]."""
    x = images_uint8_nhwc.astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - 0.5) / 0.5).transpose(0, 3, 1, 2))


def _patches(region: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """All patch x patch windows of a 2-D region at `stride`, shape (n, patch, patch)."""
    rows = range(0, region.shape[0] - patch + 1, stride)
    cols = range(0, region.shape[1] - patch + 1, stride)
    return np.stack([region[r:r + patch, c:c + patch] for r in rows for c in cols])


def load_textures(patch: int = 64, seed: int = 0, per_class: int | None = None,
                  test_stride: int | None = None) -> Dataset:
    """Brick / grass / gravel patches from scikit-image's bundled photos (fully offline).

    `per_class` caps the patches per class, shared among the splits in proportion 60/20/20.
    `test_stride` (default patch/2) spaces the test patches: a smaller one cuts more of them from
    the same held-out region, so an accuracy difference of a point can be told from noise.
    """
    import skimage.data

    if patch < 8 or patch > 100:
        raise ConfigError(f"texture patch size must be between 8 and 100 pixels, got {patch}")
    if per_class is not None and per_class < 3:
        raise ConfigError(f"per_class must be at least 3 (one patch per split), got {per_class}")
    rng = np.random.default_rng(seed)
    xs: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    ys: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label, name in enumerate(TEXTURES):
        photo = getattr(skimage.data, name)()
        bounds = np.cumsum((0,) + REGION_FRACTIONS) * photo.shape[0]
        for i, split in enumerate(SPLITS):
            region = photo[int(bounds[i]):int(bounds[i + 1])]
            stride = test_stride if split == "test" and test_stride else max(1, patch // 2)
            cut = _patches(region, patch, stride)
            cut = cut[rng.permutation(len(cut))]
            if per_class is not None:
                cut = cut[:max(1, round(per_class * REGION_FRACTIONS[i]))]
            xs[split].append(cut)
            ys[split].append(np.full(len(cut), label, dtype=np.int64))
    arrays = {}
    for split in SPLITS:
        gray = np.concatenate(xs[split])
        order = rng.permutation(len(gray))
        arrays[f"x_{split}"] = normalise(np.repeat(gray[order][..., None], 3, axis=-1))
        arrays[f"y_{split}"] = np.concatenate(ys[split])[order]
    return Dataset(name=f"textures{patch}", classes=list(TEXTURES), **arrays)


def _check_split(path: Path, data: dict[str, np.ndarray], split: str) -> None:
    """Raise ConfigError if the x/y pair of one split is unusable."""
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    if len(x) == 0 or len(y) == 0:
        raise ConfigError(f"{path}: x_{split}/y_{split} is empty")
    if len(x) != len(y):
        raise ConfigError(f"{path}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2:
        raise ConfigError(f"{path}: x_{split} must be a numeric array (N, ...)")
    if not np.isfinite(x).all():
        raise ConfigError(f"{path}: x_{split} contains NaN or inf")
    if not (np.issubdtype(y.dtype, np.integer)
            or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ConfigError(f"{path}: y_{split} must hold integer class labels")
    if y.ndim != 1 or y.min() < 0:
        raise ConfigError(f"{path}: y_{split} must be a 1-D array of labels >= 0")


def load_npz(path: Path) -> Dataset:
    """A user's .npz with x_train, y_train, x_test, y_test (+ optional x_val, y_val, classes).

    Without a validation split, 15% of train is carved off with a fixed seed. Arrays are
    used as given (expected already normalised NCHW).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # numpy raises OSError, ValueError, BadZipFile, EOFError, ... for a damaged file
        raise ConfigError(f"{path}: not a readable .npz file ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                          "write it with numpy.savez") from None
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in data:
            have = ", ".join(sorted(data)) or "no arrays"
            raise ConfigError(f"{path}: missing array {key!r} (it has {have}; a dataset .npz holds x_train, y_train, "
                              "x_test, y_test)")
    if ("x_val" in data) != ("y_val" in data):
        raise ConfigError(f"{path}: x_val and y_val must be given together")
    if "x_val" not in data:
        _check_split(path, data, "train")
        n = len(data["x_train"])
        if n < 2:
            raise ConfigError(f"{path}: x_train needs at least 2 samples to carve a validation split")
        order = np.random.default_rng(0).permutation(n)
        n_val = max(1, round(0.15 * n))
        val, train = order[:n_val], order[n_val:]
        data["x_val"], data["y_val"] = data["x_train"][val], data["y_train"][val]
        data["x_train"], data["y_train"] = data["x_train"][train], data["y_train"][train]
    for split in SPLITS:
        _check_split(path, data, split)
    shapes = {data[f"x_{s}"].shape[1:] for s in SPLITS}
    if len(shapes) != 1:
        raise ConfigError(f"{path}: splits have different sample shapes {sorted(shapes)}")
    n_classes = int(max(data[f"y_{s}"].max() for s in SPLITS)) + 1
    if "classes" in data:
        classes = [str(c) for c in data["classes"].tolist()]
        if len(classes) < n_classes:
            raise ConfigError(f"{path}: 'classes' lists {len(classes)} names but labels go up "
                              f"to {n_classes - 1}")
    else:
        classes = [str(i) for i in range(n_classes)]
    arrays = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = np.ascontiguousarray(data[f"x_{split}"], dtype=np.float32)
        arrays[f"y_{split}"] = data[f"y_{split}"].astype(np.int64)
    return Dataset(name=path.stem, classes=classes, **arrays)


def _read_rgb(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8-range float HWC RGB of size x size."""
    import skimage.io
    import skimage.transform

    try:
        img = skimage.io.imread(path)
    except Exception as e:  # imageio raises many types for a bad file
        raise ConfigError(f"cannot read image {path}: {e}") from e
    if img.dtype.kind in "iu":  # 8- and 16-bit files alike become 0..255 floats
        img = img.astype(np.float64) * (255.0 / np.iinfo(img.dtype).max)
    elif img.dtype.kind == "f" and img.max() <= 1.0:
        img = img.astype(np.float64) * 255.0
    if img.ndim == 3 and img.shape[-1] in (2, 4):
        img = img[..., :-1]  # drop alpha; keep the colour (or grey) it sits on
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ConfigError(f"image {path} has shape {list(img.shape)}; expected grey, RGB or RGBA")
    img = skimage.transform.resize(img, (size, size), anti_aliasing=True, preserve_range=True)
    return img


def load_image_folder(path: Path, size: int = 64, seed: int = 0) -> Dataset:
    """A folder with one sub-folder of images per class, resized, split 70/15/15 per class."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"image folder not found: {path}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        raise ConfigError(f"{path}: needs at least 2 class sub-folders, found {len(class_dirs)}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[np.ndarray, int]]] = {s: [] for s in SPLITS}
    for label, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ConfigError(f"{d}: class folder has no images")
        files = [files[i] for i in rng.permutation(len(files))]
        n_test = round(0.15 * len(files))
        n_val = round(0.15 * len(files))
        chunks = (files[n_val + n_test:], files[:n_val], files[n_val:n_val + n_test])
        for split, chunk in zip(SPLITS, chunks, strict=True):
            parts[split] += [(_read_rgb(f, size), label) for f in chunk]
    arrays = {}
    for split in SPLITS:
        if not parts[split]:
            raise ConfigError(f"{path}: too few images for a {split} split (need ~7 per class)")
        arrays[f"x_{split}"] = normalise(np.stack([img for img, _ in parts[split]]))
        arrays[f"y_{split}"] = np.array([lab for _, lab in parts[split]], dtype=np.int64)
    return Dataset(name=path.name, classes=[d.name for d in class_dirs], **arrays)


def shifted(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A distribution-shifted copy of a normalised NCHW batch (noise, blur or lighting).

    Each image deterministically gets one corruption of moderate severity; output is
    float32, same shape, clipped to [-1, 1].
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = (np.asarray(x, dtype=np.float32) + 1.0) / 2.0  # back to [0, 1]
    out = np.empty_like(img)
    kinds = rng.integers(0, 3, size=len(img))
    for i, (im, kind) in enumerate(zip(img, kinds, strict=True)):
        if kind == 0:
            out[i] = im + rng.normal(0.0, 0.12, size=im.shape).astype(np.float32)
        elif kind == 1:
            # Blur only spatially: sigma 0 on the channel axis.
            out[i] = gaussian_filter(im, sigma=(0, 1.5, 1.5))
        else:
            mean = im.mean()
            out[i] = (im - mean) * 0.5 + mean + 0.2 * rng.choice((-1.0, 1.0))
    return np.clip(out * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)
