"""The variants cache unpickles only entries signed with this user's key: a planted or altered file is a miss."""

from __future__ import annotations

import pickle
import stat

import pytest
import torch

from harness.build import signed_cache


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HARNESS_KEY", str(tmp_path / "keys" / "cache.key"))


def test_a_signed_entry_round_trips_and_the_key_is_private(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "cache" / "v.pt"
    signed_cache.save({"model": model, "info": {"a": 1}}, path)
    back = signed_cache.load(path)
    assert back["info"] == {"a": 1} and torch.equal(back["model"].weight, model.weight)
    assert stat.S_IMODE(signed_cache.key_path().stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["v.pt", "v.pt.sig"]  # no temp file left


class Planted:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['PWNED']).write_text('ran')",))


def test_a_planted_or_altered_entry_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.setenv("PWNED", str(tmp_path / "pwned"))
    path = tmp_path / "cache" / "v.pt"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(Planted()))  # no signature at all
    assert signed_cache.load(path) is None
    (tmp_path / "cache" / "v.pt.sig").write_text("0" * 64)  # a made-up one
    assert signed_cache.load(path) is None
    signed_cache.save({"ok": True}, path)  # a genuine entry, then one byte changed
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert signed_cache.load(path) is None
    assert not (tmp_path / "pwned").exists()


def test_an_entry_signed_with_another_key_is_a_miss(tmp_path, monkeypatch):
    path = tmp_path / "v.pt"
    signed_cache.save({"ok": True}, path)
    assert signed_cache.load(path) == {"ok": True}
    monkeypatch.setenv("EDGE_HARNESS_KEY", str(tmp_path / "other" / "cache.key"))
    assert signed_cache.load(path) is None


def test_a_cached_rerun_reads_a_variant_model_only_when_a_step_needs_it(tmp_path, monkeypatch):
    """The second run finds the recipe's variant, its export and parity verdict cached: the model stays on
    disk. A variant made again (other bytes under the same key) makes the small entry stale: read again."""
    from tiny import tiny_config

    from harness.build import pipeline as P
    from harness.config.run import RunConfig

    monkeypatch.setenv("EDGE_HARNESS_KEY", str(tmp_path / "key"))
    pruned = {"name": "pruned", "recipe": "prune", "formats": ["onnx"],
              "settings": {"sparsity": 0.5, "finetune_epochs": 0}}
    cfg = RunConfig.from_dict(tiny_config(variants=[pruned]))
    first = P.Pipeline(cfg, tmp_path / "a", cache_dir=tmp_path / "cache").prepare()
    again = P.Pipeline(cfg, tmp_path / "b", cache_dir=tmp_path / "cache").prepare()
    (tv1,), (tv2,) = first.torch_variants.values(), again.torch_variants.values()
    assert tv1.model is not None and tv2.model is None and tv2.digest == tv1.digest
    assert [c.status for c in again.cells] == ["ready"]
    assert again.cells[0].artifact.sha256 == first.cells[0].artifact.sha256
    assert tv2.torch_model() is not None  # and read on demand
    blob = next((tmp_path / "cache" / "variants").glob("*.pt"))
    model = signed_cache.load(blob)["model"]
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a variant made again, with other weights
    signed_cache.save({"model": model, "info": signed_cache.load(blob)["info"]}, blob)
    third = P.Pipeline(cfg, tmp_path / "c", cache_dir=tmp_path / "cache").prepare()
    (tv3,) = third.torch_variants.values()
    assert tv3.model is not None and tv3.digest != tv1.digest  # the stale entry was not trusted
