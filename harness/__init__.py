"""edge-harness: which model, in which format, should run on this device?"""

from __future__ import annotations

__version__ = "0.1.0"
