"""The flow of a run: data -> fine-tuned reference -> variants -> artifacts -> checked cells.

`prepare` does the host-side work once (training, compression, export, parity); `measure`
then runs every checked artifact on one target. Failures stay in their cell.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporters.base import Artifact, sha256_file
from harness.config import RunConfig, VariantConfig
from harness.errors import ConfigError, ExportError, HarnessError, ModelError
from harness.progress import Progress


@dataclass
class Cell:
    """One variant in one format: its artifact once exported, or why it has none."""

    variant: VariantConfig
    format: str
    artifact: Artifact | None = None
    error: str | None = None
    status: str = "pending"  # pending | ready | failed | skipped

    @property
    def key(self) -> str:
        return f"{self.variant.name}/{self.format}"


@dataclass
class TorchVariant:
    """A compressed torch model (before any export) and what the recipe reported."""

    key: str
    recipe: str
    settings: dict[str, Any]
    model: Any
    info: dict[str, Any]
    outputs: np.ndarray | None = None  # logits on the evaluation inputs
    graph: dict[str, Any] = field(default_factory=dict)  # params / MACs from the fp32 ONNX graph
    digest: str = ""  # content hash of architecture + weights: the key of cached exports


class Prepared:
    """What `prepare` built: data, reference, variants, checked cells and evaluation inputs."""

    def __init__(self) -> None:
        self.task: dict[str, Any] = {}
        self.cells: list[Cell] = []
        self.torch_variants: dict[str, TorchVariant] = {}
        self.eval_inputs: Path | None = None
        self.timing_inputs: Path | None = None
        self.labels: np.ndarray | None = None
        self.n_clean = 0
        self.reference_outputs: np.ndarray | None = None


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGE_HARNESS_CACHE", Path.home() / ".cache" / "edge-harness"))


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_digest(model: Any) -> str:
    """Content hash of a torch model: its architecture (repr) and every tensor in its state."""
    h = hashlib.sha256(repr(model).encode())
    for k, t in model.state_dict().items():
        h.update(k.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _exporter_hash() -> str:
    """Exporter code and converter versions: a change to either makes new artifacts."""
    from importlib import metadata

    h = hashlib.sha256()
    for f in sorted((Path(__file__).parent.parent / "exporters").glob("*.py")):
        h.update(f.read_bytes())
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime", "onnxconverter-common", "litert-torch",
                 "ai-edge-quantizer"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def _model_code_hash(factory: str | None) -> str:
    """The code a fine-tuned checkpoint depends on: ours, and the user's factory module's source."""
    h = hashlib.sha256(_code_hash().encode())
    if factory:
        import inspect

        try:
            src = inspect.getsourcefile(import_factory(factory))
            if src:
                h.update(Path(src).read_bytes())
        except (TypeError, OSError):
            pass  # a compiled or built-in factory: its name alone keys the cache
    return h.hexdigest()[:16]


def _code_hash() -> str:
    """Hash of the code that shapes a variant, so a changed recipe never reuses a stale cache entry."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("recipes.py", "models.py", "training.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def load_data(cfg: RunConfig) -> Any:
    from harness import data as D

    dc = cfg.data
    if dc.source == "textures":
        return D.load_textures(patch=dc.patch, seed=dc.seed, per_class=dc.per_class)
    if dc.source == "npz":
        return D.load_npz(Path(dc.path or ""))
    return D.load_image_folder(Path(dc.path or ""), size=dc.patch, seed=dc.seed)


def import_factory(spec: str) -> Any:
    """Resolve 'package.module:function'; import errors become one-line config errors."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # a user's module may raise anything on import
        hint = " (is its folder on PYTHONPATH?)" if isinstance(e, ModuleNotFoundError) and e.name == mod_name else ""
        raise ConfigError(f"model.factory: importing {mod_name!r} failed: {type(e).__name__}: {e}{hint}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"model.factory: {mod_name!r} has no function {fn_name!r}")
    return fn


def load_checkpoint(model: Any, path: Path) -> Any:
    """Load a state dict into `model`; a file that does not fit says which keys disagree."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"checkpoint {path}: cannot be read as a torch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise ModelError(f"checkpoint {path} does not fit the model: {first[:300]}") from None
    return model


def check_fits_data(model: Any, data: Any, name: str) -> None:
    """A user's model must take the task's samples and return one score per class: say so in one line."""
    import torch

    x = torch.from_numpy(data.x_test[:2])
    try:
        with torch.no_grad():
            y = model.eval()(x)
    except Exception as e:
        why = " ".join(str(e).split())[:300]
        raise ModelError(f"model {name} does not accept the data's samples (float32 {list(x.shape)[1:]}, from "
                         f"{data.name}): {type(e).__name__}: {why}") from None
    want = (len(x), len(data.classes))
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
    if got != want:
        raise ModelError(f"model {name} returns {got} for {len(x)} samples; expected {want}: one score per class "
                         f"({len(data.classes)} classes in {data.name})")


class Pipeline:
    """Builds every cell of a config once; targets then measure the ready cells."""

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None,
                 cache_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.progress = progress or Progress(quiet=True)
        self.cache = Path(cache_dir or cfg.cache_dir or default_cache_dir()).expanduser()
        self.art_dir = self.out / "artifacts"

    # ------------------------------------------------------------------ reference
    def reference(self, data: Any, prep: Prepared) -> tuple[Any, str]:
        """The fine-tuned fp32 torch model and its checkpoint hash."""
        import torch

        from harness import models as M
        from harness import training as T

        mc, fc = self.cfg.model, self.cfg.finetune
        n_classes = len(data.classes)
        if mc.factory:
            factory = import_factory(mc.factory)

            def build() -> Any:
                try:
                    model = factory(num_classes=n_classes)
                except Exception as e:
                    raise ConfigError(f"model.factory {mc.factory} raised {type(e).__name__}: {e}") from None
                if not isinstance(model, torch.nn.Module):
                    raise ConfigError(f"model.factory {mc.factory} returned {type(model).__name__}, not a "
                                      f"torch.nn.Module")
                if mc.checkpoint:
                    load_checkpoint(model, Path(mc.checkpoint))
                check_fits_data(model, data, mc.factory or "")
                return model
            name = mc.factory
            ckpt_hash = sha256_file(Path(mc.checkpoint)) if mc.checkpoint else None
        else:
            def build() -> Any:
                model = M.build_model(mc.builtin or "", n_classes, pretrained=mc.pretrained)
                check_fits_data(model, data, mc.builtin or "")
                return model
            name, ckpt_hash = mc.builtin, None
        if fc.epochs == 0 and fc.unfreeze_epochs == 0:
            torch.manual_seed(self.cfg.seed)  # a random head must be the same in every run (lineage, --resume)
            model = build().eval()
            sha = ckpt_hash or _key(name, "untrained")
        else:
            with self.progress.step(f"fine-tuning {name} on {data.name} ({len(data.y_train)} train samples)"):
                model, sha = T.finetune_cached(
                    build, data, self.cache / "checkpoints", {"model": name, "checkpoint": ckpt_hash,
                                                              "pretrained": mc.pretrained,
                                                              "code": _model_code_hash(mc.factory)},
                    epochs=fc.epochs, unfreeze_epochs=fc.unfreeze_epochs, lr=fc.lr, batch_size=fc.batch_size,
                    seed=self.cfg.seed, progress=self.progress)
        model.eval()
        prep.task["model"] = name
        prep.task["checkpoint_sha256"] = sha
        prep.task["finetuned_top1"] = T.evaluate(model, data.x_test, data.y_test)
        if fc.baselines and mc.builtin:
            with self.progress.step("training baselines without the pretrained weights"):
                prep.task["baselines"] = self.baselines(data, build_scratch=lambda: M.build_model(
                    mc.builtin or "", n_classes, pretrained=False))
        return model, sha

    def baselines(self, data: Any, build_scratch: Any) -> dict[str, float]:
        """Accuracy without transfer: the same network from random weights, and pixels + a linear model."""
        from harness import recipes as R
        from harness import training as T

        fc = self.cfg.finetune
        # Trained whole (a head on random features learns nothing): the fair no-transfer baseline.
        scratch, _ = T.finetune_cached(build_scratch, data, self.cache / "checkpoints",
                                       {"model": self.cfg.model.builtin, "pretrained": False},
                                       epochs=fc.scratch_epochs, lr=1e-3, batch_size=fc.batch_size,
                                       seed=self.cfg.seed)
        # BatchNorm running statistics lag far behind a network trained from scratch for a few
        # epochs (eval mode then predicts one class); re-estimate them on the training data.
        R.recalibrate_bn(scratch, data)
        return {"same network, random init": T.evaluate(scratch.eval(), data.x_test, data.y_test),
                "linear model on pixels": T.pixel_baseline_accuracy(data)}

    # ------------------------------------------------------------------- variants
    def torch_variant(self, v: VariantConfig, reference: Any, ref_sha: str, data: Any,
                      prep: Prepared) -> TorchVariant:
        """Apply a recipe once per (recipe, settings), cached on disk by content."""
        import torch

        from harness import recipes as R

        key = _key(v.recipe, v.settings)
        if key in prep.torch_variants:
            return prep.torch_variants[key]
        if v.recipe == "reference":
            model, info = R.apply_recipe("reference", reference, data, {})
        else:
            key_parts = (ref_sha, data.fingerprint(), v.recipe, v.settings, _code_hash())
            cache_file = self.cache / "variants" / f"{_key(*key_parts)}.pt"
            if cache_file.is_file():
                blob = torch.load(cache_file, map_location="cpu", weights_only=False)
                model, info = blob["model"], blob["info"]
                self.progress(f"recipe {v.recipe} {v.settings}: cached")
            else:
                with self.progress.step(f"recipe {v.recipe} {v.settings}"):
                    model, info = R.apply_recipe(v.recipe, reference, data, dict(v.settings),
                                                 progress=self.progress)
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(".tmp")
                torch.save({"model": model, "info": info}, tmp)
                os.replace(tmp, cache_file)
        model.eval()
        tv = TorchVariant(key=key, recipe=v.recipe, settings=info.get("settings", v.settings), model=model, info=info,
                          digest=model_digest(model))
        prep.torch_variants[key] = tv
        return tv

    # -------------------------------------------------------------------- exports
    def export_cell(self, cell: Cell, tv: TorchVariant, data: Any, ref_sha: str, prep: Prepared) -> None:
        """Export one cell, check parity against its torch model, and record lineage."""
        import torch

        from exporters import EXPORTERS
        from exporters.parity import check_artifact

        v = cell.variant
        ext = {"onnx": ".onnx", "tflite": ".tflite", "torch": ".pt2"}[cell.format]
        path = self.art_dir / f"{v.name}{ext}"
        path.unlink(missing_ok=True)  # an earlier run's file must never stand in for a failed export
        example = (torch.from_numpy(data.x_test[:1]),)
        calib = data.x_train[: min(64, len(data.x_train))] if v.precision == "int8-static" else None
        calib_hash = None if calib is None else hashlib.sha256(calib.tobytes()).hexdigest()
        key = _key(tv.digest, cell.format, v.precision, _exporter_hash(), calib_hash)
        cached = self.cache / "artifacts" / f"{key}{ext}"
        try:
            if cached.is_file():
                shutil.copyfile(cached, path)
                self.progress(f"export {cell.key} ({v.precision}): cached")
            else:
                with self.progress.step(f"export {cell.key} ({v.precision})"):
                    EXPORTERS[cell.format](tv.model, example, v.precision, path, calibration=calib)
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
                shutil.copyfile(path, tmp)
                os.replace(tmp, cached)
        except ExportError as e:
            cell.status, cell.error = "failed", f"export failed: {e}"
            return
        except Exception as e:  # a converter bug must not stop the other cells
            cell.status, cell.error = "failed", f"export failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            return
        par = check_artifact(path, cell.format, v.precision, self.parity_inputs(data), self.parity_reference(tv, data),
                             min_agreement=None, timeout_s=self.cfg.measure.timeout_s)
        art = Artifact.from_file(path, cell.format, v.precision)
        if not tv.graph and cell.format == "onnx" and v.precision == "fp32":
            self.graph_stats(tv, data, path)
        art.params = tv.graph.get("params") or tv.info.get("params")
        art.macs = tv.graph.get("macs")
        art.sparsity = tv.info.get("sparsity")
        art.parity = par.to_dict()
        art.lineage = {
            "base": {"model": prep.task.get("model"), "checkpoint_sha256": ref_sha},
            "data_fingerprint": data.fingerprint()[:16],
            "recipe": v.recipe, "settings": tv.settings, "precision": v.precision, "format": cell.format,
            "artifact_sha256": art.sha256,
        }
        cell.artifact = art
        if par.passed:
            cell.status = "ready"
        else:
            cell.status, cell.error = "failed", f"parity check failed: {par.reason}"
        self.progress(f"parity {cell.key}: max abs diff {par.max_abs_diff:.2e}, agreement {par.agreement:.2f} "
                      f"-> {'ok' if par.passed else 'FAILED'}")

    def parity_inputs(self, data: Any) -> Path:
        """The held-out samples every artifact is checked on, written once per run (never a stale file)."""
        path = self.art_dir / "parity_inputs.npz"
        if not getattr(self, "_parity_written", False):
            np.savez(path, input=data.x_test[: self.cfg.measure.parity_samples])
            self._parity_written = True
        return path

    def parity_reference(self, tv: TorchVariant, data: Any) -> np.ndarray:
        from harness import training as T

        n = self.cfg.measure.parity_samples
        return T.predict(tv.model, data.x_test[:n])

    def graph_stats(self, tv: TorchVariant, data: Any, onnx_fp32: Path | None = None) -> None:
        """Params and MACs counted from the variant's fp32 ONNX graph (its own cell's, or one made for it)."""
        import torch

        from exporters import EXPORTERS
        from exporters.graph import onnx_graph_stats

        path = onnx_fp32 or self.cache / "graphs" / f"{tv.digest}.onnx"
        try:
            if not path.exists():
                EXPORTERS["onnx"](tv.model, (torch.from_numpy(data.x_test[:1]),), "fp32", path)
            tv.graph = onnx_graph_stats(path)
        except Exception as e:
            self.progress(f"MAC count for {tv.recipe} unavailable: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------- prepare
    def prepare(self, only: list[str] | None = None) -> Prepared:
        """Data, reference, variants, exports and parity: everything before the targets."""
        from harness import data as D
        from harness import training as T

        prep = Prepared()
        self.art_dir.mkdir(parents=True, exist_ok=True)
        with self.progress.step("loading data"):
            data = load_data(self.cfg)
        prep.task.update(dataset=data.name, classes=len(data.classes), class_names=list(data.classes),
                         n_train=int(len(data.y_train)), n_test=int(len(data.y_test)),
                         input_shape=list(data.input_shape), max_accuracy_drop=self.cfg.report.max_accuracy_drop,
                         constraints={k: v for k, v in vars(self.cfg.report).items() if v is not None})
        reference, ref_sha = self.reference(data, prep)
        variants = [v for v in self.cfg.variants if not only or v.name in only]
        if only and not variants:
            raise ConfigError(f"--only {', '.join(only)}: no such variant (have: "
                              f"{', '.join(v.name for v in self.cfg.variants)})")
        # Evaluation inputs: the clean test set, then a shifted copy; the device runs both.
        n_eval = self.cfg.data.eval_samples or len(data.x_test)
        x_clean, y = data.x_test[:n_eval], data.y_test[:n_eval]
        xs = [x_clean] + ([D.shifted(x_clean, seed=self.cfg.seed)] if self.cfg.data.shifted else [])
        x_eval = np.concatenate(xs)
        prep.eval_inputs = self.art_dir / "eval_inputs.npz"
        np.savez(prep.eval_inputs, input=x_eval)
        prep.timing_inputs = self.art_dir / "timing_inputs.npz"
        np.savez(prep.timing_inputs, input=data.x_test[:1])
        prep.labels, prep.n_clean = y, len(y)
        prep.reference_outputs = T.predict(reference, x_eval)
        prep.task["reference_top1"] = float(np.mean(prep.reference_outputs[: len(y)].argmax(1) == y))
        if self.cfg.data.shifted:
            prep.task["reference_top1_shifted"] = float(np.mean(prep.reference_outputs[len(y):].argmax(1) == y))
        prep.task["reference_variant"] = next((v.name for v in self.cfg.variants
                                               if v.recipe == "reference" and v.precision == "fp32"), "fp32")
        for v in variants:
            try:
                tv = self.torch_variant(v, reference, ref_sha, data, prep)
            except HarnessError:
                raise  # a bad setting is the user's to fix: stop with its message
            except Exception as e:
                for fmt in v.formats:
                    prep.cells.append(Cell(v, fmt, status="failed",
                                           error=f"recipe {v.recipe} failed: {type(e).__name__}: {e}"))
                continue
            if tv.outputs is None:
                tv.outputs = T.predict(tv.model, x_eval)
                tv.info["host_top1"] = float(np.mean(tv.outputs[: len(y)].argmax(1) == y))
            # The fp32 ONNX cell first: its graph gives params and MACs to the variant's other cells.
            fmts = sorted(v.formats, key=lambda f: f != "onnx")
            cells = [Cell(v, f) for f in fmts]
            for cell in cells:
                self.export_cell(cell, tv, data, ref_sha, prep)
            if not tv.graph:
                self.graph_stats(tv, data)
            for cell in cells:
                if cell.artifact is not None:
                    cell.artifact.params = tv.graph.get("params") or tv.info.get("params")
                    cell.artifact.macs = tv.graph.get("macs")
            prep.cells.extend(sorted(cells, key=lambda c: v.formats.index(c.format)))
        return prep
