"""Shared fixtures: tiny real models exported with the real exporters, and one real sshd (session-scoped,
built once)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd import Sshd, skip_reason, start_sshd

os.environ.setdefault("EDGE_HARNESS_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "test"))


def _tiny_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


def _export(model, example, path: Path, dynamic) -> Path:
    import torch

    torch.onnx.export(model, example, str(path), dynamo=True, external_data=False, dynamic_shapes=dynamic,
                      verbose=False)
    return path


@pytest.fixture(scope="session")
def tiny_cnn():
    return _tiny_cnn()


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory, tiny_cnn) -> Path:
    """A 3-class CNN on (N, 3, 16, 16) float32 with a dynamic batch dimension."""
    import torch

    path = tmp_path_factory.mktemp("models") / "cnn.onnx"
    return _export(tiny_cnn, (torch.randn(2, 3, 16, 16),), path, ({0: torch.export.Dim("batch")},))


@pytest.fixture(scope="session")
def embedding_onnx(tmp_path_factory) -> Path:
    """A token classifier: int64 ids (batch, seq) into a 50-row embedding table, both dims dynamic."""
    import torch
    from torch import nn

    class Tok(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.fc = nn.Linear(16, 4)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(input_ids).mean(1))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tok.onnx"
    ids = torch.randint(0, 50, (2, 7))
    return _export(Tok().eval(), (ids,), path,
                   ({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", min=2, max=512)},))


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Sshd | None]:
    """One real sshd on loopback for the whole session, letting root in with its own key; None where
    it cannot run (not root, no sshd: `sshd.skip_reason()` says why), so a test can go on without it."""
    if skip_reason():
        yield None
        return
    s = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()
os.environ.setdefault("EDGE_HARNESS_DEBUG", "1")  # bugs raise in tests; the CLI turns them into one line only for users

# Tests that write malformed report.json files on purpose (their tmp_path folders are not schema-checked).
HAND_MADE_REPORTS = ("test_malformed_report_files", "test_earlier_reports_are_not_overwritten_unasked")


@pytest.fixture(scope="session", autouse=True)
def reports_match_their_schemas(tmp_path_factory) -> Iterator[None]:
    """At the end of the session, every report.json / summary.json the tests wrote under pytest's tmp folders
    must validate against the JSON Schemas generated from the dataclasses (harness/report/schema.py)."""
    yield
    from schema_check import problems, written_reports

    paths = written_reports(tmp_path_factory.getbasetemp(), skip=HAND_MADE_REPORTS)
    bad = [line for path in paths for line in problems(path)]
    assert not bad, (f"{len(bad)} schema violations in the reports this session wrote ({len(paths)} checked; "
                     "a new key belongs in its dataclass, then `edge-harness schema`; a test that writes a "
                     "malformed report on purpose goes in HAND_MADE_REPORTS):\n" + "\n".join(bad[:30]))

