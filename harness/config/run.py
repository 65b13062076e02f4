"""Run configs as plain dataclasses, loaded from TOML with every key and value checked."""

from __future__ import annotations

import math
import tomllib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from exporters import EXPORTERS, PRECISIONS
from harness.config.metrics import METRICS, check_metric
from harness.config.recipes import RECIPES
from harness.errors import ConfigError
from targets.base import RUNTIME_OPTIONS, runtime_option_error

DATA_SOURCES = ("textures", "npz", "folder", "text")  # text: the built-in labelled sentences (chatterbot-corpus)
TIMING_SAMPLES = ("median", "longest", "first")


@dataclass
class ModelConfig:
    """The base model: a built-in name, or a user's `module:function` plus checkpoint."""

    builtin: str | None = "efficientnet_lite0"
    factory: str | None = None  # "package.module:function", called as function(num_classes=N)
    checkpoint: str | None = None  # a state dict for the factory's model (already fine-tuned, or the base)
    # None: built-in models load their weights; a factory's model counts as pretrained when it comes with
    # a checkpoint or its BatchNorm statistics are not at their initial values (it has seen data).
    pretrained: bool | None = None
    init: str = "model"  # "model": the weights as built; "kaiming": conv/linear re-initialised (He) first


@dataclass
class DataConfig:
    source: str = "textures"
    path: str | None = None
    patch: int = 64
    test_stride: int | None = None  # textures: pixels between test patches (default patch/2; smaller = more)
    per_class: int | None = None  # cap on patches per class and split (quick mode, tests)
    seed: int = 0
    eval_samples: int | None = None  # cap on test samples evaluated on the device
    shifted: bool = True  # also evaluate a distribution-shifted copy of the test set (image data only)
    # Resolution images are trained, evaluated and timed at: None = the images' own size (folder data), the
    # patch (textures), the arrays' own (npz). Printed and recorded in the report.
    image_size: int | None = None
    split: list[float] | None = None  # train/val/test fractions (folder, text, npz without x_val); default .7/.15/.15
    max_length: int = 64  # text: tokens per sentence at most (longer ones are cut)
    timing_sample: str = "median"  # which test sample is timed: median length, longest, or the first


@dataclass
class FinetuneConfig:
    epochs: int = 4  # epochs of the head on frozen features
    unfreeze_epochs: int = 1  # then epochs with the last blocks unfrozen (0: head only)
    lr: float = 3e-3
    batch_size: int = 32
    baselines: bool = True  # train baselines without the pretrained weights
    scratch_epochs: int = 3  # epochs for the same network trained from random weights
    # Which parameters train: "auto" (pretrained: head, then the last blocks, or the whole network gently
    # without a features()/classifier split; from random weights: the whole network), "head", "tail", "all".
    train: str = "auto"
    freeze_bn: bool | None = None  # None: BatchNorm statistics frozen for pretrained weights only
    lr_factor: float = 0.01  # learning rate of pretrained layers relative to `lr` (from random weights: 1)


@dataclass
class VariantConfig:
    """A variant is data: a recipe and its settings, then a precision, in some formats."""

    name: str
    recipe: str = "reference"
    precision: str = "fp32"
    formats: list[str] = field(default_factory=lambda: ["onnx"])
    settings: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # this variant's cells only; else measure.threads, else the target's
    affinity: list[int] | None = None
    # Runtime options, named as the runtimes name them (over the target's; see targets.base.RUNTIME_OPTIONS):
    providers: list[str] | None = None  # onnxruntime execution providers, in order of preference
    graph_optimization_level: str | None = None  # onnxruntime: "disable" | "basic" | "extended" | "all"
    xnnpack: bool | None = None  # LiteRT: false = builtin kernels only (BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    delegate: str | None = None  # LiteRT: an external delegate library on the device (load_delegate)
    delegate_options: dict[str, Any] | None = None  # and its options


@dataclass
class MeasureConfig:
    runs: int = 50
    warmup: int = 5
    min_time_s: float = 0.5
    max_time_s: float = 30.0
    mode: str = "fixed"  # "fixed" | "adaptive"
    target_rel_ci: float = 0.02
    threads: int | None = None
    timeout_s: float = 300.0
    parity_samples: int = 32
    warmup_until_stable: bool = False  # keep warming up until the last runs agree within 5%
    affinity: list[int] | None = None  # CPUs the runner is pinned to (e.g. the big cores); target's if unset
    cooldown_s: float = 0.0  # pause between cells so one cell's heat does not slow the next
    threads_sweep: list[int] = field(default_factory=list)  # also time every cell at these thread counts
    batch_sweep: list[int] = field(default_factory=list)  # also time every cell at these batch sizes (items/s)
    profile: bool = False  # a per-operator profile per cell (the runtime's profiler, after the timed runs)
    rounds: int = 1  # sequential: time every cell this many times (reversed order each round), and pool them
    # "interleaved": every cell's model stays loaded in its own runner process and the cells are timed in
    # short alternating blocks, in a random order each round (paired comparisons); "sequential": one
    # fresh process per cell, one after another, `runs` iterations each.
    strategy: str = "interleaved"
    block_runs: int = 10  # interleaved: at least this many timed runs per block ...
    block_min_s: float = 0.05  # ... and enough to last this long
    block_discard: int = 10  # untimed runs at the start of each block (caches, thread pools wake up), at most
    # as many as fit in 20 ms (at least 2): a slow model is warm again after a run or two
    min_rounds: int = 8  # rounds before racing may stop a cell (8 at least: see measure/interleave.py)
    max_rounds: int = 15
    budget_s: float = 120.0  # wall-clock limit of the rounds on one target
    racing: bool = True  # stop timing a cell once it is clearly slower than the best cell within the limits


@dataclass
class ReportConfig:
    max_accuracy_drop: float = 0.01  # fraction (0.01 = 1 point) against the fp32 reference
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    # Latency equivalence margin: a cell is tied with the fastest unless the data show it slower by more
    # than this fraction (0.0: only a ratio CI that contains 1.0 ties). Two processes running the same
    # model can differ by a few percent from memory layout alone (addresses, alignment, environment
    # size), which paired blocks measure as real: below the margin the tie-break decides, not that.
    tie_margin: float = 0.03
    # The metric the accuracy limit and the pick use: a registered name (harness/config/metrics.py) or a
    # user's "package.module:function", called as fn(outputs, labels) -> {name: value}.
    metric: str = "top1"
    higher_is_better: bool | None = None  # a user metric's direction (default: higher is better)
    metric_key: str | None = None  # which key of a user metric's result decides (default: the first)
    bootstrap: int = 1000  # resamples of the paired bootstrap CI of a metric drop (metrics other than top1)


@dataclass
class RunConfig:
    name: str = "run"
    out: str | None = None
    seed: int = 0
    cache_dir: str | None = None
    targets: list[str] = field(default_factory=lambda: ["local-cpu"])
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    variants: list[VariantConfig] = field(default_factory=list)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        cfg = _build(cls, d, where)
        validate(cfg, where)
        return cfg


def _check_type(value: Any, hint: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table, got {type(value).__name__}")
        return dict(value)
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table, got {type(value).__name__}")
        return _build(hint, value, where, prefix=f"{key}.")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool) or hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be {hint.__name__}, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{where}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
    return value


def _build(cls: type, d: dict[str, Any], where: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in d:
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            kwargs[f.name] = _check_type(d[f.name], hints[f.name], prefix + f.name, where)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{where}: missing key '{prefix}{f.name}'")
    if cls is ModelConfig and kwargs.get("factory") is not None and "builtin" not in d:
        kwargs["builtin"] = None  # a user's factory replaces the default built-in model
    return cls(**kwargs)


def _one_of(value: Any, allowed: tuple[str, ...], key: str, where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} = {value!r} is not one of {', '.join(allowed)}")


MAX_NAME = 100  # a name becomes a folder or file name: past this, file systems refuse it (255 bytes)


def validate(cfg: RunConfig, where: str) -> None:
    """Check values that types alone cannot: names, ranges, files, combinations."""
    if len(cfg.name) > MAX_NAME or not cfg.name.strip() or any(c in cfg.name for c in "/\\\0"):
        raise ConfigError(f"{where}: name must be a plain name of 1 to {MAX_NAME} characters (no slashes), got "
                          f"{cfg.name[:40]!r}{'...' if len(cfg.name) > 40 else ''}")
    m = cfg.model
    if (m.builtin is None) == (m.factory is None):
        raise ConfigError(f"{where}: set exactly one of model.builtin and model.factory")
    if m.factory is not None and ":" not in m.factory:
        raise ConfigError(f"{where}: model.factory must look like 'package.module:function', got {m.factory!r}")
    if m.checkpoint is not None and not Path(m.checkpoint).expanduser().is_file():
        raise ConfigError(f"{where}: model.checkpoint file not found: {m.checkpoint}")
    _one_of(m.init, ("model", "kaiming"), "model.init", where)
    _one_of(cfg.finetune.train, ("auto", "head", "tail", "all"), "finetune.train", where)
    if not 0 < cfg.finetune.lr_factor <= 1 or cfg.finetune.lr <= 0:
        raise ConfigError(f"{where}: finetune.lr must be > 0 and finetune.lr_factor in (0, 1]")
    _one_of(cfg.data.source, DATA_SOURCES, "data.source", where)
    if cfg.data.source not in ("textures", "text"):
        if not cfg.data.path:
            raise ConfigError(f"{where}: data.path is required for data.source = {cfg.data.source!r}")
        if not Path(cfg.data.path).expanduser().exists():
            raise ConfigError(f"{where}: data.path not found: {cfg.data.path}")
    if cfg.data.patch < 16:
        raise ConfigError(f"{where}: data.patch must be >= 16")
    if cfg.data.image_size is not None and not 16 <= cfg.data.image_size <= 1024:
        raise ConfigError(f"{where}: data.image_size must be between 16 and 1024 pixels, got {cfg.data.image_size}")
    sp = cfg.data.split
    if sp is not None and (len(sp) != 3 or any(not 0 < f < 1 for f in sp) or abs(sum(sp) - 1) > 1e-6):
        raise ConfigError(f"{where}: data.split must be three fractions in (0, 1) for train, val, test that sum "
                          f"to 1, got {sp}")
    if not 4 <= cfg.data.max_length <= 512:
        raise ConfigError(f"{where}: data.max_length must be between 4 and 512 tokens")
    _one_of(cfg.data.timing_sample, TIMING_SAMPLES, "data.timing_sample", where)
    check_metric(cfg.report.metric, cfg.report.higher_is_better, cfg.report.metric_key, where)
    if cfg.report.bootstrap < 100:
        raise ConfigError(f"{where}: report.bootstrap must be >= 100 resamples")
    if not cfg.variants:
        raise ConfigError(f"{where}: no [[variants]] given")
    seen = set()
    for i, v in enumerate(cfg.variants):
        key = f"variants[{i}]"
        if v.name in seen:
            raise ConfigError(f"{where}: duplicate variant name {v.name!r}")
        seen.add(v.name)
        if not v.name or any(c in v.name for c in "/\\\0") or v.name.startswith("."):
            raise ConfigError(f"{where}: {key}.name {v.name!r} must be a plain name (no slashes)")
        if len(v.name) > MAX_NAME:
            raise ConfigError(f"{where}: {key}.name is {len(v.name)} characters long; at most {MAX_NAME}")
        _one_of(v.recipe, tuple(RECIPES), f"{key}.recipe", where)
        try:
            resolved = RECIPES[v.recipe].resolve(v.settings)  # unknown or mistyped settings fail before training
        except ConfigError as e:
            raise ConfigError(f"{where}: {key}.settings: {e}") from None
        for k, x in (resolved or {}).items():
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{where}: {key}.settings.{k} must be a finite number, got {x!r}")
        _one_of(v.precision, PRECISIONS, f"{key}.precision", where)
        wanted = RECIPES[v.recipe].precisions
        if wanted and v.precision not in wanted:
            raise ConfigError(f"{where}: {key}: recipe {v.recipe!r} makes precision {', '.join(wanted)}, "
                              f"not {v.precision!r}")
        if not v.formats:
            raise ConfigError(f"{where}: {key}.formats is empty")
        for f in v.formats:
            _one_of(f, tuple(EXPORTERS), f"{key}.formats", where)
            exp = EXPORTERS[f]
            if v.precision not in exp.precisions:
                why = exp.limits or f"format {f} makes {', '.join(exp.precisions)}"
                raise ConfigError(f"{where}: {key}: {why} (precision {v.precision!r})")
        if v.threads is not None and v.threads < 1:
            raise ConfigError(f"{where}: {key}.threads must be >= 1")
    ms = cfg.measure
    if ms.runs < 1 or ms.warmup < 0 or ms.min_time_s < 0 or ms.timeout_s <= 0:
        raise ConfigError(f"{where}: measure.runs must be >= 1, warmup >= 0, min_time_s >= 0, timeout_s > 0")
    _one_of(ms.mode, ("fixed", "adaptive"), "measure.mode", where)
    _one_of(ms.strategy, ("interleaved", "sequential"), "measure.strategy", where)
    if ms.block_runs < 1 or ms.block_discard < 0 or ms.block_min_s < 0 or ms.budget_s <= 0:
        raise ConfigError(f"{where}: measure.block_runs must be >= 1, block_discard >= 0, block_min_s >= 0, "
                          f"budget_s > 0")
    if not 2 <= ms.min_rounds <= ms.max_rounds:
        raise ConfigError(f"{where}: measure.min_rounds must be >= 2 and <= measure.max_rounds")
    if ms.threads is not None and ms.threads < 1:
        raise ConfigError(f"{where}: measure.threads must be >= 1")
    if any(t < 1 for t in ms.threads_sweep) or (ms.affinity is not None and any(c < 0 for c in ms.affinity)):
        raise ConfigError(f"{where}: measure.threads_sweep needs counts >= 1 and measure.affinity CPU numbers >= 0")
    if any(b < 1 for b in ms.batch_sweep) or len(set(ms.batch_sweep)) != len(ms.batch_sweep):
        raise ConfigError(f"{where}: measure.batch_sweep needs distinct batch sizes >= 1, got {ms.batch_sweep}")
    for i, v in enumerate(cfg.variants):
        for key in RUNTIME_OPTIONS:
            why = runtime_option_error(key, getattr(v, key)) if getattr(v, key) is not None else None
            if why:
                raise ConfigError(f"{where}: variants[{i}] ({v.name}): {why}")
    if ms.parity_samples < 1 or (cfg.data.eval_samples is not None and cfg.data.eval_samples < 1):
        raise ConfigError(f"{where}: measure.parity_samples and data.eval_samples must be >= 1")
    if ms.rounds < 1:
        raise ConfigError(f"{where}: measure.rounds must be >= 1")
    if ms.cooldown_s < 0:
        raise ConfigError(f"{where}: measure.cooldown_s must be >= 0")
    # For error metrics (MAE, RMSE) and user metrics the limit is in the metric's own unit.
    fraction = cfg.report.metric in METRICS and METRICS[cfg.report.metric].unit == "fraction"
    if not 0 <= cfg.report.max_accuracy_drop <= (1 if fraction else math.inf):
        raise ConfigError(f"{where}: report.max_accuracy_drop is a fraction between 0 and 1 (0.01 = 1 point)")
    if not 0 <= cfg.report.tie_margin < 1:
        raise ConfigError(f"{where}: report.tie_margin is a fraction between 0 and 1 (0.05 = within 5%)")
    if not cfg.targets:
        raise ConfigError(f"{where}: targets is empty")


def load_config(path: Path) -> RunConfig:
    """Read a run config; relative paths in it are taken from the config file's folder."""
    path = Path(path).expanduser()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    base = path.parent
    for section, key in (("model", "checkpoint"), ("data", "path")):
        val = doc.get(section, {}).get(key) if isinstance(doc.get(section), dict) else None
        if isinstance(val, str) and not Path(val).expanduser().is_absolute():
            doc[section][key] = str(base / val)
    return RunConfig.from_dict(doc, where=str(path))


def builtin_config(name: str) -> Path:
    """Path of a config shipped with the package (the demo is one)."""
    return Path(__file__).with_name("builtin") / f"{name}.toml"
