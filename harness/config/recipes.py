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
    """A compression recipe's name, its allowed settings with their defaults, and a description."""

    name: str
    defaults: Settings = field(default_factory=dict)
    description: str = ""

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
        return resolved


RECIPES: dict[str, RecipeSpec] = {r.name: r for r in (
    RecipeSpec("reference", {}, "the fine-tuned model unchanged"),
    RecipeSpec("prune", {"sparsity": 0.5, "finetune_epochs": 1, "lr": 3e-5, "seed": 0},
               "global unstructured magnitude pruning of conv/linear weights + masked fine-tune"),
    RecipeSpec("prune_structured", {"ratio": 0.5, "finetune_epochs": 3, "lr": 1e-4, "seed": 0},
               "remove hidden channels of MBConv blocks (conv channels of tiny_cnn) + fine-tune"),
    RecipeSpec("distill", {"student": "efficientnet_lite0_student", "epochs": 10, "alpha": 0.7,
                           # batch 16: a from-scratch student needs the optimizer steps on small data
                           "temperature": 4.0, "lr": 1e-3, "batch_size": 16, "seed": 0},
               "train a smaller student on the reference's soft labels"),
)}
