"""The exporters' user-error class: a conversion that failed or an artifact that cannot be made."""

from __future__ import annotations


class ExportError(Exception):
    """A conversion failed or its artifact does not match the torch reference; the message is one line."""

    exit_code = 2

    def __str__(self) -> str:
        # Converter messages nest and run to pages: fold them onto one line.
        return " ".join(super().__str__().split())
