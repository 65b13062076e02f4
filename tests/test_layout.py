"""The house rules of DESIGN.md, read from the code with ast (nothing is imported or run).

- exporters/ and targets/ import nothing from harness/, and not each other;
- the files that run on a device (targets/runner.py, targets/watchdog.py) import only the standard
  library, numpy and the inference runtimes;
- inside harness/ the stages only look back along the flow: config <- build <- measure <- report <-
  the face (api, cli, bench, doctor); errors and progress sit under every stage;
- no import cycle among the three packages;
- no project import inside a function, except the face's command dispatch in cli.py (start-up time);
- no module over 400 lines but the runner.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "exporters", "targets")
DEVICE_FILES = {"targets.runner", "targets.watchdog"}
RUNTIMES = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "torch"}
# harness sub-packages in the order data walks; a module may import its own rank or lower.
RANKS = {"harness": 0, "harness.errors": 0, "harness.progress": 0, "harness.config": 1, "harness.build": 2,
         "harness.measure": 3, "harness.report": 4, "harness.api": 5, "harness.bench": 5, "harness.doctor": 5,
         "harness.cli": 6}
LAZY_IMPORTS_ALLOWED = {"harness.cli"}  # one subcommand's imports (torch for `run`) stay off `--help`
MAX_LINES = 400


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def resolve(name: str, known: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return None


def rank(module: str) -> int | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in RANKS:
            return RANKS[".".join(parts[:i])]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str], list[int]]:
    """(project modules imported, top-level external names, line numbers of project imports in functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    project, external, nested = set(), set(), []
    in_function = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(fn) if n is not fn}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        hits = {r for n in names if (r := resolve(n, known)) and r != module}
        project |= hits
        if not hits:
            external |= {n.split(".")[0] for n in names[:1] if n and not n.startswith(PACKAGES)}
        elif id(node) in in_function:
            nested.append(node.lineno)
    return project, external, nested


def violations(root: Path) -> list[str]:
    """Every broken rule in the tree at `root`, one line each."""
    known = modules(root)
    edges: dict[str, set[str]] = {}
    bad = []
    for mod, path in known.items():
        project, external, nested = imports_of(mod, path, known)
        edges[mod] = project
        top = mod.split(".")[0]
        for dep in sorted(project):
            dtop = dep.split(".")[0]
            if top in ("exporters", "targets") and dtop == "harness":
                bad.append(f"{mod} imports {dep}: exporters/ and targets/ import nothing from harness/")
            if {top, dtop} == {"exporters", "targets"}:
                bad.append(f"{mod} imports {dep}: exporters/ and targets/ do not import each other")
            if top == dtop == "harness" and (rank(dep) or 0) > (rank(mod) or 0):
                bad.append(f"{mod} imports {dep}: a stage imports only earlier stages (config, build, measure, "
                           f"report, then the face)")
        if mod in DEVICE_FILES:
            for name in sorted(external - set(sys.stdlib_module_names) - RUNTIMES - {"__future__"}):
                bad.append(f"{mod} imports {name}: device files use only the standard library, numpy, runtimes")
            bad += [f"{mod} imports {dep}: device files are copied alone" for dep in sorted(project)]
        if nested and mod not in LAZY_IMPORTS_ALLOWED:
            bad.append(f"{mod}: project imports inside functions at lines {nested}")
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and mod != "targets.runner":
            bad.append(f"{mod} has {lines} lines (> {MAX_LINES})")
    bad += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_tree_keeps_the_house_rules():
    assert violations(ROOT) == []


def _scratch(tmp_path: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("file, line, needle", [
    ("targets/local.py", "from harness.errors import HarnessError", "import nothing from harness/"),
    ("exporters/onnx.py", "from targets.base import Job", "do not import each other"),
    ("harness/build/data.py", "from harness.report.cells import dig", "only earlier stages"),
    ("targets/runner.py", "import paramiko", "device files use only"),
    ("targets/watchdog.py", "import requests", "device files use only"),
    ("harness/measure/stats.py", "def later():\n    from harness.measure import loop\n", "inside functions"),
    ("harness/config/recipes.py", "from harness.config import run", "import cycle"),
])
def test_a_deliberate_violation_in_a_scratch_copy_fails(tmp_path, file, line, needle):
    root = _scratch(tmp_path)
    path = root / file
    if not path.exists():
        pytest.skip(f"{file} is not in this tree")
    path.write_text(path.read_text() + "\n" + line + "\n")
    found = violations(root)
    assert any(needle in v for v in found), found


def test_an_oversized_module_fails(tmp_path):
    root = _scratch(tmp_path)
    (root / "harness" / "measure" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert any("big has 401 lines" in v for v in violations(root))
