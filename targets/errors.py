"""The targets' user-error class: a device that cannot be reached, set up, or given a job."""

from __future__ import annotations


class TargetError(Exception):
    """A target cannot be reached, authenticated, or lacks what a job needs; the message is one line."""

    exit_code = 2

    def __str__(self) -> str:
        # Device and runtime messages can span lines: a report row and the CLI print one.
        return " ".join(super().__str__().split())


class TargetSettingError(TargetError):
    """A target's setting is wrong (a bad fingerprint, a relative workdir): the targets file needs fixing."""
