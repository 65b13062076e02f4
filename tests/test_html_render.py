"""report.html and summary.html render in headless Chromium without errors and contain their plots.

The fixture is a synthetic but realistic run (two devices, thirteen cells, skewed timings with stalls, one
failed cell); this tests the renderer, a real run is tested elsewhere.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from harness.measure.metrics import annotate
from harness.measure.results import Measurement, TargetReport
from harness.report.cells import COLUMNS
from harness.report.files import write_summary, write_target_report
from harness.report.plots import box_stats, pareto_front

# variant, format, p50 ms, size MB, top-1, top-1 shifted, peak RSS MB; None p50 = failed on the device
CELLS = [
    ("fp32", "onnx", 4.1, 13.4, 0.912, 0.842, 96.0),
    ("fp32", "tflite", 5.0, 13.3, 0.912, 0.842, 88.0),
    ("fp32", "torch", 9.8, 13.6, 0.912, 0.842, 410.0),
    ("fp16", "onnx", 4.6, 6.8, 0.912, 0.841, 90.0),
    ("fp16", "tflite", 5.2, 6.8, 0.910, 0.842, 80.0),
    ("int8-dynamic", "onnx", 3.2, 3.6, 0.905, 0.836, 70.0),
    ("int8-dynamic", "tflite", 3.9, 3.5, 0.908, 0.833, 66.0),
    ("int8-static", "onnx", 1.9, 3.6, 0.887, 0.800, 64.0),
    ("int8-static", "tflite", None, 3.5, None, None, None),
    ("pruned-50", "onnx", 4.0, 13.4, 0.904, 0.830, 95.0),
    ("structured-50", "onnx", 2.3, 6.1, 0.898, 0.810, 75.0),
    ("distilled", "onnx", 0.9, 1.2, 0.861, 0.760, 48.0),
    ("distilled", "tflite", 1.1, 1.2, 0.861, 0.760, 45.0),
]
N_OK = sum(1 for c in CELLS if c[2] is not None)


def synthetic_report(name: str, seed: int, slow: float = 1.0, n: int = 300) -> TargetReport:
    rng = np.random.default_rng(seed)
    task = {"dataset": "textures", "classes": 3, "n_test": 600, "reference_top1": 0.912,
            "reference_top1_shifted": 0.842, "reference_variant": "fp32", "finetuned_top1": 0.912,
            "baselines": {"scratch": 0.71}, "max_accuracy_drop": 0.01, "constraints": {"max_accuracy_drop": 0.01}}
    dev = {"cpu_model": "Cortex-A72" if slow > 1 else "Intel(R) Xeon(R) CPU @ 2.20GHz", "cores": 4,
           "machine": "aarch64" if slow > 1 else "x86_64", "governor": "ondemand", "python": "3.11.2",
           "runtimes": {"onnxruntime": "1.20.1", "ai-edge-litert": "2.3.0"}}
    r = TargetReport(target={"name": name, "kind": "ssh" if slow > 1 else "local", "host": "h", "device": dev},
                     task=task, created="2026-11-28T10:00:00+00:00", harness_version="0.1.0")
    temp = 48.0
    for variant, fmt, p50, size, top1, top1s, rss in CELLS:
        art = {"path": f"artifacts/{variant}.{fmt}", "format": fmt, "precision": variant,
               "sha256": hashlib.sha256(f"{variant}{fmt}".encode()).hexdigest(), "size_bytes": int(size * 1e6),
               "params": 3_400_000, "macs": 200_000_000, "sparsity": 0.5 if variant == "pruned-50" else None,
               "lineage": {"base": {"model": "efficientnet_lite0"}, "recipe": "reference", "precision": variant},
               "parity": {"n": 32, "max_abs_diff": 1e-5, "agreement": 1.0, "passed": True}}
        if p50 is None:
            r.measurements.append(Measurement(variant, fmt, "failed", artifact=art,
                                              error="runner crashed: INT8 op not supported by this delegate"))
            continue
        raw = p50 * slow * rng.lognormal(0.0, 0.06, n)
        stalls = rng.random(n) < 0.02
        raw[stalls] *= rng.uniform(1.5, 3.0, int(stalls.sum()))
        lat = {"n": n, "p50": float(np.median(raw)), "p90": float(np.percentile(raw, 90)),
               "p99": float(np.percentile(raw, 99)), "mean": float(raw.mean()), "std": float(raw.std(ddof=1)),
               "min": float(raw.min()), "max": float(raw.max()),
               "p50_ci": [float(np.percentile(raw, 46)), float(np.percentile(raw, 54))]}
        state = {"before": {"temperature_c": {"cpu-thermal": temp}}, "after": {"temperature_c": {"cpu-thermal":
                                                                                                temp + 0.7}}}
        temp += 0.7
        r.measurements.append(Measurement(
            variant, fmt, "ok", artifact=art, latency_ms=lat, raw_latencies_ms=[round(float(x), 6) for x in raw],
            cold_start_ms={"load": 3 * size, "first_inference": 3 * p50, "total": 3 * size + 3 * p50},
            memory_mb={"peak_rss": rss}, device_state=state, settings={"threads": 2, "runtime": fmt},
            accuracy={"top1": top1, "agreement": 0.98, "max_abs_diff": 0.01, "n": 600, "top1_shifted": top1s}))
    annotate(r, 0.01)
    return r


class Elements(HTMLParser):
    """Every start tag with its attributes and the id of the <svg> it sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], str | None]] = []
        self.svg: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self.svg = a.get("id")
        self.found.append((tag, a, self.svg))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.svg = None

    def select(self, tag: str, cls: str | None = None, svg: str | None = None) -> list[dict[str, str]]:
        return [a for t, a, s in self.found if t == tag and (cls is None or cls in a.get("class", "").split())
                and (svg is None or s == svg)]


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def dump_dom(exe: str, page: Path) -> tuple[Elements, str, str]:
    """Load the page in headless Chromium (no network), run its script, return the resulting DOM and the log."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                              page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    parsed = Elements()
    parsed.feed(out.stdout)
    return parsed, out.stdout, out.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    reports = [synthetic_report("local-cpu", seed=0), synthetic_report("pi4", seed=1, slow=3.5)]
    for r in reports:
        write_target_report(r, out)
    write_summary(reports, out)
    return out


@pytest.fixture(scope="module")
def browser() -> str:
    exe = chromium()
    if exe is None:
        print("chromium not installed: skipping the headless render (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    return exe


def no_page_errors(dom: str, log: str) -> None:
    assert 'data-rendered="ok"' in dom, "the inline script did not run to its end"
    errors = [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert not errors, errors


def test_pages_are_self_contained(run_dir):
    for page in (run_dir / "local-cpu" / "report.html", run_dir / "summary.html"):
        text = page.read_text()
        assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text), f"{page} loads something from the network"
        assert "<style>" in text and "<script>" in text


def test_report_html_renders_with_all_plots(run_dir, browser):
    dom, text, log = dump_dom(browser, run_dir / "local-cpu" / "report.html")
    no_page_errors(text, log)
    # One box plot per measured cell, each with a box, a median and whiskers from its raw timings.
    assert len(dom.select("g", "box-plot", svg="latency-boxes")) == N_OK
    assert len(dom.select("rect", "box", svg="latency-boxes")) == N_OK
    assert len(dom.select("line", "median", svg="latency-boxes")) == N_OK
    assert dom.select("circle", "outlier", svg="latency-boxes"), "the stalls should show as outliers"
    # The scatter: a point per cell with accuracy, the Pareto front as a path, the pick ringed.
    points = dom.select("circle", "point", svg="accuracy-latency")
    assert len(points) == N_OK
    front = dom.select("path", "pareto", svg="accuracy-latency")
    assert len(front) == 1 and front[0]["d"].startswith("M")
    on_front = {p["data-cell"] for p in dom.select("circle", "pareto-point", svg="accuracy-latency")}
    # Nothing is both faster and more accurate than these (distilled/tflite ties distilled/onnx but is slower).
    assert on_front == {"distilled/onnx", "int8-static/onnx", "structured-50/onnx", "int8-dynamic/onnx",
                        "int8-dynamic/tflite", "fp32/onnx"}
    assert [p["data-cell"] for p in dom.select("circle", "picked")] == ["int8-dynamic/onnx"]
    # Size bars for every cell with an artifact, the failed one included.
    assert len(dom.select("rect", "size-bar", svg="size-bars")) == len(CELLS)
    # The table: every cell, the failed one with its error; lineage per cell; the device card.
    rows = dom.select("tr")
    assert sum(1 for r in rows if r.get("data-cell")) == len(CELLS)
    assert "runner crashed: INT8 op not supported by this delegate" in text
    assert len(dom.select("details", "lineage")) == len(CELLS)
    assert "cpu-thermal 48.0 → 56.4 °C" in text and "onnxruntime 1.20.1" in text
    assert "Ship int8-dynamic/onnx" in text


def test_table_sorts_by_a_clicked_header(run_dir, browser, tmp_path):
    p50_col = 1 + [h for h, _, _ in COLUMNS].index("p50 ms")
    click = (f"<script>document.querySelector('#cells th:nth-child({p50_col})').click();"
             "document.body.setAttribute('data-order',Array.from(document.querySelectorAll('#cells tbody tr'))"
             ".map(function(r){return r.dataset.cell}).join(','));</script></body>")
    page = tmp_path / "report.html"
    page.write_text((run_dir / "local-cpu" / "report.html").read_text().replace("</body>", click))
    dom, text, log = dump_dom(browser, page)
    no_page_errors(text, log)
    order = dom.select("body")[0]["data-order"].split(",")
    p50 = {f"{c[0]}/{c[1]}": c[2] for c in CELLS}
    measured = sorted((k for k in p50 if p50[k] is not None), key=lambda k: p50[k])
    assert order == measured + ["int8-static/tflite"]  # ascending; the failed cell (no p50) last


def test_summary_html_renders(run_dir, browser):
    dom, text, log = dump_dom(browser, run_dir / "summary.html")
    no_page_errors(text, log)
    devices = [r for r in dom.select("tr") if r.get("class") in ("picked", "none")]
    assert len(devices) == 2
    assert len(dom.select("a")) >= 3  # a link to each report.html and to cells.csv
    dots = dom.select("circle", "device-dot", svg="device-dots")
    assert len(dots) == 2 * N_OK
    assert text.count("int8-dynamic/onnx") >= 3  # recommended on both devices, and a matrix row
    assert (run_dir / "cells.csv").read_text().count("\n") == 1 + 2 * len(CELLS)


def test_box_stats_and_pareto_front_on_known_values():
    b = box_stats([1.0, 2.0, 3.0, 4.0, 5.0, 100.0])
    assert (b["q1"], b["median"], b["q3"]) == (2.25, 3.5, 4.75)
    assert b["hi"] == 5.0 and b["outliers"].tolist() == [100.0]
    front = pareto_front([(1.0, 80.0, "a"), (2.0, 79.0, "b"), (3.0, 90.0, "c"), (3.0, 85.0, "d"), (5.0, 90.0, "e")])
    assert [k for _, _, k in front] == ["a", "c"]


def test_a_report_with_nothing_measured_still_renders(tmp_path):
    r = TargetReport(target={"name": "bench", "kind": "local", "host": "localhost", "device": None},
                     measurements=[Measurement("emb", "onnx", "failed", error="input 'ids' expects int64")])
    folder = write_target_report(r, tmp_path)
    html = (folder / "report.html").read_text()
    assert "input &#39;ids&#39; expects int64" in html and "No raw timings to plot" in html
    assert "No cell meets every limit" in html and "no cell was measured successfully" in html
