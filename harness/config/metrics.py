"""The metric registry: every built-in task metric's name, direction and kind, and the user-metric form.

Data only, as the recipe registry is: the measure stage holds the function behind each name
(`harness.measure.task_metrics.IMPLEMENTATIONS`, asserted equal to this list), and a config's
`report.metric` is checked against it, or against the `package.module:function` form, at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, whether higher is better, the labels it needs, and its unit.

    `labels`: "class" (integer class labels, outputs are one score per class) or "value" (regression
    targets, outputs are the predicted values). `unit`: "fraction" (0..1, the limit is in points/100)
    or "label" (the labels' own unit: the limit is in that unit).
    """

    name: str
    higher_is_better: bool
    labels: str
    unit: str
    description: str


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("top1", True, "class", "fraction", "top-1 accuracy: the highest score is the label"),
    MetricSpec("top5", True, "class", "fraction", "top-5 accuracy: the label is among the 5 highest scores"),
    MetricSpec("macro_f1", True, "class", "fraction", "F1 per class, averaged with equal weight per class"),
    MetricSpec("recall", True, "class", "fraction",
               "balanced accuracy: recall per class averaged; the report shows each class's recall and the "
               "confusion matrix"),
    MetricSpec("mae", False, "value", "label", "mean absolute error of the predicted values"),
    MetricSpec("rmse", False, "value", "label", "root mean squared error of the predicted values"),
)}

USER_FORM = "package.module:function"


def is_user_metric(name: str) -> bool:
    """Whether `report.metric` names a user's function rather than a registered metric."""
    return ":" in name


def check_metric(name: str, higher_is_better: bool | None, key: str | None, where: str) -> None:
    """A registered name (direction fixed) or 'package.module:function' (direction given): else one line."""
    if is_user_metric(name):
        mod, _, fn = name.partition(":")
        if not mod or not fn or not all(p.isidentifier() for p in mod.split(".")) or not fn.isidentifier():
            raise ConfigError(f"{where}: report.metric {name!r} must look like '{USER_FORM}'")
        return
    if name not in METRICS:
        raise ConfigError(f"{where}: report.metric = {name!r} is not one of {', '.join(METRICS)} "
                          f"(or a '{USER_FORM}' called as fn(outputs, labels) -> {{name: value}})")
    spec = METRICS[name]
    if higher_is_better is not None and higher_is_better != spec.higher_is_better:
        raise ConfigError(f"{where}: report.higher_is_better = {str(higher_is_better).lower()} contradicts "
                          f"{name}, for which {'higher' if spec.higher_is_better else 'lower'} is better")
    if key is not None and key != name:
        raise ConfigError(f"{where}: report.metric_key names a key of a user metric's result; {name} has one "
                          f"value")


def metric_config(metric: str, higher_is_better: bool | None, key: str | None, bootstrap: int) -> dict[str, Any]:
    """task["metric"]: what is scored and in which direction; a registered metric's own direction wins."""
    spec = METRICS.get(metric)
    return {"name": metric, "key": key or (metric if spec else None),
            "higher_is_better": spec.higher_is_better if spec else (True if higher_is_better is None
                                                                    else higher_is_better),
            "unit": spec.unit if spec else "metric", "user": spec is None, "bootstrap": bootstrap,
            "labels": spec.labels if spec else "any"}
