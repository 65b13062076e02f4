"""Boards in a shared labgrid lab: reserved, acquired and released around a run, measured over SSH.

- `client`: the `labgrid-client` calls (places, reserve, acquire, show, release) and their parsing;
- `claims`: this host's reservations on disk, so a run killed with SIGKILL is cleaned up by the next;
- `target`: `LabgridTarget` (kind "labgrid").
"""

from __future__ import annotations

from targets.labgrid.client import LabClient, NetworkService, Place
from targets.labgrid.target import COMBINED, LabgridTarget

__all__ = ["COMBINED", "LabClient", "LabgridTarget", "NetworkService", "Place"]
