"""Fuzz-style: hundreds of malformed configs, targets files, known_hosts files, npz inputs and report.json files
through `harness.cli.main` in-process. Each must end in a non-zero exit with one `edge-harness: error:` line on
stderr, never a traceback (the tests run with EDGE_HARNESS_DEBUG=1: a bug raises here instead of being folded).
"""

from __future__ import annotations

import copy
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sshd import free_port
from tiny import tiny_config, to_toml

import harness.api
from harness.cli import main
from harness.errors import HarnessError
from harness.measure.results import load_report

SEED = 20261201
BAD_VALUES: list[Any] = [None, "", "x", -1, 0, 10**30, -(10**30), 1.5, [], [1, "a"], {}, {"a": 1}, True, "nan",
                         "../../etc", "a" * 5000, "\u202e\u0000", [[[]]]]
BAD_TOML_VALUES = ["nan", "inf", "-inf", '""', '"x"', "-1", "0", "1e400", "[]", "{}", "true", '"../../x"',
                   f'"{"a" * 3000}"', "[1, 2]", '{ a = 1 }', "1979-05-27T07:32:00Z", "-0.0", '"\\u0000"']


class Reached(BaseException):
    """A config that got through validation: the fuzz case was not malformed after all."""


@pytest.fixture
def no_runs(monkeypatch):
    def stop(*a, **k):
        raise Reached

    monkeypatch.setattr(harness.api, "run_config", stop)
    monkeypatch.setattr("harness.bench.bench", stop)


class Tally:
    def __init__(self) -> None:
        self.cases = self.tracebacks = self.accepted = 0
        self.failures: list[str] = []

    def check(self, capsys, argv: list[str], label: str, may_pass: bool = False) -> None:
        self.cases += 1
        try:
            code = main(argv)
        except Reached:
            self.accepted += 1
            capsys.readouterr()
            if not may_pass:
                self.failures.append(f"{label}: accepted")
            return
        except SystemExit as e:  # argparse's usage errors exit from inside parse_args
            code = int(e.code or 0)
        except Exception as e:
            self.tracebacks += 1
            self.failures.append(f"{label}: {type(e).__name__}: {e}"[:300])
            capsys.readouterr()
            return
        err = capsys.readouterr().err.strip().splitlines()
        err = [ln for ln in err if ln.startswith("edge-harness:")]
        if code == 0 and may_pass:
            self.accepted += 1
            return
        if code == 0 or len(err) != 1 or not err[0].startswith("edge-harness: error:"):
            self.failures.append(f"{label}: exit {code}, stderr {err}"[:300])


TALLY = Tally()


@pytest.fixture(autouse=True)
def fresh_failures():
    TALLY.failures = []


def _configs(rng: random.Random) -> list[str]:
    base = tiny_config()
    texts = []
    for section in ("measure", "data", "finetune", "report", "model"):
        for key in list(base.get(section, {})) + ["bogus", "max_latency_ms"]:
            for v in rng.sample(BAD_TOML_VALUES, 4):
                cfg = copy.deepcopy(base)
                cfg.setdefault(section, {}).pop(key, None)
                text = to_toml(cfg).replace(f"[{section}]\n", f"[{section}]\n{key} = {v}\n")
                texts.append(text)
    for key in ("name", "recipe", "precision", "formats", "threads", "affinity", "settings"):
        for v in rng.sample(BAD_TOML_VALUES, 5):
            texts.append(to_toml(base).replace("[[variants]]\n", f"[[variants]]\n{key} = {v}\n", 1)
                         .replace('name = "fp32"\n', "" if key == "name" else 'name = "fp32"\n'))
    for key in ("name", "targets", "seed", "out", "variants"):
        for v in rng.sample(BAD_TOML_VALUES, 4):
            texts.append(f"{key} = {v}\n" + "\n".join(ln for ln in to_toml(base).splitlines()
                                                       if not ln.startswith(f"{key} =")))
    good = to_toml(base)
    for _ in range(30):  # bytes cut or flipped
        i = rng.randrange(len(good))
        texts.append(good[:i] + rng.choice(["\x00", "[", "]]", '"', "=", "\ufffd", "\n[[", "\\"]) + good[i:])
    texts += ["", "\x00\x01\x02", "[[[[", "a = 1\na = 2\n", "[model\n", "x" * 100_000]
    return texts


def test_malformed_configs(tmp_path, capsys, no_runs):
    rng = random.Random(SEED)
    for i, text in enumerate(_configs(rng)):
        p = tmp_path / f"c{i}.toml"
        p.write_text(text, errors="surrogatepass")
        # A mutation may leave a valid config (a zero that is allowed): it reaches run_config, which is stubbed.
        TALLY.check(capsys, ["run", str(p), "--out", str(tmp_path / "o"), "-q"], f"config {i}: {text[:80]!r}",
                    may_pass=True)
    assert not TALLY.failures, "\n".join(TALLY.failures[:15])


def _targets_files(rng: random.Random) -> list[str]:
    port = free_port()
    good = {"kind": "ssh", "host": "127.0.0.1", "port": port, "user": "root", "ssh_config": "",
            "connect_timeout_s": 2}
    keys = ["kind", "host", "port", "user", "key", "known_hosts", "password_env", "connect_timeout_s", "python",
            "workdir", "threads", "affinity", "trust", "keep_files", "run_timeout_s", "bogus"]
    texts = []
    for key in keys:
        for v in rng.sample(BAD_TOML_VALUES, 6):
            spec = {k: json.dumps(x) for k, x in good.items() if k != key}
            spec[key] = v
            texts.append("[targets.x]\n" + "".join(f"{k} = {x}\n" for k, x in spec.items()))
    texts += ["[targets]\nx = 1\n", "targets = 3\n", "[other]\n", "[targets.x]\nkind = \"nope\"\n",
              "[targets.x.y.z]\na = 1\n", "\x00", "[targets.x]\nhost = \"\"\n", "[[targets]]\n",
              '[targets."a/b"]\nhost = "127.0.0.1"\n' f"port = {port}\n"]
    return texts


def test_malformed_targets_files(tmp_path, capsys):
    rng = random.Random(SEED + 1)
    for i, text in enumerate(_targets_files(rng)):
        p = tmp_path / f"t{i}.toml"
        p.write_text(text)
        # Every ssh device here is a closed port on loopback: a valid table still fails, in one line.
        TALLY.check(capsys, ["targets", "trust", "x", "--targets", str(p)], f"targets {i}: {text[:120]!r}")
    assert not TALLY.failures, "\n".join(TALLY.failures[:15])


def _npz_files(tmp_path: Path, rng: random.Random) -> list[Path]:
    out = []

    def save(name: str, **arrays: Any) -> None:
        p = tmp_path / f"{name}.npz"
        np.savez(p, **arrays)
        out.append(p)

    good = np.zeros((1, 3, 16, 16), np.float32)
    save("empty")
    save("objects", x=np.array([{"a": 1}, None], dtype=object))
    save("strings", x=np.array(["a", "b"]))
    for i, shape in enumerate([(1,), (3, 16, 16), (1, 3, 8, 8), (1, 4, 16, 16), (0, 3, 16, 16), (1, 3, 16, 16, 1),
                               (1, 3, 16, 0)]):
        save(f"shape{i}", x=np.zeros(shape, np.float32))
    for i, dt in enumerate([np.complex64, np.bool_, np.uint8, np.int64, np.float16, "datetime64[s]", "V4"]):
        save(f"dtype{i}", x=np.zeros((1, 3, 16, 16), dt))
    save("two", x=good, y=good)
    save("wrongname", input_that_does_not_exist=good, other=good)
    raw = (tmp_path / "shape0.npz").read_bytes()
    for i in range(15):
        p = tmp_path / f"cut{i}.npz"
        cut = rng.randrange(1, len(raw))
        p.write_bytes(raw[:cut] if i % 2 else raw[:cut] + bytes(rng.randrange(256) for _ in range(20)) + raw[cut + 20:])
        out.append(p)
    for i, blob in enumerate([b"", b"PK\x03\x04", b"not a zip", bytes(range(256)) * 4]):
        p = tmp_path / f"bytes{i}.npz"
        p.write_bytes(blob)
        out.append(p)
    p = tmp_path / "member.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY garbage")
    out.append(p)
    d = tmp_path / "dir.npz"
    d.mkdir()
    out += [d, tmp_path / "missing.npz"]
    return out


def test_malformed_npz_inputs(tmp_path, capsys, cnn_onnx):
    rng = random.Random(SEED + 2)
    for p in _npz_files(tmp_path, rng):
        # float16 inputs are cast for a float32 model: that one may pass. A batch of 0 is refused.
        TALLY.check(capsys, ["bench", str(cnn_onnx), "--inputs", str(p), "--runs", "2", "--warmup", "0",
                             "--min-time", "0", "--out", str(tmp_path / "o" / p.stem), "-q"], f"npz {p.name}",
                    may_pass=p.stem == "dtype4")
    assert not TALLY.failures, "\n".join(TALLY.failures[:15])


@pytest.fixture(scope="module")
def good_report(tmp_path_factory, cnn_onnx) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("good")
    assert main(["bench", str(cnn_onnx), "--runs", "5", "--warmup", "0", "--min-time", "0", "--out", str(out),
                 "-q"]) == 0
    return json.loads((out / "local-cpu" / "report.json").read_text())


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(d, dict):
        return [prefix] + [p for k, v in d.items() for p in _paths(v, prefix + (k,))]
    if isinstance(d, list):
        return [prefix] + [p for i, v in enumerate(d[:3]) for p in _paths(v, prefix + (i,))]
    return [prefix]


def _set(d: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return d


STRUCTURE = [("schema_version",), ("target",), ("target", "name"), ("measurements",), ("measurements", 0),
             ("measurements", 0, "variant"), ("measurements", 0, "format"), ("measurements", 0, "status"),
             ("measurements", 0, "latency_ms"), ("measurements", 0, "latency_ms", "p50"),
             ("measurements", 0, "raw_latencies_ms"), ("measurements", 0, "settings")]


def _reports(good: dict[str, Any], rng: random.Random) -> list[tuple[str, bool, str]]:
    """(report.json text, may it still be valid?, what was changed) triples."""
    out: list[tuple[str, bool, str]] = []
    for path in STRUCTURE:  # the shapes every reader relies on: always malformed
        for v in BAD_VALUES:
            d = copy.deepcopy(good)
            if path == ("measurements", 0, "settings") and isinstance(v, dict):
                continue  # any object is a valid settings table
            if path == ("measurements", 0, "raw_latencies_ms") and (v is None or v == []):
                continue
            if path == ("measurements", 0, "latency_ms", "p50") and v in (0, 1.5, 10**30) or \
                    path in (("target", "name"), ("measurements", 0, "variant"), ("measurements", 0, "format")) \
                    and isinstance(v, str) and v or path == ("measurements",) and v == []:
                continue  # still a valid report: any non-empty name, no cells
            out.append((json.dumps(_set(d, path, v)), False, f"{path} = {v!r:.30}"))
    paths = _paths(good)
    for _ in range(250):  # anywhere: a wrong type, or a key removed; some still valid
        d = copy.deepcopy(good)
        path = rng.choice(paths)
        if path and rng.random() < 0.3:
            parent = d
            for k in path[:-1]:
                parent = parent[k]
            del parent[path[-1]]
        else:
            _set(d, path, rng.choice(BAD_VALUES))
        out.append((json.dumps(d), True, f"{path}"))
    text = json.dumps(good)
    for _ in range(20):
        i = rng.randrange(len(text))
        out.append((text[:i], False, f"cut at {i}"))
    out += [(t, False, repr(t[:20])) for t in ("NaN", '{"schema_version": 1, "target": {"name": "x"}, '
                                               '"measurements": [NaN]}', "[" * 100_000, "\x00", "")]
    return out


def test_malformed_report_files(tmp_path, capsys, good_report):
    rng = random.Random(SEED + 3)
    ok_dir = tmp_path / "ok"
    (ok_dir / "local-cpu").mkdir(parents=True)
    (ok_dir / "local-cpu" / "report.json").write_text(json.dumps(good_report))
    for i, (text, may_pass, change) in enumerate(_reports(good_report, rng)):
        d = tmp_path / f"r{i}"
        (d / "local-cpu").mkdir(parents=True)
        (d / "local-cpu" / "report.json").write_text(text)
        label = f"report {i}: {change}"
        TALLY.check(capsys, ["report", str(d)], label, may_pass=may_pass)
        TALLY.check(capsys, ["compare", str(ok_dir), str(d), "--out", str(tmp_path / "cmp.md")], label,
                    may_pass=may_pass)
        TALLY.cases += 1  # --resume reads the earlier report through load_report
        try:
            load_report(d / "local-cpu" / "report.json")
        except HarnessError as e:
            assert "\n" not in str(e)
        except Exception as e:
            TALLY.tracebacks += 1
            TALLY.failures.append(f"{label}: load_report: {type(e).__name__}: {e}"[:300])
    assert not TALLY.failures, "\n".join(TALLY.failures[:15])


def test_zz_tally():
    """Print the totals (pytest -s shows them): cases, tracebacks, cases that were still valid."""
    print(f"fuzz: {TALLY.cases} cases, {TALLY.tracebacks} tracebacks, {TALLY.accepted} still valid")
    assert TALLY.tracebacks == 0
