"""Bad inputs explain themselves: one line (what, where, what to do), exit 2, never a traceback.

Broken model files (ONNX and TFLite), inputs that do not fit the model, broken configs and
targets files, user model code that fails, and devices that cannot run the job (unreachable,
refused, changed host key, a Python without the runtime, a full or read-only workdir).
Command-level failures go through the real CLI in a subprocess; devices are a real sshd on
loopback and real tmpfs mounts (root only; skipped elsewhere with the reason).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sshd import free_port, keygen, skip_reason
from tiny import MINIMAL_TOML

from harness.config.run import load_config
from harness.config.targets_file import load_targets_file, make_target
from harness.errors import ConfigError, TargetError
from targets import RUNNER_PATH

PY = sys.executable
SSH_REASON = skip_reason()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
needs_sshd = pytest.mark.skipif(SSH_REASON is not None, reason=SSH_REASON or "")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def one_line_error(out: subprocess.CompletedProcess, code: int = 2) -> str:
    """The command failed with `code` and said why in exactly one `edge-harness: error:` line."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-harness: error: "), out.stderr[-3000:]
    assert out.returncode == code, (out.returncode, lines)
    return lines[0]


def bench(model: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return cli("bench", str(model), "--runs", "3", "--warmup", "1", "--min-time", "0", "--out", str(out), "-q",
               *extra, env=env)


def damaged(src: Path, how: str, dest: Path, other: Path | None = None) -> Path:
    data = src.read_bytes()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "flipped":  # right size, right header, garbage inside
        b = bytearray(data)
        for i in range(64, len(b) - 64, 7):
            b[i] ^= 0xFF
        data = bytes(b)
    elif how == "empty":
        data = b""
    elif how == "other-format":
        assert other is not None
        data = other.read_bytes()
    dest.write_bytes(data)
    return dest


@pytest.fixture(scope="session")
def cnn_tflite(tmp_path_factory, tiny_cnn) -> Path:
    """The conftest CNN as fp32 TFLite (fixed batch 1, float32 (1, 3, 16, 16)); ~10 s, once per session."""
    import torch

    from exporters import EXPORTERS

    path = tmp_path_factory.mktemp("tflite") / "cnn.tflite"
    EXPORTERS["tflite"](tiny_cnn, (torch.randn(1, 3, 16, 16),), "fp32", path)
    return path


@pytest.fixture
def inputs16(tmp_path) -> Path:
    p = tmp_path / "ok.npz"
    np.savez(p, x=np.zeros((1, 3, 16, 16), np.float32))
    return p


# ------------------------------------------------------------------ broken model files


@pytest.mark.parametrize("fmt, how", [
    ("onnx", "flipped"), ("onnx", "empty"), ("onnx", "other-format"),
    ("tflite", "truncated"), ("tflite", "flipped"), ("tflite", "empty"), ("tflite", "other-format"),
])
def test_broken_model_file_is_one_line(tmp_path, cnn_onnx, cnn_tflite, inputs16, fmt, how):
    """Read on the host (inputs generated from the declaration) and in the runner (inputs given)."""
    src, other = (cnn_onnx, cnn_tflite) if fmt == "onnx" else (cnn_tflite, cnn_onnx)
    bad = damaged(src, how, tmp_path / f"broken model.{fmt}", other)
    host_side = one_line_error(bench(bad, tmp_path / "o1"))
    assert "broken model" in host_side  # where
    device_side = one_line_error(bench(bad, tmp_path / "o2", "--inputs", str(inputs16)))
    assert "broken model" in device_side and ("cannot load" in device_side or "not a readable" in device_side)
    runtime = "onnxruntime" if fmt == "onnx" else "ai-edge-litert"
    assert runtime in device_side or "not a readable" in device_side


# -------------------------------------------------------------- inputs that do not fit


def _arrays(kind: str) -> dict[str, np.ndarray]:
    z = np.zeros((1, 3, 16, 16), np.float32)
    return {
        "small-image": {"x": np.zeros((1, 3, 8, 8), np.float32)},
        "int64": {"x": z.astype(np.int64)},
        "strings": {"x": np.full((1, 3, 16, 16), "abc")},
        "rank-3": {"x": z[0]},
        "nan": {"x": np.full_like(z, np.nan)},
        "inf": {"x": np.where(np.arange(z.size).reshape(z.shape) == 5, np.inf, z).astype(np.float32)},
        "two-arrays": {"a": z, "b": z},
    }[kind]


@pytest.mark.parametrize("fmt, kind, expect", [
    ("tflite", "small-image", "expects shape [1, 3, 16, 16] but timing inputs have shape [1, 3, 8, 8]"),
    ("tflite", "int64", "expects float32 but timing inputs are int64"),
    ("tflite", "nan", "contains NaN or inf"),
    ("onnx", "rank-3", "expects shape [?, 3, 16, 16] but timing inputs have shape [3, 16, 16]"),
    ("onnx", "strings", "expects float32 but timing inputs are str"),
    ("onnx", "inf", "contains NaN or inf"),
    ("onnx", "two-arrays", "inputs have 2 arrays (a, b) but the model takes 1"),
])
def test_inputs_that_do_not_fit_the_model(tmp_path, cnn_onnx, cnn_tflite, fmt, kind, expect):
    np.savez(tmp_path / "in.npz", **_arrays(kind))
    model = cnn_onnx if fmt == "onnx" else cnn_tflite
    line = one_line_error(bench(model, tmp_path / "o", "--inputs", str(tmp_path / "in.npz")))
    assert expect in line and model.name in line and "local-cpu" in line
    # The failed cell is still in the report, with its reason.
    (m,) = json.loads((tmp_path / "o" / "local-cpu" / "report.json").read_text())["measurements"]
    assert m["status"] == "failed" and expect in m["error"]


@pytest.mark.parametrize("kind, expect", [
    ("truncated", "not a readable .npz"),
    ("pickled", "not a readable .npz"),  # object arrays need pickle: never loaded
    ("missing", "inputs file not found"),
])
def test_unreadable_inputs_file(tmp_path, cnn_onnx, kind, expect):
    p = tmp_path / "in.npz"
    if kind in ("truncated", "pickled"):
        np.savez(p, x=np.zeros((1, 3, 16, 16), np.float32) if kind == "truncated" else np.array([{"a": 1}]))
        if kind == "truncated":
            p.write_bytes(p.read_bytes()[:200])
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--inputs", str(p)))
    assert expect in line and "in.npz" in line


# ---------------------------------------------------------- configs and targets files

GOOD = MINIMAL_TOML


@pytest.mark.parametrize("text, expect", [
    ('variants = "fp32"\n' + GOOD.split("[[variants]]")[0], "variants must be a list"),
    (GOOD + "[measure]\nmin_time_s = 'fast'\n", "measure.min_time_s must be float"),
    (GOOD + "[data]\npatch = 32.5\n", "data.patch must be int"),
    (GOOD + "[finetune]\nbaselines = 'yes'\n", "finetune.baselines must be bool"),
    ('model = "tiny_cnn"\n' + GOOD.replace('[model]\nbuiltin = "tiny_cnn"\n', ""), "model must be a table"),
    (GOOD + "[data]\nsource = 'npz'\npath = 'nothere.npz'\n", "data.path not found"),
    (GOOD.replace('name = "t"', 'name = "t"\ntargets = []'), "targets is empty"),
    (GOOD + "[[variants]]\nname = '../../etc'\n", "must be a plain name"),
    (GOOD.replace('builtin = "tiny_cnn"', 'factory = "no_colon_here"'), "must look like 'package.module:function'"),
])
def test_config_wrong_types_and_values(tmp_path, text, expect):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert expect in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_config_that_is_not_text_or_not_a_file(tmp_path):
    binary = tmp_path / "c.toml"
    binary.write_bytes(b"\xff\xfe\x00name = 1\x89PNG")
    assert "cannot read" in one_line_error(cli("run", str(binary), "--out", str(tmp_path / "o")))
    assert "cannot read" in one_line_error(cli("run", str(tmp_path), "--out", str(tmp_path / "o")))


@pytest.mark.parametrize("table, expect", [
    ('host = "h"\nport = "twenty"', "targets.pi.port must be an integer, got 'twenty'"),
    ('host = "h"\nkeep_files = "yes"', "targets.pi.keep_files must be true or false"),
    ('host = "h"\nworkdir = 7', "targets.pi.workdir must be a string"),
    ('host = "h"\nthreads = 0', "targets.pi.threads must be a positive integer"),
    ('host = "h"\nworkdir = "relative/dir"', "workdir must be an absolute path"),
    ('host = "h"\ntrust = "yes"', "trust must be a host key fingerprint"),
    ('host = "h"\nkey = "/nonexistent/id_ed25519"', "key file not found: /nonexistent/id_ed25519"),
    ('host = "h"\npassword_env = "EH_SURELY_UNSET_VAR"', "EH_SURELY_UNSET_VAR (password_env) is not set"),
    ('kind = "local"\npython = "/nonexistent/python3"', "python '/nonexistent/python3' not found"),
])
def test_targets_file_wrong_values(tmp_path, cnn_onnx, table, expect):
    p = tmp_path / "targets.toml"
    p.write_text(f"[targets.pi]\n{table}\nssh_config = \"\"\n" if "host" in table else f"[targets.pi]\n{table}\n")
    with pytest.raises((ConfigError, TargetError)) as e:
        make_target("pi", load_targets_file(p)).close()
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_missing_targets_file_through_the_cli(tmp_path, cnn_onnx):
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "pi", "--targets", str(tmp_path / "no.toml")))
    assert "targets file not found" in line and "no.toml" in line


# -------------------------------------------------------------- a user's model and data

MODULE = '''
from torch import nn

def build(num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))

def wider(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))

def gray(num_classes):  # takes 1-channel images; the task's are RGB
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))

def ten_classes(num_classes):  # ignores num_classes
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))
'''


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> Path:
    """A folder with a user's model module, one that raises on import, and checkpoints."""
    import torch

    d = tmp_path_factory.mktemp("user")
    (d / "usermodels.py").write_text(MODULE)
    (d / "brokenmodels.py").write_text("import numpy\nraise RuntimeError('libfoo.so: cannot open shared object')\n")
    sys.path.insert(0, str(d))
    try:
        import usermodels

        torch.save(usermodels.wider(3).state_dict(), d / "wider.pt")
        torch.save(usermodels.build(3).state_dict(), d / "fits.pt")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("usermodels", None)
    (d / "garbage.pt").write_bytes(b"this is not a checkpoint")
    return d


def _user_run(d: Path, tmp: Path, model: str, data: str = 'source = "textures"\npatch = 32\nper_class = 8\n',
              via: str = "cli") -> str:
    """Run a config with the user's code on PYTHONPATH; returns the one-line error (CLI or API)."""
    cfg = tmp / "c.toml"
    cfg.write_text(f'name = "u"\n[model]\n{model}\n[data]\n{data}'
                   '[finetune]\nepochs = 0\nunfreeze_epochs = 0\nbaselines = false\n'
                   '[[variants]]\nname = "fp32"\n')
    if via == "cli":
        return one_line_error(cli("run", str(cfg), "--out", str(tmp / "out"), "-q", env={"PYTHONPATH": str(d)}))
    from harness.api import run_config
    from harness.errors import HarnessError

    sys.path.insert(0, str(d))
    try:
        with pytest.raises(HarnessError) as e:
            run_config(load_config(cfg), out=tmp / "out", cache_dir=tmp / "cache")
    finally:
        sys.path.remove(str(d))
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("via, model, expect", [
    ("cli", 'factory = "brokenmodels:build"', "importing 'brokenmodels' failed: RuntimeError: libfoo.so"),
    ("api", 'factory = "not_on_the_path:build"', "(is its folder on PYTHONPATH?)"),
    ("api", 'factory = "usermodels:nothing"', "'usermodels' has no function 'nothing'"),
    ("cli", 'factory = "usermodels:build"\ncheckpoint = "{d}/wider.pt"', "wider.pt does not fit the model: size "
     "mismatch"),
    ("api", 'factory = "usermodels:build"\ncheckpoint = "{d}/garbage.pt"', "garbage.pt: cannot be read as a torch"),
    ("cli", 'factory = "usermodels:gray"', "does not accept the data's samples (float32 [3, 32, 32]"),
    ("api", 'factory = "usermodels:ten_classes"', "returns (2, 10) for 2 samples; expected (2, 3)"),
])
def test_user_model_code_that_fails(tmp_path, user_code, via, model, expect):
    assert expect in _user_run(user_code, tmp_path, model.format(d=user_code), via=via)
    assert not (tmp_path / "out" / "local-cpu" / "report.json").exists()


@pytest.mark.parametrize("kind, expect", [
    ("truncated", "not a readable .npz file (BadZipFile"),
    ("empty", "missing array 'x_train' (it has no arrays"),
])
def test_dataset_npz_that_cannot_be_used(tmp_path, user_code, kind, expect):
    p = tmp_path / "task.npz"
    if kind == "empty":
        np.savez(p)
    else:
        np.savez(p, x_train=np.zeros((20, 3, 16, 16), np.float32), y_train=np.arange(20) % 3,
                 x_test=np.zeros((6, 3, 16, 16), np.float32), y_test=np.arange(6) % 3)
        p.write_bytes(p.read_bytes()[:1000])
    line = _user_run(user_code, tmp_path, 'factory = "usermodels:build"', f'source = "npz"\npath = "{p}"\n',
                     via="api")
    assert expect in line and "task.npz" in line


# ------------------------------------------------------------------ devices (sshd, tmpfs)


@pytest.fixture(scope="module")
def known_hosts(server, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("kh") / "known_hosts"
    p.write_text(server.known_hosts_line())
    return p


@pytest.fixture(scope="module")
def pythons(tmp_path_factory) -> dict[str, str]:
    """A Python with nothing (fresh board) and one with numpy but no runtime, both real venvs."""
    d = tmp_path_factory.mktemp("pythons")
    out = {}
    for name in ("bare", "numpy-only"):
        subprocess.run([PY, "-m", "venv", "--without-pip", str(d / name)], check=True)
        out[name] = str(d / name / "bin" / "python")
    site = subprocess.run([out["numpy-only"], "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import numpy

    src = Path(numpy.__file__).parent.parent
    for entry in src.iterdir():
        if entry.name == "numpy" or entry.name.startswith(("numpy-", "numpy.libs")):
            os.symlink(entry, Path(site) / entry.name)
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro) -> a fresh tmpfs folder; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str = "16k", ro: bool = False) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _ssh_targets(tmp: Path, server, known_hosts: Path, **targets: dict) -> Path:
    p = tmp / "targets.toml"
    p.write_text("".join(server.target_toml(name, known_hosts, **{"python": PY, "workdir": str(tmp / "wd"), **kw})
                         for name, kw in targets.items()))
    return p


@needs_sshd
def test_unreachable_host(tmp_path, cnn_onnx, known_hosts):
    tf = tmp_path / "t.toml"
    tf.write_text(f'[targets.gone]\nhost = "127.0.0.1"\nport = {free_port()}\nknown_hosts = "{known_hosts}"\n'
                  'ssh_config = ""\nconnect_timeout_s = 3\n')
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "gone", "--targets", str(tf)))
    assert "target gone: cannot reach 127.0.0.1" in line and "connection refused (is sshd running" in line


@needs_sshd
def test_refused_authentication_never_shows_the_password(tmp_path, cnn_onnx, server, known_hosts):
    secret = "pw-Zx81-never-print-me"
    stranger = keygen(tmp_path / "stranger")
    tf = _ssh_targets(tmp_path, server, known_hosts, dev={"password_env": "EH_TEST_PASSWORD"})
    tf.write_text(tf.read_text().replace(str(server.client_key), str(stranger)))
    out = bench(cnn_onnx, tmp_path / "o", "--target", "dev", "--targets", str(tf),
                env={"EH_TEST_PASSWORD": secret})
    line = one_line_error(out)
    assert "authentication failed for root@127.0.0.1" in line and "authorized_keys" in line
    assert secret not in out.stdout + out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@needs_sshd
def test_changed_host_key(tmp_path, cnn_onnx, server):
    other = keygen(tmp_path / "other_host_key")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{server.host}]:{server.port} ssh-ed25519 {Path(str(other) + '.pub').read_text().split()[1]}\n")
    tf = _ssh_targets(tmp_path, server, kh, moved={})
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "moved", "--targets", str(tf)))
    assert "host key of" in line and "CHANGED" in line and "edge-harness targets trust moved --replace" in line
    assert kh.read_text().count("\n") == 1  # untouched


@needs_sshd
@pytest.mark.parametrize("python, fmt, expect", [
    ("bare", "onnx", "numpy is not installed for {py} on this device (install it: {py} -m pip install numpy)"),
    ("numpy-only", "onnx", "onnxruntime is not installed for {py} on this device"),
    ("numpy-only", "tflite", "no TFLite runtime for {py} (pip install ai-edge-litert)"),
    ("/nonexistent/bin/python3", "onnx", "/nonexistent/bin/python3 not found on the device"),
])
def test_device_python_without_the_runtime(tmp_path, cnn_onnx, cnn_tflite, server, known_hosts, pythons, python,
                                           fmt, expect):
    py = pythons.get(python, python)
    tf = _ssh_targets(tmp_path, server, known_hosts, board={"python": py})
    line = one_line_error(bench(cnn_onnx if fmt == "onnx" else cnn_tflite, tmp_path / "o", "--target", "board",
                                "--targets", str(tf)))
    assert expect.format(py=py) in line and "on board" in line
    assert os.listdir(tmp_path / "wd" / "jobs") == []  # the failed job left nothing on the device


def test_local_python_without_numpy(tmp_path, cnn_onnx, pythons):
    tf = tmp_path / "t.toml"
    tf.write_text(f'[targets.old]\nkind = "local"\npython = "{pythons["bare"]}"\n')
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "old", "--targets", str(tf)))
    assert f"numpy is not installed for {pythons['bare']}" in line


@needs_sshd
def test_full_workdir_on_the_device(tmp_path, cnn_onnx, server, known_hosts, tmpfs):
    fs = tmpfs("16k")  # smaller than the runner: an upload fails (after the device lock's file and the small model)
    tf = _ssh_targets(tmp_path, server, known_hosts, full={"workdir": str(fs / "eh")})
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "full", "--targets", str(tf)))
    assert re.search(r"target full: upload of (runner\.py|inputs\.npz) failed", line), line
    assert f"MB free in {fs / 'eh'}" in line and "free space there or set `workdir`" in line
    assert not [p for p in (fs / "eh" / "blobs").iterdir() if ".part-" in p.name]  # no half files filling it


@needs_sshd
def test_read_only_workdir_on_the_device(tmp_path, cnn_onnx, server, known_hosts, tmpfs):
    fs = tmpfs(ro=True)
    tf = _ssh_targets(tmp_path, server, known_hosts, ro={"workdir": str(fs / "eh")})
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "ro", "--targets", str(tf)))
    assert f"cannot create {fs / 'eh'} on the device" in line and "Read-only file system" in line
    assert "set `workdir` to a writable folder" in line


def test_full_or_read_only_local_workdir(tmp_path, cnn_onnx, tmpfs):
    full, ro = tmpfs("16k"), tmpfs(ro=True)
    (full / "filler").write_bytes(b"\0" * 16384)
    tf = tmp_path / "t.toml"
    tf.write_text(f'[targets.full]\nkind = "local"\nworkdir = "{full}"\n[targets.ro]\nkind = "local"\n'
                  f'workdir = "{ro}"\n')
    line = one_line_error(bench(cnn_onnx, tmp_path / "o1", "--target", "full", "--targets", str(tf)))
    assert "cannot write the job to" in line and "No space left on device" in line and "workdir" in line
    line = one_line_error(bench(cnn_onnx, tmp_path / "o2", "--target", "ro", "--targets", str(tf)))
    assert f"target ro: cannot create a job folder in {ro} (Read-only file system)" in line


def test_runner_that_cannot_write_its_result(tmp_path, cnn_onnx, tmpfs):
    """The device's disk fills while the runner works: it says so on stderr and exits 4."""
    full = tmpfs("16k")
    (full / "filler").write_bytes(b"\0" * 16384)
    np.savez(tmp_path / "t.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    job = {"artifact": str(cnn_onnx), "format": "onnx", "timing_inputs": str(tmp_path / "t.npz"), "runs": 3,
           "warmup": 0, "min_time_s": 0, "threads": 1, "out": str(full / "out")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    r = subprocess.run([PY, str(RUNNER_PATH), str(tmp_path / "job.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert f"cannot write the results in {full / 'out'}: No space left on device" in r.stderr


# --------------------------------------------------------------------------- hostile names


def test_hostile_file_and_target_names_stay_one_line_and_inside_out(tmp_path, cnn_tflite, inputs16):
    """A newline in a model's name and `../` in a target's name: the error stays one line (in the
    report too) and the report folder stays inside OUT."""
    evil = tmp_path / "evil\nname $(touch pwned).tflite"
    evil.write_bytes(cnn_tflite.read_bytes()[:100])
    tf = tmp_path / "t.toml"
    tf.write_text('[targets."../../escape"]\nkind = "local"\n')
    out = tmp_path / "deep" / "out"
    line = one_line_error(bench(evil, out, "--inputs", str(inputs16), "--target", "../../escape", "--targets",
                                str(tf)))
    assert "evil name $(touch pwned).tflite" in line
    (report,) = list(tmp_path.rglob("report.json"))
    # Inside OUT, and marked as altered (a hash suffix), so two names that clean up alike never share a folder.
    assert report.parent.parent == out and report.parent.name.startswith("_.._escape-")
    (m,) = json.loads(report.read_text())["measurements"]
    assert m["status"] == "failed" and "\n" not in m["error"] and "cannot load evil name" in m["error"]
    assert not list(tmp_path.rglob("pwned")) and not (tmp_path / "escape").exists()


def test_ssh_target_without_host_is_one_line(tmp_path, cnn_onnx):
    tf = tmp_path / "t.toml"
    tf.write_text('[targets.pi]\nkind = "ssh"\nuser = "pi"\n')
    line = one_line_error(bench(cnn_onnx, tmp_path / "o", "--target", "pi", "--targets", str(tf)))
    assert "targets.pi.host is required for kind ssh" in line


@needs_sshd
def test_device_workdir_is_made_private(tmp_path, cnn_onnx, server, known_hosts):
    """Code the device runs lives in the workdir: other users must not be able to plant files there."""
    tf = _ssh_targets(tmp_path, server, known_hosts, dev={})
    (tmp_path / "wd").mkdir(mode=0o777)
    os.chmod(tmp_path / "wd", 0o777)
    assert bench(cnn_onnx, tmp_path / "o", "--target", "dev", "--targets", str(tf)).returncode == 0
    assert (tmp_path / "wd").stat().st_mode & 0o777 == 0o700


def test_rgba_grey_alpha_and_16_bit_images_load_with_their_real_values(tmp_path):
    import skimage.io

    from harness.build.data import load_image_folder

    for cls, img in (("red", np.dstack([np.full((20, 20), 200, np.uint8), np.zeros((20, 20, 2), np.uint8),
                                        np.full((20, 20), 255, np.uint8)])),
                     ("grey", np.dstack([np.full((20, 20), 100, np.uint8), np.full((20, 20), 255, np.uint8)])),
                     ("white16", np.full((20, 20), 65535, np.uint16))):
        (tmp_path / cls).mkdir()
        for i in range(4):
            skimage.io.imsave(tmp_path / cls / f"{i}.png", img, check_contrast=False)
    d = load_image_folder(tmp_path, size=16)
    x = np.concatenate([d.x_train, d.x_val, d.x_test])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    means = {d.classes[c]: x[y == c].mean(axis=(0, 2, 3)) for c in range(3)}
    np.testing.assert_allclose(means["red"], [(200 / 255 - 0.5) / 0.5, -1, -1], atol=0.02)
    np.testing.assert_allclose(means["grey"], [(100 / 255 - 0.5) / 0.5] * 3, atol=0.02)
    np.testing.assert_allclose(means["white16"], [1, 1, 1], atol=0.02)


def test_peak_rss_is_the_models_not_the_evaluation_sets(tmp_path, cnn_onnx):
    from targets import Job, LocalTarget

    np.savez(tmp_path / "t.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    np.savez(tmp_path / "e.npz", x=np.zeros((2000, 3, 16, 16), np.float32))  # 6 MB of evaluation data
    t = LocalTarget("local-cpu", threads=1)
    try:
        raw = t.run(Job(artifact=str(cnn_onnx), format="onnx", timing_inputs=str(tmp_path / "t.npz"),
                        eval_inputs=str(tmp_path / "e.npz"), runs=3, min_time_s=0.0))
    finally:
        t.close()
    mem = raw.data["memory_mb"]
    assert mem["peak_rss"] + 4 < mem["peak_rss_with_eval"]


def test_a_closed_target_starts_no_new_job(tmp_path, cnn_onnx):
    from targets import Job, LocalTarget

    t = LocalTarget("local-cpu")
    t.close()
    raw = t.run(Job(artifact=str(cnn_onnx), format="onnx"))
    assert not raw.ok and "was closed" in raw.error
