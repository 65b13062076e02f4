"""The task metrics behind the registry's names, a user's metric function, and the paired test of a drop.

A metric is fn(outputs, labels) -> {name: value}. The configured one (task["metric"]) is scored on every
cell against the labels, beside agreement with the fp32 reference. Its drop against the reference is tested
on the same samples: top-1 by its paired counts (Newcombe, in harness.measure.metrics); any other metric by
a paired bootstrap: resample the evaluation samples with replacement, score the cell and the reference on
the same resample, and take the 2.5th/97.5th percentiles of the differences. A limit refuses a cell only
when that interval lies wholly above it, as for top-1.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np

from harness.config.metrics import METRICS, is_user_metric
from harness.config.user_code import import_callable
from harness.errors import ConfigError
from harness.measure.metrics import drop_words, judge_drop

MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


def _classes(outputs: np.ndarray) -> np.ndarray:
    return np.argmax(outputs.reshape(len(outputs), -1), axis=1)


def confusion(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: the true class, columns: the predicted class."""
    idx = labels.astype(np.int64) * n_classes + pred.astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _n_classes(outputs: np.ndarray, labels: np.ndarray) -> int:
    return max(int(outputs.reshape(len(outputs), -1).shape[1]), int(labels.max()) + 1 if len(labels) else 1)


def top1(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return {"top1": float(np.mean(_classes(outputs) == labels))}


def top5(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    scores = outputs.reshape(len(outputs), -1)
    k = min(5, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {"top5": float(np.mean(np.any(best == labels[:, None], axis=1)))}


def macro_f1(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    cm = confusion(_classes(outputs), labels, _n_classes(outputs, labels))
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    present = cm.sum(1) > 0  # classes absent from the labels are left out of the average
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"macro_f1": float(f1[present].mean()) if present.any() else float("nan")}


def recall(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    cm = confusion(_classes(outputs), labels, _n_classes(outputs, labels))
    support = cm.sum(1)
    per = np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)
    return {"recall": float(np.nanmean(per)), "per_class_recall": [None if math.isnan(r) else float(r) for r in per],
            "confusion_matrix": cm.tolist()}


def _values(outputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = outputs.reshape(len(outputs), -1).astype(np.float64)
    y = labels.reshape(len(labels), -1).astype(np.float64)
    if pred.shape != y.shape:
        raise ConfigError(f"a regression metric needs one predicted value per label value: outputs "
                          f"{list(pred.shape)}, labels {list(y.shape)}")
    return pred, y


def mae(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pred, y = _values(outputs, labels)
    return {"mae": float(np.mean(np.abs(pred - y)))}


def rmse(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pred, y = _values(outputs, labels)
    return {"rmse": float(np.sqrt(np.mean((pred - y) ** 2)))}


IMPLEMENTATIONS: dict[str, MetricFn] = {"top1": top1, "top5": top5, "macro_f1": macro_f1, "recall": recall,
                                        "mae": mae, "rmse": rmse}
assert set(IMPLEMENTATIONS) == set(METRICS), "every registered metric needs an implementation"


@functools.lru_cache(maxsize=16)
def metric_function(name: str) -> MetricFn:
    """The function behind `report.metric`: a registered metric, or a user's, imported once."""
    if not is_user_metric(name):
        return IMPLEMENTATIONS[name]
    return import_callable(name, "report.metric")  # type: ignore[no-any-return]


def compute(mc: dict[str, Any], outputs: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, Any]]:
    """(the deciding value, the whole result) of the configured metric; a user metric's mistakes are one line."""
    name = mc["name"]
    try:
        result = metric_function(name)(outputs, labels)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: one line naming it
        if not mc.get("user"):
            raise
        raise ConfigError(f"report.metric {name} raised {type(e).__name__}: {' '.join(str(e).split())[:200]}") \
            from None
    if not isinstance(result, dict) or not result:
        raise ConfigError(f"report.metric {name} returned {type(result).__name__}; expected a non-empty "
                          f"{{name: value}} dict")
    key = mc.get("key") or next(iter(result))
    if key not in result:
        raise ConfigError(f"report.metric_key {key!r} is not among the keys {name} returned "
                          f"({', '.join(map(str, result))})")
    try:
        value = float(result[key])
    except (TypeError, ValueError):
        raise ConfigError(f"report.metric {name}: {key!r} is {result[key]!r}, not a number") from None
    return value, {"key": key, **_jsonable(result)}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[str(k)] = v
    return out


def score_metric(mc: dict[str, Any], outputs: np.ndarray, labels: np.ndarray,
                 reference: np.ndarray | None, seed: int = 0) -> dict[str, Any]:
    """The configured metric of a cell, the reference's, the drop (positive = worse) and its paired CI."""
    value, result = compute(mc, outputs, labels)
    out: dict[str, Any] = {"name": mc["name"], "value": value, "higher_is_better": mc["higher_is_better"],
                           "n": int(len(labels)), "result": result}
    if reference is None:
        return out
    ref_value, _ = compute(mc, reference, labels)
    sign = 1.0 if mc["higher_is_better"] else -1.0
    out.update(reference=ref_value, drop=sign * (ref_value - value))
    if mc["name"] == "top1":
        out["basis"] = "paired counts"  # the Newcombe interval of the paired 2x2 table decides (see metrics.py)
        return out
    rng = np.random.default_rng(seed)
    n, diffs = len(labels), []
    for _ in range(int(mc.get("bootstrap") or 1000)):
        idx = rng.integers(0, n, n)
        a, _ = compute(mc, reference[idx], labels[idx])
        b, _ = compute(mc, outputs[idx], labels[idx])
        diffs.append(sign * (a - b))
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d):
        out["drop_ci"] = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
    out.update(basis="paired bootstrap", resamples=int(len(d)))
    return out


def judge_metric_drop(stat: dict[str, Any], limit: float) -> dict[str, Any]:
    """As judge_drop for top-1: "exceeds" only when the drop's paired CI lies wholly above the limit."""
    drop, ci = float(stat["drop"]), stat.get("drop_ci")
    out = {"drop": drop, "ci": ci, "n": stat.get("n"), "limit": limit, "metric": stat.get("name"),
           "basis": stat.get("basis") if ci else "point estimate"}
    if drop <= limit + 1e-12:
        out["verdict"] = "within"
    elif ci is None or ci[0] > limit:
        out["verdict"] = "exceeds"
    else:
        out["verdict"] = "inconclusive"
    return out


def metric_label(mc: dict[str, Any] | None) -> str:
    """How a metric is named in words: 'macro_f1 (higher is better)'."""
    if not mc:
        return "top-1"
    return f"{mc['key'] or mc['name']} ({'higher' if mc['higher_is_better'] else 'lower'} is better)"


def drop_amount(value: float, mc: dict[str, Any] | None) -> str:
    """A drop in the metric's unit: points for fractions, the value otherwise."""
    if not mc or mc.get("unit") == "fraction":
        return f"{100 * value:.1f} points"
    return f"{value:.4g}"


def metric_drop_words(where: str, j: dict[str, Any], limit: float, mc: dict[str, Any]) -> str:
    """A judged metric drop in words, with its paired bootstrap CI."""
    head = f"{mc.get('key') or mc['name']} drops {drop_amount(j['drop'], mc)}{where}"
    if not j.get("ci"):
        return f"{head} > {drop_amount(limit, mc)}"
    ci = (f"95% CI {drop_amount(j['ci'][0], mc)} to {drop_amount(j['ci'][1], mc)}, paired bootstrap on "
          f"{j['n']} samples")
    if j["verdict"] == "exceeds":
        return f"{head} > {drop_amount(limit, mc)} ({ci})"
    return f"{head}, above the {drop_amount(limit, mc)} limit but inconclusive, so not refused ({ci})"


def task_metric(report: Any) -> dict[str, Any] | None:
    """A report's configured metric (task["metric"]) when it is not top-1: then it, not top-1, is what the
    limit and the pick judge; None for top-1 (and for reports from before metrics were configurable)."""
    mc = report.task.get("metric")
    return mc if mc and mc.get("name") != "top1" else None


def metric_change_words(drop: float, mc: dict[str, Any]) -> str:
    """The pick's metric against the reference, in words."""
    name = mc.get("key") or mc["name"]
    if abs(drop) < 1e-12:
        return f"its {name} matches the fp32 reference"
    return f"its {name} is {'worse' if drop > 0 else 'better'} than the fp32 reference's by " \
           f"{drop_amount(abs(drop), mc)}"


def metric_name(mc: dict[str, Any] | None) -> str:
    """The deciding metric's name in words; top-1 without one."""
    return (mc.get("key") or mc["name"]) if mc else "top-1"


METRIC_KEYS = {"clean": "metric", "shifted": "metric_shifted"}  # where a cell's accuracy keeps each set's metric


def metric_drops(accuracy: dict[str, Any]) -> dict[str, float]:
    """The configured metric's drop against the reference per evaluation set (positive = worse)."""
    return {where: float(accuracy[key]["drop"]) for where, key in METRIC_KEYS.items()
            if (accuracy.get(key) or {}).get("drop") is not None}


def judge(mc: dict[str, Any] | None, accuracy: dict[str, Any], where: str, drop: float,
          limit: float) -> dict[str, Any]:
    """One evaluation set's drop against the limit: the configured metric's bootstrap CI, else top-1's paired
    counts (Newcombe)."""
    if mc is not None:
        return judge_metric_drop(accuracy[METRIC_KEYS[where]], limit)
    return judge_drop(accuracy.get("paired" if where == "clean" else "paired_shifted"), drop, limit)


def words(mc: dict[str, Any] | None, where: str, judged: dict[str, Any], limit: float) -> str:
    """A judged drop in words, for the configured metric or top-1."""
    return metric_drop_words(where, judged, limit, mc) if mc is not None else drop_words(where, judged, limit)


def limit_words(limit: float, mc: dict[str, Any] | None) -> str:
    """The accuracy limit in words: 'top-1 drop ≤ 1.0 points, clean and shifted'."""
    return f"{metric_name(mc)} drop ≤ {drop_amount(limit, mc)}" + (", clean and shifted" if (mc or {}).get(
        "shifted", True) else "")


def nothing_keeps_words(limit: float, best: float, key: str, mc: dict[str, Any] | None) -> str:
    return (f"no cell keeps the {metric_name(mc)} drop within {drop_amount(limit, mc)} (the smallest drop, {key}, "
            f"is {drop_amount(best, mc)})")
