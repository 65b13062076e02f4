"""The flow of a run: data -> fine-tuned reference -> variants -> artifacts -> checked cells.

`prepare` does the host-side work once (training, compression, export, parity); `measure`
then runs every checked artifact on one target. Failures stay in their cell.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exporters.base import Artifact
from exporters.graph import onnx_graph_stats
from harness.build import data as D
from harness.build import recipes as R
from harness.build import samples as S
from harness.build import signed_cache
from harness.build import task as TK
from harness.build.cache import (
    array_hash,
    cached_result,
    code_hash,
    content_key,
    default_cache_dir,
    exporter_hash,
    model_digest,
    parity_key,
)
from harness.build.cells import Cell, Prepared, TorchVariant
from harness.build.export_pool import ExportOutcome, ExportPool, ExportTask, export_one, workers_for
from harness.build.fit_inputs import predict_any
from harness.build.graphs import graph_path, graph_task, plan_graphs
from harness.build.parity import Parity, check_artifact
from harness.build.reference import baselines, train_reference
from harness.config.run import RunConfig, VariantConfig
from harness.errors import ConfigError, ExportError
from harness.progress import Progress


def meta_file(cache_file: Path) -> Path:
    """The small signed entry beside a cached variant: its digest and the recipe's info."""
    return cache_file.with_suffix(".meta")


EXTENSIONS = {"onnx": ".onnx", "tflite": ".tflite", "torch": ".pt2"}
PARITY_PARALLEL = 2  # parity checks at once: most of one is a runner's start-up (torch's: seconds)


def expected_groups(variants: list[VariantConfig]) -> int:
    """About how many export groups a config makes (before any recipe runs): one per distinct model and format
    (the reference's precisions, and a recipe that keeps its weights, share one)."""
    same_model = ("reference", "mixed_precision")
    return len({("reference" if v.recipe in same_model else content_key(v.recipe, v.settings), f)
                for v in variants for f in v.formats})


def load_data(cfg: RunConfig) -> Any:
    return D.load(cfg.data, regression=TK.regression_labels(cfg))


class Pipeline:
    """Builds every cell of a config once; targets then measure the ready cells."""

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None,
                 cache_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.progress = progress or Progress(quiet=True)
        self.cache = Path(cache_dir or cfg.cache_dir or default_cache_dir()).expanduser()
        self.art_dir = self.out / "artifacts"
        self._outputs: dict[str, np.ndarray] = {}
        self._export_workers = 0
        self._pool = ExportPool(0)

    # ------------------------------------------------------------------ reference
    def reference(self, data: Any, prep: Prepared) -> tuple[Any, str]:
        """The trained fp32 torch model and its checkpoint hash (and the no-transfer baselines)."""
        model, sha = train_reference(self.cfg, data, self.cache, self.progress, prep.task)
        if self.cfg.finetune.baselines and self.cfg.model.builtin:
            with self.progress.step("training baselines without the pretrained weights", stage="baselines",
                                    log="train-baselines"):
                prep.task["baselines"] = baselines(self.cfg, data, self.cache)
        return model, sha

    # ------------------------------------------------------------------- variants
    def torch_variant(self, v: VariantConfig, reference: Any, ref_sha: str, data: Any,
                      prep: Prepared) -> TorchVariant:
        """Apply a recipe once per (recipe, settings), cached on disk by content."""
        key = content_key(v.recipe, v.settings)
        if key in prep.torch_variants:
            return prep.torch_variants[key]
        if v.recipe == "reference":
            model, info = R.apply_recipe("reference", reference, data, {})
        else:
            key_parts = (ref_sha, data.fingerprint(), v.recipe, v.settings, code_hash())
            cache_file = self.cache / "variants" / f"{content_key(*key_parts)}.pt"
            lazy = self.cached_variant(key, v, cache_file)
            if lazy is not None:
                prep.torch_variants[key] = lazy
                self.progress(f"recipe {v.recipe} {v.settings}: cached")
                return lazy
            raw = signed_cache.signed_bytes(cache_file)  # unsigned or tampered entries are a miss, never unpickled
            blob = None if raw is None else signed_cache.loads(raw)
            blob_sha = None if raw is None else hashlib.sha256(raw).hexdigest()
            if blob is not None:
                model, info = blob["model"], blob["info"]
                self.progress(f"recipe {v.recipe} {v.settings}: cached")
            else:
                with self.progress.step(f"recipe {v.recipe} {v.settings}", stage=f"recipe {v.recipe}",
                                        log=f"recipe-{v.name}"):
                    model, info = R.apply_recipe(v.recipe, reference, data, dict(v.settings),
                                                 progress=self.progress)
                try:
                    blob_sha = signed_cache.save({"model": model, "info": info}, cache_file)
                except Exception as e:  # noqa: BLE001 - e.g. an exported graph that does not pickle
                    self.progress(f"recipe {v.recipe}: not cached ({type(e).__name__})")
        model.eval()
        tv = TorchVariant(key=key, recipe=v.recipe, settings=info.get("settings", v.settings), model=model, info=info,
                          digest=model_digest(model))
        if v.recipe != "reference" and blob_sha is not None:  # for a lazy rerun: the digest, and its bytes
            signed_cache.save({"digest": tv.digest, "info": info, "blob_sha256": blob_sha}, meta_file(cache_file))
        prep.torch_variants[key] = tv
        return tv

    def cached_variant(self, key: str, v: VariantConfig, cache_file: Path) -> TorchVariant | None:
        """A cached recipe's variant whose model stays on disk until a step needs it: its digest and info come
        from a small signed entry beside it, and the model's own signature is checked now."""
        meta = signed_cache.load(meta_file(cache_file))
        blob = signed_cache.signed_bytes(cache_file) if meta is not None else None
        if blob is None or meta.get("blob_sha256") != hashlib.sha256(blob).hexdigest():
            return None  # no entry, or one written for other bytes (the variant was made again): read the model

        def load() -> Any:
            blob = signed_cache.load(cache_file)
            if blob is None:
                raise ExportError(f"the cached {v.recipe} variant {cache_file} changed during the run; run again")
            return blob["model"]

        info = meta["info"]
        return TorchVariant(key=key, recipe=v.recipe, settings=info.get("settings", v.settings), model=None,
                            info=info, digest=meta["digest"], load=load)

    # -------------------------------------------------------------------- exports
    def plan_export(self, cell: Cell, tv: TorchVariant, data: Any) -> ExportTask | None:
        """Put a cached artifact in place (None), or return the export to run for this cell."""
        v = cell.variant
        ext = EXTENSIONS[cell.format]
        path = self.artifact_path(cell)
        path.unlink(missing_ok=True)  # an earlier run's file must never stand in for a failed export
        example, options = TK.export_example(data), TK.export_options(data)  # named inputs: names, dynamic dims
        calib = data.x_train[: min(64, len(data.x_train))] if v.precision == "int8-static" else None
        calib_hash = None if calib is None else hashlib.sha256(calib.tobytes()).hexdigest()
        keep_float = tuple(tv.info.get("float_layers") or ())
        # The example's shapes too: a CNN's weights do not change with the resolution, a fixed-shape file does.
        key = content_key(tv.digest, cell.format, v.precision, exporter_hash(), calib_hash, keep_float,
                          [list(t.shape) for t in example], repr(options))
        cached = self.cache / "artifacts" / f"{key}{ext}"
        try:
            if cached.is_file():
                shutil.copyfile(cached, path)
                self.progress(f"export {cell.key} ({v.precision}): cached")
                return None
            return ExportTask(cell.format, tv.torch_model(), example, v.precision, path,
                              dict(calibration=calib, keep_float=keep_float, **options),
                              log=self.progress.log_path(f"export-{v.name}-{cell.format}"), tag=cell,
                              cache_to=cached)
        except Exception as e:  # noqa: BLE001 - an unreadable cache entry or variant fails this cell only
            cell.status, cell.error = "failed", f"export failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            return None

    def export_done(self, task: ExportTask, outcome: ExportOutcome) -> None:
        """An export has finished (here or in a worker): keep the artifact in the cache, or fail its cell."""
        cell: Cell | None = task.tag
        if cell is None:  # a graph made for a MAC count: graph_stats reads it (or says why there is none)
            self.progress.record("graphs", f"graph {task.path.name}", outcome.seconds, outcome.ok,
                                 outcome.cpu_s)
            return
        name = f"export {cell.key} ({cell.variant.precision})"
        stage = "export (in a worker)" if self._export_workers else "exports"
        self.progress.record(stage, name, outcome.seconds, outcome.ok, outcome.cpu_s)
        if outcome.ok and not task.path.is_file():
            outcome = ExportOutcome(False, "export failed: the exporter wrote no file", outcome.seconds, outcome.cpu_s)
        if not outcome.ok:
            cell.status, cell.error = "failed", f"{outcome.error}{self._log_note(cell)}"
            self.progress(f"{name}: FAILED in {outcome.seconds:.1f}s{self._log_note(cell)}")
            return
        cached = task.cache_to
        assert cached is not None  # every cell's task has one (graph tasks have no cell)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        shutil.copyfile(task.path, tmp)
        os.replace(tmp, cached)
        self.progress(f"{name}: done in {outcome.seconds:.1f}s")

    def artifact_path(self, cell: Cell) -> Path:
        return self.art_dir / f"{cell.variant.name}{EXTENSIONS[cell.format]}"

    def parities(self, built: list[tuple[VariantConfig, TorchVariant, list[Cell]]], data: Any) -> dict[int, Any]:
        """Every exported cell's artifact and parity verdict, PARITY_PARALLEL checks at a time (each runs the
        artifact in a runner process; a verdict does not depend on what else runs)."""
        todo = [(cell, tv) for _, tv, cells in built for cell in cells if cell.status != "failed"]
        for _, tv, _ in built:
            self.parity_reference(tv, data)  # torch's outputs first, here: the checks then only read them

        def check(item: tuple[Cell, TorchVariant]) -> tuple[Artifact, Parity]:
            cell, tv = item
            art = Artifact.from_file(self.artifact_path(cell), cell.format, cell.variant.precision)
            return art, self.parity(cell, art, tv, data)

        with ThreadPoolExecutor(max_workers=PARITY_PARALLEL) as pool:
            return {id(cell): r for (cell, _), r in zip(todo, pool.map(check, todo), strict=True)}

    def finish_cell(self, cell: Cell, tv: TorchVariant, data: Any, ref_sha: str, prep: Prepared,
                    checked: tuple[Artifact, Parity]) -> None:
        """An exported cell: its parity verdict, its graph's counts, and its lineage."""
        if cell.status == "failed":
            return
        v = cell.variant
        path = self.artifact_path(cell)
        options = TK.export_options(data)
        art, par = checked
        dynamic = any(options.get("dynamic_dims") or ())  # a dynamic-length graph has no MAC count: a static one does
        if not tv.graph and cell.format == "onnx" and v.precision == "fp32" and not dynamic:
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

    def _log_note(self, cell: Cell) -> str:
        """` (log: logs/export-x-onnx.log)` where the converter's own output of this cell's export went."""
        path = self.progress.log_path(f"export-{cell.variant.name}-{cell.format}")
        return f" (log: {path})" if path is not None and path.is_file() else ""

    def parity_inputs(self, data: Any) -> Path:
        """The held-out samples every artifact is checked on, written once per run (never a stale file)."""
        path = self.art_dir / "parity_inputs.npz"
        if not getattr(self, "_parity_written", False):
            TK.write_inputs(path, S.take(data.x_test, slice(0, self.cfg.measure.parity_samples)))
            self._parity_written = True
        return path

    def parity(self, cell: Cell, art: Artifact, tv: TorchVariant, data: Any) -> Parity:
        """The artifact against its torch model on the parity inputs; a verdict on the same bytes, inputs,
        runner and runtimes is read from the cache."""
        v = cell.variant
        inputs = S.flat(S.take(data.x_test, slice(0, self.cfg.measure.parity_samples)))
        reference = self.parity_reference(tv, data)
        key = parity_key(art.sha256, cell.format, v.precision, inputs, reference)
        with self.progress.timed("parity", cell.key, log=f"export-{v.name}-{cell.format}"):
            return cached_result(self.cache / "parity", key, lambda: check_artifact(
                Path(art.path), cell.format, v.precision, self.parity_inputs(data), reference, min_agreement=None,
                timeout_s=self.cfg.measure.timeout_s))

    def parity_reference(self, tv: TorchVariant, data: Any) -> np.ndarray:
        n = self.cfg.measure.parity_samples
        return self.outputs(tv.torch_model, tv.digest, S.take(data.x_test, slice(0, n)), f"{tv.recipe} (parity)")

    def outputs(self, model: Callable[[], Any], digest: str, x_eval: np.ndarray, name: str) -> np.ndarray:
        """A torch model's logits on `x_eval`, cached by model content and inputs (the reference recipe's
        variant is the reference itself: computed once); `model()` gives the model, only on a miss."""
        key = content_key("outputs", digest, array_hash(*S.arrays(x_eval)))
        if key not in self._outputs:
            with self.progress.timed("predict", name):
                self._outputs[key] = cached_result(self.cache / "outputs", key, lambda: predict_any(model(), x_eval))
        return self._outputs[key]

    def graph_stats(self, tv: TorchVariant, data: Any, onnx_fp32: Path | None = None) -> None:
        """Params and MACs counted from the variant's fp32 ONNX graph (its own cell's, or one made for it)."""
        path = onnx_fp32 or graph_path(self.cache, tv, data)
        try:
            if not path.exists():
                outcome = export_one(graph_task(self.cache, tv, data, self.progress), self.progress.tee())
                if not outcome.ok:
                    raise ExportError(outcome.error)
            tv.graph = onnx_graph_stats(path)
        except Exception as e:
            self.progress(f"MAC count for {tv.recipe} unavailable: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------- prepare
    def prepare(self, only: list[str] | None = None) -> Prepared:
        """Data, reference, variants, exports and parity: everything before the targets."""
        prep = Prepared()
        self.art_dir.mkdir(parents=True, exist_ok=True)
        with self.progress.step("loading data", stage="data", log="data"):
            data = load_data(self.cfg)
        prep.task.update(dataset=data.name, classes=len(data.classes), class_names=list(data.classes),
                         n_train=int(len(data.y_train)), n_test=int(len(data.y_test)),
                         input_shape=data.input_shape if S.is_named(data.x_test) else list(data.input_shape),
                         max_accuracy_drop=self.cfg.report.max_accuracy_drop,
                         constraints={k: v for k, v in vars(self.cfg.report).items() if v is not None})
        variants = [v for v in self.cfg.variants if not only or v.name in only]
        if only and not variants:
            raise ConfigError(f"--only {', '.join(only)}: no such variant (have: "
                              f"{', '.join(v.name for v in self.cfg.variants)})")
        self.progress.expect(sum(len(v.formats) for v in variants))  # the live line's cell i/N
        TK.check_variants(data, variants)
        for v in variants:  # before any training: settings, and that a student builds and fits the data
            R.check_recipe(v.recipe, None, data, v.settings)
        reference, ref_sha = self.reference(data, prep)
        # Evaluation inputs: the clean test set, then a shifted copy (images); the device runs both. The timed
        # input is one test sample chosen from the data (sequences: the median length), recorded in the task.
        x_eval, y, _ = TK.evaluation_set(self.cfg, data)
        prep.eval_inputs = TK.write_inputs(self.art_dir / "eval_inputs.npz", x_eval)
        x_timed, timed = S.timing_sample(data.x_test, self.cfg.data.timing_sample)
        prep.timing_inputs = TK.write_inputs(self.art_dir / "timing_inputs.npz", x_timed)
        TK.describe(self.cfg, data, prep, timed, self.progress, reference)
        prep.labels, prep.n_clean = y, len(y)
        prep.reference_outputs = self.outputs(lambda: reference, model_digest(reference), x_eval, "reference")
        TK.reference_scores(prep, data, self.progress)
        prep.task["reference_variant"] = next((v.name for v in self.cfg.variants
                                               if v.recipe == "reference" and v.precision == "fp32"), "fp32")
        self._pool = ExportPool(workers_for(expected_groups(variants)))
        try:
            built = self.build_variants(variants, reference, ref_sha, data, prep, x_eval, y)
        finally:
            self._pool.close()
        checked = self.parities(built, data)
        for _, tv, cells in built:
            for cell in cells:
                self.finish_cell(cell, tv, data, ref_sha, prep, checked.get(id(cell)))  # type: ignore[arg-type]
                self.progress.advance()
            if not tv.graph:
                self.graph_stats(tv, data)
            for cell in cells:
                if cell.artifact is not None:
                    cell.artifact.params = tv.graph.get("params") or tv.info.get("params")
                    cell.artifact.macs = tv.graph.get("macs")
        return prep

    def build_variants(self, variants: list[VariantConfig], reference: Any, ref_sha: str, data: Any, prep: Prepared,
                       x_eval: Any, y: np.ndarray) -> list[tuple[VariantConfig, TorchVariant, list[Cell]]]:
        """Each variant's torch model (its recipe) and outputs, then every export the cache does not hold, in
        groups (side by side where the pool has workers); returns the variants with their cells, exported."""
        groups: dict[tuple[str, str], list[ExportTask]] = {}
        built: list[tuple[VariantConfig, TorchVariant, list[Cell]]] = []
        for v in variants:
            try:
                tv = self.torch_variant(v, reference, ref_sha, data, prep)
            except Exception as e:  # noqa: BLE001 - a recipe that cannot apply fails its cells, not the run
                why = " ".join(str(e).split())[:300]
                self.progress(f"recipe {v.recipe} for {v.name} failed: {type(e).__name__}: {why}")
                for fmt in v.formats:
                    prep.cells.append(Cell(v, fmt, status="failed",
                                           error=f"recipe {v.recipe} failed: {type(e).__name__}: {why}"))
                    self.progress.advance()
                continue
            if "sensitivity" in tv.info and "sensitivity" not in prep.task:
                prep.task["sensitivity"] = {"variant": v.name, "float_layers": tv.info["float_layers"],
                                            "rows": tv.info["sensitivity"]}
            if tv.outputs is None:
                tv.outputs = self.outputs(tv.torch_model, tv.digest, x_eval, v.name)
                if "reference_top1" in prep.task:  # class labels (not regression)
                    tv.info["host_top1"] = float(np.mean(tv.outputs[: len(y)].reshape(len(y), -1).argmax(1) == y))
            # The fp32 ONNX cell first: its graph gives params and MACs to the variant's other cells.
            fmts = sorted(v.formats, key=lambda f: f != "onnx")
            cells = [Cell(v, f) for f in fmts]
            for cell in cells:
                task = self.plan_export(cell, tv, data)
                if task is not None:  # one group per model content and format: they share one fp32 conversion
                    groups.setdefault((tv.digest, cell.format), []).append(task)
                    self._pool.start()  # a cold run: the workers import the converters during the next recipes
            built.append((v, tv, cells))
            prep.cells.extend(sorted(cells, key=lambda c: v.formats.index(c.format)))
        for task in plan_graphs(built, data, self.cache, self.progress):
            groups[(task.path.name, "graph")] = [task]
        if groups:
            n = sum(len(g) for g in groups.values())
            self._export_workers = self._pool.workers if len(groups) > 1 else 0
            if self._export_workers:
                self.progress(f"{n} exports in {self._export_workers} processes side by side ...")
            else:
                self._pool.close(wait=False)  # one group: here, where the converters are already imported
            t0 = time.monotonic()
            self._pool.run(list(groups.values()), self.export_done, tee=self.progress.tee())
            if self._export_workers:  # the stage's wall time; each export's own time is kept beside it
                self.progress.record("exports", f"{n} exports in {self._export_workers} processes",
                                     time.monotonic() - t0, True, 0.0)
        return built
