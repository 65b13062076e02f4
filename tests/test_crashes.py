"""Crashes are contained: a runner that segfaults, is killed like the OOM killer does, runs out of
address space, or hangs fails its own cell; the other cells and the other targets finish.

One run measures two cells on seven targets at once. Each misbehaving target is a device Python
(a wrapper script) that crashes for one cell's job and runs the real runner for the rest.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from sshd import free_port, pids_matching
from tiny import tiny_config

from harness.api import run_config
from harness.config.run import RunConfig

PY = sys.executable
TIMEOUT_S = 8

# Imports the runtimes, then caps the address space at what the process already uses: the
# runner's next allocations fail as they would on a board whose memory is exhausted.
ADDRESS_SPACE_CAP = """
import resource, runpy, sys
args = [a for a in sys.argv[1:] if a != "-u"]
import numpy, onnxruntime  # noqa: E401,F401
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm, vm))
sys.argv = args
runpy.run_path(args[0], run_name="__main__")
"""


def device_python(path: Path, action: str, when: str) -> str:
    """A Python that does `action` instead of running the runner when `when` (a shell test) holds."""
    path.write_text("#!/bin/sh\n"
                    "# The runner is started as PYTHON -u RUNNER JOB.json; probes and the watchdog pass through.\n"
                    f'if [ $# -eq 3 ] && [ "${{3##*.}}" = json ] && {when}; then\n  {action}\nfi\n'
                    f'exec {shlex.quote(PY)} "$@"\n')
    path.chmod(0o755)
    return str(path)


def job_for(artifact: str) -> str:
    return f"grep -q {shlex.quote(artifact)} \"$3\""


def first_job(marker: Path) -> str:
    # A device sees content-addressed file names only, so its wrapper picks the first job it gets.
    return f"[ ! -e {shlex.quote(str(marker))} ] && touch {shlex.quote(str(marker))}"



def test_crashing_runners_fail_only_their_cells(tmp_path, server):
    cap = tmp_path / "cap.py"
    cap.write_text(ADDRESS_SPACE_CAP)
    wrappers = tmp_path / "device-pythons"
    wrappers.mkdir()
    specs = {
        "segv": device_python(wrappers / "segv", "kill -SEGV $$", job_for("int8-dynamic.onnx")),
        "oom-killed": device_python(wrappers / "oom", "kill -KILL $$", job_for("fp32.onnx")),
        "no-memory": device_python(wrappers / "as", f'exec {shlex.quote(PY)} {shlex.quote(str(cap))} "$@"',
                                   job_for("int8-dynamic.onnx")),
        "hangs": device_python(wrappers / "hang", "exec sleep 600", job_for("fp32.onnx")),
    }
    lines = [f'[targets.{name}]\nkind = "local"\npython = "{py}"\n' for name, py in specs.items()]
    names = ["local-cpu", *specs]
    workdir = tmp_path / "device workdir"
    if server is not None:
        kh = tmp_path / "known_hosts"
        kh.write_text(server.known_hosts_line())
        ssh_py = device_python(wrappers / "ssh-segv", "kill -SEGV $$", first_job(tmp_path / "ssh-crashed"))
        lines.append(server.target_toml("ssh-segv", kh, python=ssh_py, workdir=str(workdir)))
        lines.append(f'[targets.gone]\nhost = "127.0.0.1"\nport = {free_port()}\nknown_hosts = "{kh}"\n'
                     'ssh_config = ""\nconnect_timeout_s = 2\n')
        names += ["ssh-segv", "gone"]
    tf = tmp_path / "targets.toml"
    tf.write_text("".join(lines))
    cfg = RunConfig.from_dict(tiny_config(
        name="crashes",
        variants=[{"name": "fp32", "formats": ["onnx"]},
                  {"name": "int8-dynamic", "precision": "int8-dynamic", "formats": ["onnx"]}],
        measure={"timeout_s": TIMEOUT_S}))
    t0 = time.monotonic()
    result = run_config(cfg, out=tmp_path / "out", targets_file=tf, target_names=names,
                        cache_dir=tmp_path / "cache")
    took = time.monotonic() - t0

    def cells(target: str) -> dict[str, tuple[str, str | None]]:
        return {m.variant: (m.status, m.error) for m in result.reports[target].measurements}

    expected_failures = {
        "segv": ("int8-dynamic", "runner died with SIGSEGV"),
        "oom-killed": ("fp32", "runner died with SIGKILL (killed: out of memory?)"),
        "no-memory": ("int8-dynamic", "(out of memory on the device?)"),
        "hangs": ("fp32", f"timed out after {TIMEOUT_S} s (runner killed)"),
        "ssh-segv": ("fp32", "runner died with SIGSEGV"),
    }
    assert set(cells("local-cpu").values()) == {("ok", None)}
    for target in names[1:]:
        got = cells(target)
        assert set(got) == {"fp32", "int8-dynamic"}, (target, got)
        if target == "gone":
            for status, error in got.values():
                assert status == "failed" and error.startswith("target unavailable: target gone: cannot reach")
            continue
        variant, reason = expected_failures[target]
        status, error = got.pop(variant)
        assert status == "failed" and reason in error and "\n" not in error, (target, error)
        ((other_status, other_error),) = got.values()
        assert other_status == "ok", (target, other_error)  # the other cell on the same device is measured
    # Every report is on disk with both rows, and the summary covers every target.
    for target in names:
        written = json.loads((tmp_path / "out" / target / "report.json").read_text())
        assert len(written["measurements"]) == 2
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert all(t in summary for t in names)
    # Nothing left running or lying around: the hung runner was killed with its process group.
    assert not pids_matching(str(wrappers)) and not pids_matching("sleep 600")
    if server is not None:
        assert os.listdir(workdir / "jobs") == []
    assert took < TIMEOUT_S + 60, took  # the targets ran side by side: one hang does not hold the others
