"""Where artifacts run: local CPU, local GPU, SSH devices; runner.py is what runs there."""

from __future__ import annotations

from targets.base import RUNNER_PATH, TARGETS, Job, RawResult, Target, register_target
from targets.local import LocalTarget

__all__ = ["RUNNER_PATH", "TARGETS", "Job", "LocalTarget", "RawResult", "Target", "register_target"]

import targets.adb  # noqa: E402,F401  (registers kind "adb")
import targets.gpu  # noqa: E402,F401  (registers kind "gpu")
import targets.labgrid  # noqa: E402,F401  (registers kind "labgrid")
import targets.ssh  # noqa: E402,F401  (registers kind "ssh")
