"""The local GPU target: onnxruntime's CUDA provider and PyTorch eager on CUDA.

It runs the same runner as every other target, from a Python that has onnxruntime-gpu
(the target's `python` setting). Without a GPU or provider, `probe` says so in one line
and each job fails its cell with that line, so a run goes on with the other targets.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from targets.base import Job, RawResult, register_target
from targets.errors import TargetError
from targets.local import LocalTarget
from targets.resident import ResidentRunner


def nvidia_smi() -> dict[str, Any] | None:
    """GPU name, driver and memory from nvidia-smi, or None when there is no NVIDIA GPU."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,temperature.gpu,clocks.sm",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    name, driver, mem, temp, clock = [s.strip() for s in out.stdout.strip().splitlines()[0].split(",")]
    return {"gpu_name": name, "driver": driver, "gpu_memory_total_mb": float(mem), "gpu_temperature_c": temp,
            "sm_clock_mhz": clock}


@register_target("gpu")
class GpuTarget(LocalTarget):
    """Runs ONNX on CUDAExecutionProvider and the torch baseline on cuda:0; TFLite stays on CPU."""

    SETTINGS = {"device": (str,), "providers": (list,)}

    def __init__(self, name: str = "local-gpu", threads: int | None = None, python: str | None = None,
                 device: str = "cuda:0", providers: list[str] | None = None, **settings: Any) -> None:
        super().__init__(name, threads, python=python, **settings)
        self.device = device
        self.providers = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self._missing: str | None = None

    def probe(self) -> dict[str, Any]:
        info = super().probe()
        gpu = nvidia_smi()
        if gpu is None:
            self._missing = f"target {self.name}: no NVIDIA GPU found (nvidia-smi absent or failing)"
            raise TargetError(self._missing)
        info.update(gpu)
        return info

    def _on_gpu(self, job: Job) -> Job:
        if job.format == "onnx":
            job.providers = job.providers or self.providers
        elif job.format == "torch":
            job.device = job.device or self.device
        return job

    def run(self, job: Job) -> RawResult:
        if self._missing:
            return RawResult.failed(self._missing)
        return super().run(self._on_gpu(job))

    def open_resident(self, job: Job, lifetime_s: float | None = None) -> ResidentRunner:
        if self._missing:
            raise TargetError(self._missing)
        return super().open_resident(self._on_gpu(job), lifetime_s)
