"""The harness's exception family for mistakes a user can make, and the families of the layers below.

`exporters/` and `targets/` own their user-error classes; `USER_ERRORS` is every family the face
(CLI, API) and the stages catch and turn into one line.
"""

from __future__ import annotations

from exporters.errors import ExportError
from targets.errors import TargetError, TargetSettingError

__all__ = ["USER_ERRORS", "ConfigError", "ExportError", "HarnessError", "ModelError", "TargetError",
           "TargetSettingError"]


class HarnessError(Exception):
    """A user-caused failure; the CLI prints its one-line message and exits non-zero."""

    exit_code = 2

    def __str__(self) -> str:
        # One line, always: multi-line messages from runtimes are folded.
        return " ".join(super().__str__().split())


class ConfigError(HarnessError):
    """A config file or option is wrong (unknown key, bad value, missing file)."""


class ModelError(HarnessError):
    """A model file cannot be loaded or does not accept the given inputs."""


USER_ERRORS: tuple[type[Exception], ...] = (HarnessError, ExportError, TargetError)
