"""The recipe registry: every compression recipe's name, settings (with defaults and types) and purpose.

Data only, as a config should be: the build stage holds the function behind each name
(`harness.build.recipes.IMPLEMENTATIONS`), and a config is checked against this list before
any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

Settings = dict[str, Any]


@dataclass(frozen=True)
class RecipeSpec:
    """A compression recipe's name, its allowed settings with their defaults, and a description.

    `choices`: the values a string setting may take; `ranges`: [lo, hi) of a number setting;
    `precisions`: the precisions its variants may ask for (None: any).
    """

    name: str
    defaults: Settings = field(default_factory=dict)
    description: str = ""
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    precisions: tuple[str, ...] | None = None

    def resolve(self, settings: Settings | None) -> Settings:
        """Defaults overlaid with `settings`; unknown keys or wrongly typed values raise."""
        settings = dict(settings or {})
        for key, value in settings.items():
            if key not in self.defaults:
                allowed = ", ".join(sorted(self.defaults)) or "none"
                raise ConfigError(f"recipe {self.name!r} has no setting {key!r} (allowed: {allowed})")
            want = type(self.defaults[key])
            ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok, settings[key] = True, float(value)
            if not ok:
                raise ConfigError(f"recipe {self.name!r} setting {key!r} must be a {want.__name__},"
                                  f" got {value!r}")
        resolved = {**self.defaults, **settings}
        for key in ("epochs", "finetune_epochs"):
            if key in resolved and resolved[key] < 0:
                raise ConfigError(f"recipe {self.name!r} setting {key!r} must be >= 0")
        for key, allowed in self.choices.items():
            if resolved[key] not in allowed and not (key == "student" and ":" in resolved[key]):
                raise ConfigError(f"recipe {self.name!r} setting {key!r} must be one of {', '.join(allowed)}"
                                  f"{' or package.module:function' if key == 'student' else ''}, "
                                  f"got {resolved[key]!r}")
        for key, (lo, hi) in self.ranges.items():
            if not lo <= resolved[key] < hi:
                raise ConfigError(f"recipe {self.name!r} setting {key!r} must be in [{lo:g}, {hi:g}), "
                                  f"got {resolved[key]!r}")
        return resolved


_PRUNE_BUDGET = {"ratio": (0.0, 1.0), "macs_fraction": (0.0, 1.0), "params_fraction": (0.0, 1.0)}

RECIPES: dict[str, RecipeSpec] = {r.name: r for r in (
    RecipeSpec("reference", {}, "the fine-tuned model unchanged"),
    RecipeSpec("prune", {"sparsity": 0.5, "finetune_epochs": 1, "lr": 3e-5, "seed": 0},
               "global unstructured magnitude pruning of conv/linear weights + masked fine-tune",
               ranges={"sparsity": (0.0, 1.0)}),
    RecipeSpec("prune_structured", {"ratio": 0.5, "macs_fraction": 0.0, "params_fraction": 0.0,
                                    "importance": "l2", "finetune_epochs": 3, "lr": 1e-4, "seed": 0},
               "remove channels of any model (torch-pruning DepGraph) by ratio, or down to a MACs/params "
               "fraction, + fine-tune", choices={"importance": ("l1", "l2", "taylor")}, ranges=_PRUNE_BUDGET),
    RecipeSpec("distill", {"student": "efficientnet_lite0_student", "student_ratio": 0.5, "epochs": 10,
                           "alpha": 0.7,
                           # batch 16: a from-scratch student needs the optimizer steps on small data
                           "temperature": 4.0, "lr": 1e-3, "batch_size": 16, "seed": 0},
               "train a student (built-in name, package.module:function, or 'pruned': the teacher with "
               "student_ratio of its channels removed) on the reference's soft labels",
               choices={"student": ("efficientnet_lite0", "efficientnet_lite0_student", "tiny_cnn", "pruned")},
               ranges={"student_ratio": (0.0, 1.0), "alpha": (0.0, 1.0 + 1e-9)}),
    RecipeSpec("qat", {"epochs": 2, "lr": 1e-4, "batch_size": 32, "freeze_epochs": 1, "freeze_bn": True,
                       "seed": 0},
               "quantization-aware training (PT2E fake quantization), exported as its own int8 graph",
               precisions=("int8-static",)),
    RecipeSpec("mixed_precision", {"float_layers": 3, "samples": 128},
               "per-layer int8 sensitivity; static int8 with the float_layers most sensitive layers kept float",
               ranges={"float_layers": (0, 10**6), "samples": (1, 10**6)}, precisions=("int8-static",)),
)}
