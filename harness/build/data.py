"""Task data: the offline texture task, user .npz files, image folders, and a shifted copy.

Image loaders return a `Dataset` of float32 NCHW arrays normalised as EfficientNet-Lite
expects, `(x/255 - 0.5) / 0.5`, so values lie in [-1, 1], at the resolution the config names (or the
images' own). An .npz may instead hold several named inputs of any dtype (harness.build.samples).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.build import samples as S
from harness.build import text
from harness.errors import ConfigError

SPLITS = ("train", "val", "test")
TEXTURES = ("brick", "grass", "gravel")
# Rows of each photo given to train / val / test: disjoint regions, so no patch of one
# split shares a pixel with a patch of another.
REGION_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT = (0.7, 0.15, 0.15)  # train / val / test of folder data and the text task, unless data.split says
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Dataset:
    """A task split three ways; x is float32 NCHW images or named arrays (samples.py), y is int64 class labels
    (float values for regression). `info`: how the data was made (resolution, its source), for the report."""

    name: str
    classes: list[str]
    x_train: Any
    y_train: np.ndarray
    x_val: Any
    y_val: np.ndarray
    x_test: Any
    y_test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 over classes and every array (dtype, shape, bytes): stable across runs."""
        h = hashlib.sha256()
        h.update("\x00".join(self.classes).encode())
        for split in SPLITS:
            x = getattr(self, f"x_{split}")
            named = [np.frombuffer(k.encode(), np.uint8) for k in x] + list(x.values()) if S.is_named(x) else [x]
            for arr in (*named, getattr(self, f"y_{split}")):
                arr = np.ascontiguousarray(arr)
                h.update(f"{arr.dtype.str}{arr.shape}".encode())
                h.update(arr.tobytes())
        return h.hexdigest()

    @property
    def input_shape(self) -> Any:
        """Shape of one sample, e.g. (3, 64, 64); per input for named inputs."""
        if S.is_named(self.x_train):
            return {k: list(v.shape[1:]) for k, v in self.x_train.items()}
        return tuple(self.x_train.shape[1:])

    @property
    def regression(self) -> bool:
        """Float labels: values to predict, not classes."""
        return self.y_train.dtype.kind == "f"


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
                  test_stride: int | None = None, fractions: tuple[float, ...] = REGION_FRACTIONS) -> Dataset:
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
        bounds = np.cumsum((0, *fractions)) * photo.shape[0]
        for i, split in enumerate(SPLITS):
            region = photo[int(bounds[i]):int(bounds[i + 1])]
            stride = test_stride if split == "test" and test_stride else max(1, patch // 2)
            cut = _patches(region, patch, stride)
            cut = cut[rng.permutation(len(cut))]
            if per_class is not None:
                cut = cut[:max(1, round(per_class * fractions[i]))]
            xs[split].append(cut)
            ys[split].append(np.full(len(cut), label, dtype=np.int64))
    arrays = {}
    for split in SPLITS:
        gray = np.concatenate(xs[split])
        order = rng.permutation(len(gray))
        arrays[f"x_{split}"] = normalise(np.repeat(gray[order][..., None], 3, axis=-1))
        arrays[f"y_{split}"] = np.concatenate(ys[split])[order]
    return Dataset(name=f"textures{patch}", classes=list(TEXTURES), **arrays,
                   info={"image_size": [patch, patch], "image_size_from": "data.image_size or data.patch (textures)"})


def _check_split(path: Path, data: dict[str, np.ndarray], names: list[str], split: str,
                 regression: bool = False) -> None:
    """Raise ConfigError if the inputs and labels of one split are unusable."""
    y = data[f"y_{split}"]
    if names == ["x"]:
        x = data[f"x_{split}"]
        if len(x) == 0 or len(y) == 0:
            raise ConfigError(f"{path}: x_{split}/y_{split} is empty")
        if len(x) != len(y):
            raise ConfigError(f"{path}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
        if not np.issubdtype(x.dtype, np.number) or x.ndim < 2:
            raise ConfigError(f"{path}: x_{split} must be a numeric array (N, ...)")
        if not np.isfinite(x).all():
            raise ConfigError(f"{path}: x_{split} contains NaN or inf")
    else:
        S.check_named_split(path, data, names, split)
    if regression:
        if not np.issubdtype(y.dtype, np.number) or y.ndim not in (1, 2) or not np.isfinite(y).all():
            raise ConfigError(f"{path}: y_{split} must hold finite numbers (N,) or (N, k) for a regression metric")
        return
    if not (np.issubdtype(y.dtype, np.integer)
            or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ConfigError(f"{path}: y_{split} must hold integer class labels (or set report.metric to mae/rmse for "
                          f"values)")
    if y.ndim != 1 or y.min() < 0:
        raise ConfigError(f"{path}: y_{split} must be a 1-D array of labels >= 0")


def load_npz(path: Path, regression: bool | None = False, val_fraction: float = 0.15,
             image_size: int | None = None) -> Dataset:
    """A user's .npz: x_train, y_train, x_test, y_test (+ optional x_val, y_val, classes), or named inputs:
    `<name>_train`, `<name>_test` (+ `<name>_val`) for each model input, any dtype, with y_train, y_test.

    Without a validation split, `val_fraction` of train is carved off with a fixed seed. Arrays are
    used as given (images expected already normalised NCHW). `regression`: labels are values, not classes.
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
    names = ["x"] if "x_train" in data else [k[:-6] for k in data if k.endswith("_train") and k != "y_train"]
    for key in (*(f"{n}_{s}" for n in names or ["x"] for s in ("train", "test")), "y_train", "y_test"):
        if key not in data:
            have = ", ".join(sorted(data)) or "no arrays"
            raise ConfigError(f"{path}: missing array {key!r} (it has {have}; a dataset .npz holds x_train, y_train, "
                              "x_test, y_test, or <input>_train and <input>_test per model input with y_train, y_test)")
    if not names:
        raise ConfigError(f"{path}: no input arrays (x_train, or <input>_train per model input)")
    if regression is None:  # a user metric: float labels that are not whole numbers are values
        y = data["y_train"]
        regression = bool(y.dtype.kind == "f" and not np.all(y == np.round(y)))
    has_val = {f"{n}_val" in data for n in names} | {"y_val" in data}
    if len(has_val) > 1:
        given = " and ".join(k for k in (*(f"{n}_val" for n in names), "y_val") if k in data)
        raise ConfigError(f"{path}: {given} given without the other _val arrays: give x_val and y_val (a _val array "
                          f"for every input, and y_val) together, or none")
    _check_split(path, data, names, "train", regression)
    if "y_val" not in data:
        n = len(data["y_train"])
        if n < 2:
            raise ConfigError(f"{path}: the train split needs at least 2 samples to carve a validation split")
        order = np.random.default_rng(0).permutation(n)
        n_val = max(1, round(val_fraction * n))
        val, train = order[:n_val], order[n_val:]
        for k in ("y", *names):
            data[f"{k}_val"], data[f"{k}_train"] = data[f"{k}_train"][val], data[f"{k}_train"][train]
    for split in SPLITS:
        _check_split(path, data, names, split, regression)
    for name in names:
        shapes = {data[f"{name}_{s}"].shape[1:] for s in SPLITS}
        if len(shapes) != 1:
            raise ConfigError(f"{path}: splits of {name} have different sample shapes {sorted(shapes)}")
    if regression:
        classes = ["value"] if data["y_train"].ndim == 1 else [f"value_{i}" for i in range(data["y_train"].shape[1])]
    else:
        n_classes = int(max(data[f"y_{s}"].max() for s in SPLITS)) + 1
        classes = [str(c) for c in data["classes"].tolist()] if "classes" in data else \
            [str(i) for i in range(n_classes)]
        if len(classes) < n_classes:
            raise ConfigError(f"{path}: 'classes' lists {len(classes)} names but labels go up to {n_classes - 1}")
    arrays: dict[str, Any] = {}
    for split in SPLITS:
        xs = {n: _as_input(data[f"{n}_{split}"]) for n in names}
        arrays[f"x_{split}"] = xs["x"] if names == ["x"] else xs
        y = data[f"y_{split}"]
        arrays[f"y_{split}"] = y.astype(np.float32) if regression else y.astype(np.int64)
    info: dict[str, Any] = {"inputs": S.describe(arrays["x_test"])}
    if S.is_image(arrays["x_test"]):
        h, w = arrays["x_test"].shape[2:]
        if image_size is not None and (h, w) != (image_size, image_size):
            raise ConfigError(f"{path}: images are {h}x{w} but data.image_size = {image_size}; an .npz is used as "
                              f"given (resize it, or drop data.image_size)")
        info.update(image_size=[int(h), int(w)], image_size_from="the arrays' own size (npz)")
    return Dataset(name=path.stem, classes=classes, **arrays, info=info)


def _as_input(a: np.ndarray) -> np.ndarray:
    """Floats become float32 (what models take); integer and bool inputs keep their dtype."""
    return np.ascontiguousarray(a, dtype=np.float32) if a.dtype.kind == "f" else np.ascontiguousarray(a)


def _read_rgb(path: Path, size: int | None) -> np.ndarray:
    """One image file -> uint8-range float HWC RGB of size x size (None: its own size)."""
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
    if size is not None and img.shape[:2] != (size, size):
        img = skimage.transform.resize(img, (size, size), anti_aliasing=True, preserve_range=True)
    return img


def load_image_folder(path: Path, size: int | None = None, seed: int = 0,
                      fractions: tuple[float, ...] = SPLIT) -> Dataset:
    """A folder with one sub-folder of images per class, split 70/15/15 per class (or `fractions`), at
    `size` x `size` (None: the images' own size, which must then be the same for all)."""
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
        n_test = round(fractions[2] * len(files))
        n_val = round(fractions[1] * len(files))
        chunks = (files[n_val + n_test:], files[:n_val], files[n_val:n_val + n_test])
        for split, chunk in zip(SPLITS, chunks, strict=True):
            parts[split] += [(_read_rgb(f, size), label) for f in chunk]
    arrays = {}
    for split in SPLITS:
        if not parts[split]:
            raise ConfigError(f"{path}: too few images for a {split} split (need ~7 per class)")
        sizes = sorted({img.shape[:2] for s in SPLITS for img, _ in parts[s]})
        if len(sizes) > 1:
            seen = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
            raise ConfigError(f"{path}: images have {len(sizes)} sizes ({seen}); set data.image_size to the "
                              f"resolution the app uses")
        arrays[f"x_{split}"] = normalise(np.stack([img for img, _ in parts[split]]))
        arrays[f"y_{split}"] = np.array([lab for _, lab in parts[split]], dtype=np.int64)
    h, w = arrays["x_test"].shape[2:]
    return Dataset(name=path.name, classes=[d.name for d in class_dirs], **arrays,
                   info={"image_size": [int(h), int(w)],
                         "image_size_from": "data.image_size" if size else "the images' own size"})


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


def load(dc: Any, regression: bool | None = False) -> Dataset:
    """The task data a config's [data] section names (`dc`: a DataConfig)."""
    fractions = tuple(dc.split) if dc.split else None
    if dc.source == "textures":
        return load_textures(patch=dc.image_size or dc.patch, seed=dc.seed, per_class=dc.per_class,
                             test_stride=dc.test_stride, fractions=fractions or REGION_FRACTIONS)
    if dc.source == "npz":
        val = fractions[1] / (fractions[0] + fractions[1]) if fractions else 0.15
        return load_npz(Path(dc.path or ""), regression=regression, val_fraction=val, image_size=dc.image_size)
    if dc.source == "text":
        return Dataset(**text.load_text_task(max_length=dc.max_length, seed=dc.seed, per_class=dc.per_class,
                                        fractions=fractions or SPLIT))
    return load_image_folder(Path(dc.path or ""), size=dc.image_size, seed=dc.seed, fractions=fractions or SPLIT)
