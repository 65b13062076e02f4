"""One exception family for mistakes a user can make (bad file, bad config, unreachable device)."""

from __future__ import annotations


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


class TargetError(HarnessError):
    """A target cannot be reached, authenticated, or lacks what a job needs."""


class ExportError(HarnessError):
    """A conversion failed or its artifact does not match the torch reference."""
