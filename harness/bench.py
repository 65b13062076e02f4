"""`edge-harness bench`: measure one model file from anywhere on one target."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from exporters.base import Artifact
from exporters.graph import onnx_graph_stats
from harness import __version__
from harness.config.run import MeasureConfig
from harness.config.targets_file import load_targets_file, make_target
from harness.errors import ConfigError, ModelError
from harness.measure.fold import to_measurement
from harness.measure.inputs import declared_inputs, format_of, generate, with_shapes
from harness.measure.jobs import runtime_options, timing_job
from harness.measure.metrics import annotate
from harness.measure.output_check import output_check
from harness.measure.results import TargetReport
from harness.progress import Progress
from harness.report.files import write_summary, write_target_report


@dataclass
class BenchSettings:
    """`bench`'s options; timed under the same measurement settings a config's cells use."""

    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    min_time_s: float = 0.5
    mode: str = "fixed"
    timeout_s: float = 600.0
    max_time_s: float = 60.0
    trust_pickle: bool = False  # a .pt2 file is a pickle: loading it runs whatever code it carries
    shapes: dict[str, list[int]] = field(default_factory=dict)  # sizes for dynamic dims of generated inputs
    batch: int | None = None  # batch size (generated inputs: dim 0; given inputs: samples repeated on the device)
    profile: bool = False  # a per-operator profile after the timed runs
    # Runtime options, as the runtimes name them (targets.base.RUNTIME_OPTIONS); None: the target's or default.
    options: dict[str, object] = field(default_factory=dict)

    def measure_config(self) -> MeasureConfig:
        return MeasureConfig(runs=self.runs, warmup=self.warmup, threads=self.threads, min_time_s=self.min_time_s,
                             mode=self.mode, timeout_s=self.timeout_s, max_time_s=self.max_time_s,
                             profile=self.profile)


def check_inputs_file(path: Path) -> None:
    """Fail early, in one line, on an inputs file that is missing, unreadable or empty."""
    if not path.is_file():
        raise ConfigError(f"inputs file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            shapes = {k: f[k].shape for k in names}
    except Exception as e:
        raise ConfigError(f"{path}: not a readable .npz ({' '.join(str(e).split())[:200]})") from None
    if not names:
        raise ConfigError(f"{path}: the .npz holds no arrays")
    empty = [k for k, shape in shapes.items() if shape and shape[0] == 0]
    if empty:  # a batch of nothing would time nothing: the figures would describe no inference at all
        raise ConfigError(f"{path}: array {empty[0]!r} holds no samples (shape {list(shapes[empty[0]])})")


def bench(model: Path, target: str | list[str] = "local-cpu", targets_file: Path | None = None,
          inputs: Path | None = None, settings: BenchSettings | None = None, out: Path = Path("reports/bench"),
          progress: Progress | None = None) -> tuple[list[TargetReport], Path]:
    """Measure `model` on each target; writes OUT/<target>/report.json per target and OUT/summary.* across them.

    Returns the reports and OUT. A target whose cell fails keeps its report; when every target failed, the
    first failure is raised (one line)."""
    settings = settings or BenchSettings()
    progress = progress or Progress(quiet=True)
    names = [target] if isinstance(target, str) else list(dict.fromkeys(target)) or ["local-cpu"]
    model = Path(model).expanduser()
    if not model.is_file():
        raise ModelError(f"model file not found: {model}")
    fmt = format_of(model)
    if fmt == "torch" and not settings.trust_pickle:
        raise ModelError(f"{model}: a .pt2 file is loaded with pickle (torch.export.load), which runs any code "
                         f"inside it; pass --trust-pickle only for a file whose source you trust")
    if settings.runs < 1 or settings.warmup < 0:
        raise ConfigError("--runs must be >= 1 and --warmup >= 0")
    if inputs is not None and settings.shapes:
        raise ConfigError("--shape sizes generated inputs; with --inputs the file's arrays are timed as they are "
                          "(pass one or the other)")
    specs = load_targets_file(targets_file)
    for name in names:
        if name not in specs:
            make_target(name, specs)  # the targets file's own one-line error for an unknown name
    reports = []
    with tempfile.TemporaryDirectory(prefix="edge-harness-bench-") as tmp:
        if inputs is not None:
            inputs = Path(inputs).expanduser()
            check_inputs_file(inputs)
            timing = inputs
        else:
            feeds = generate(with_shapes(declared_inputs(model, fmt), settings.shapes, settings.batch))
            timing = Path(tmp) / "inputs.npz"
            np.savez(timing, **feeds)
            progress("generated inputs: " + ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in feeds.items()))
        artifact = Artifact.from_file(model, fmt)
        if fmt == "onnx":
            artifact = _with_graph_stats(artifact)
        for name in names:
            reports.append(_bench_on(name, specs, model, fmt, artifact, Path(timing), settings, inputs is not None,
                                     progress))
    for report in reports:
        write_target_report(report, out)
    write_summary(reports, out)
    failed = [r for r in reports if not r.measurements[0].ok]
    if len(failed) == len(reports):
        r = failed[0]
        raise ModelError(f"{model.name} on {r.target['name']}: {r.measurements[0].error}")
    return reports, Path(out)


def _bench_on(name: str, specs: dict, model: Path, fmt: str, artifact: Artifact, timing: Path,
              settings: BenchSettings, given_inputs: bool, progress: Progress) -> TargetReport:
    """One target's report of the model: timed, profiled when asked, its outputs checked against this host's."""
    tgt = make_target(name, specs, threads=settings.threads)
    with tgt:
        with progress.step(f"measuring {model.name} on {tgt.name}"):
            job = timing_job(tgt, model, fmt, timing, settings.measure_config(),
                             threads=settings.threads or tgt.threads, affinity=tgt.settings.get("affinity"),
                             options=runtime_options(tgt, settings.options),
                             batch=settings.batch if given_inputs else None)
            job.eval_inputs = job.timing_inputs  # the device's outputs on them, for the output check
            raw = tgt.run(job)
        m = to_measurement(model.stem, artifact, raw, job, tgt)
        if m.ok:
            check = output_check(model, fmt, timing, raw)
            m.accuracy = {k: check[k] for k in ("n", "agreement", "max_abs_diff") if check.get(k) is not None}
            m.settings["output_check"] = check
            progress(f"output check against this host's {check.get('host_runtime', 'runtime')}: "
                     + ("ok" if check.get("passed") else check.get("reason", "not made")))
        if m.op_profile and m.op_profile.get("error"):
            progress(f"op profile: {m.op_profile['error']}")
        desc = tgt.describe()
    desc["device"] = raw.data.get("device") if raw.data else None
    report = TargetReport(target=desc, measurements=[m], task={"source": "bench", "model": str(model)},
                          created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          harness_version=__version__)
    annotate(report)
    return report


def _with_graph_stats(artifact: Artifact) -> Artifact:
    try:
        stats = onnx_graph_stats(Path(artifact.path))
    except Exception:
        return artifact  # counting MACs is a nicety; a model the counter can't read is still measured
    artifact.params, artifact.macs = stats.get("params"), stats.get("macs")
    return artifact
