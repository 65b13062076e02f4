"""What a run's task is, as the pipeline and the report need it: its inputs and the timed sample, the
export example, the evaluation set, the resolution in force, whether the test split can resolve a
1-point change, and the configured metric with the reference's score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.build import data as D
from harness.build import samples as S
from harness.build.cells import Prepared
from harness.build.reference import flag_chance
from harness.config.metrics import METRICS, metric_config
from harness.config.run import RunConfig, VariantConfig
from harness.errors import ConfigError
from harness.progress import Progress

# A 1-point paired drop is shown by exact McNemar (p < 0.05) only when at least 6 samples flip one way and
# none back (2 * 0.5**6 = 0.031): 6 samples = 1% of 600. Below that a 1-point change cannot be resolved.
ONE_POINT_SAMPLES = 600
PRETRAINED_AT = {"efficientnet_lite0": 224}  # the resolution a built-in backbone was pretrained at


def write_inputs(path: Path, x: S.Samples) -> Path:
    """A runner input file: one array per model input, by name."""
    np.savez(path, **S.feeds(x))
    return path


def export_example(data: D.Dataset) -> tuple[torch.Tensor, ...]:
    """What exporters trace with: one test sample (sequence inputs at the padded width: a fixed-shape
    format such as TFLite keeps that width, ONNX keeps the sequence dim dynamic)."""
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in S.arrays(S.take(data.x_test, slice(0, 1))))


def export_options(data: D.Dataset, dynamic: bool = True) -> dict[str, Any]:
    """Extra exporter arguments for named inputs: their names, and (`dynamic`) sequence dims kept dynamic."""
    if not S.is_named(data.x_test):
        return {}
    seq = set(S.sequence_inputs(data.x_test)) if dynamic else set()
    return {"input_names": tuple(data.x_test), "dynamic_dims": tuple({1: "seq"} if k in seq else {}
                                                                      for k in data.x_test)}


def check_variants(data: D.Dataset, variants: list[VariantConfig]) -> None:
    """Named-input tasks: compression recipes and static calibration are image-only for now; say so up front."""
    if not S.is_named(data.x_train):
        return
    for v in variants:
        if v.recipe != "reference":
            raise ConfigError(f"variant {v.name}: recipe {v.recipe!r} needs one image input; a task with named "
                              f"inputs ({', '.join(data.x_train)}) takes recipe 'reference' at any precision but "
                              f"int8-static")
        if v.precision == "int8-static":
            raise ConfigError(f"variant {v.name}: int8-static calibrates one float input; use int8-dynamic for a "
                              f"task with named inputs ({', '.join(data.x_train)})")


def evaluation_set(cfg: RunConfig, data: D.Dataset) -> tuple[S.Samples, np.ndarray, bool]:
    """(inputs the device runs, their labels, whether a shifted copy follows the clean samples)."""
    n_eval = cfg.data.eval_samples or S.count(data.x_test)
    x_clean, y = S.take(data.x_test, slice(0, n_eval)), data.y_test[:n_eval]
    shift = cfg.data.shifted and S.is_image(x_clean)  # the corruptions are image ones
    x_eval = S.concat([x_clean, D.shifted(x_clean, seed=cfg.seed)]) if shift else x_clean
    return x_eval, y, shift


def describe(cfg: RunConfig, data: D.Dataset, prep: Prepared, timing: dict[str, Any], progress: Progress,
             model: Any = None) -> None:
    """task[...]: inputs, timed sample, resolution, test-split resolution, metric; printed where it matters."""
    task = prep.task
    task["inputs"] = S.describe(data.x_test)
    task["timed_input"] = timing
    task["data_info"] = {k: v for k, v in data.info.items() if k not in ("image_size", "image_size_from")}
    mc = task["metric"] = metric_config(cfg.report.metric, cfg.report.higher_is_better, cfg.report.metric_key,
                                        cfg.report.bootstrap)
    mc["shifted"] = bool(cfg.data.shifted and S.is_image(data.x_test))  # a corrupted copy is scored too
    if mc["name"] != "top1":
        progress(f"metric: {mc['key'] or mc['name']} ({'higher' if mc['higher_is_better'] else 'lower'} is "
                 f"better) decides the accuracy limit and the pick; agreement with the fp32 reference is kept")
    if "seq_len" in timing:
        progress(f"timed input: the {timing['rule']}-length test sample, {timing['seq_len']} tokens (lengths "
                 f"{timing['lengths']['min']}-{timing['lengths']['max']}, padded to {timing['padded_len']}; "
                 f"fixed-shape formats pad to it)")
    if S.is_image(data.x_test):
        h, w = data.x_test.shape[2:]
        res: dict[str, Any] = {"image_size": [int(h), int(w)], "from": data.info.get("image_size_from", "data"),
                               "trained_at": [int(h), int(w)], "timed_at": [int(h), int(w)]}
        # A user's model may declare the size it was trained at (`input_size`, int or (h, w)), e.g. with its checkpoint.
        size = getattr(model, "input_size", None) if model is not None else None
        declared = PRETRAINED_AT.get(cfg.model.builtin or "")
        if size is not None:
            trained = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
            if trained != [h, w]:
                res["declared_input_size"] = trained
                res["note"] = (f"the model declares it was trained at {trained[0]}x{trained[1]} but is evaluated and "
                               f"timed at {h}x{w}: latency is for {h}x{w} inputs (set data.image_size to change it)")
        elif declared and declared != h:
            res["pretrained_at"] = [declared, declared]
            res["note"] = (f"the backbone was pretrained at {declared}x{declared}; fine-tuned, evaluated and timed "
                           f"at {h}x{w}: latency is for {h}x{w} inputs")
        task["resolution"] = res
        progress(f"resolution: {h}x{w} ({res['from']}); trained, evaluated and timed at {h}x{w}"
                 + (f"; {res['note'].split(';')[0]}" if "note" in res else ""))
    n = S.count(data.x_test) if cfg.data.eval_samples is None else min(cfg.data.eval_samples, S.count(data.x_test))
    split = {"n": int(n), "n_train": int(len(data.y_train)), "n_val": int(len(data.y_val)),
             "fractions": list(cfg.data.split or D.SPLIT), "one_point_needs": ONE_POINT_SAMPLES,
             "resolves_one_point": n >= ONE_POINT_SAMPLES}
    if not split["resolves_one_point"]:
        split["warning"] = (f"the test split has {n} samples: a 1-point accuracy change is "
                            f"{0.01 * n:.1f} samples, too few to tell from noise (a paired test needs about "
                            f"{ONE_POINT_SAMPLES}); differences under a few points are not resolved")
        progress(f"WARNING: {split['warning']}")
    task["test_split"] = split


def reference_scores(prep: Prepared, data: D.Dataset, progress: Progress) -> None:
    """The fp32 reference against class labels: top-1 and chance (the configured metric is scored with each
    cell, in the measure stage)."""
    assert prep.reference_outputs is not None and prep.labels is not None
    task, y, n = prep.task, prep.labels, prep.n_clean
    out = prep.reference_outputs
    if not data.regression and out.reshape(len(out), -1).shape[1] > 1:
        right = out[:n].reshape(n, -1).argmax(1) == y
        task["reference_top1"] = float(np.mean(right))
        flag_chance(task, int(np.sum(right)), n, progress)
        if len(out) > n:
            task["reference_top1_shifted"] = float(np.mean(out[n:].reshape(n, -1).argmax(1) == y))


def regression_labels(cfg: RunConfig) -> bool | None:
    """Whether labels are values (MAE/RMSE), classes (other registered metrics), or as the data says (None:
    a user metric; float labels that are not whole numbers are values)."""
    spec = METRICS.get(cfg.report.metric)
    return None if spec is None else spec.labels == "value"
