"""The package layering is true: read from the source, no package imports a later stage, and there is no cycle.

The graph is built from the AST of every module under histoeq/, with imports inside functions counted like those
at the top, so deferring an import cannot hide a dependency. `histoeq predict` must stay free of torch and the
exporter, so it is also run in a fresh interpreter and its loaded modules inspected.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "histoeq"

# Data flow order, lowest first. A package may import its own layer's packages and lower layers, never a higher
# one; train and evaluate are one layer (training reports validation metrics with evaluate's) and must not form
# a cycle. The first layer holds the top-level modules everything uses (histoeq itself is its __version__).
LAYERS: list[tuple[str, ...]] = [
    ("histoeq", "errors", "atomic", "progress"),
    ("slide",),
    ("data",),
    ("nn",),
    ("models",),
    ("runs",),
    ("train", "evaluate"),
    ("export",),
    ("infer",),
    ("lab",),
    ("cli", "__main__"),
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def package_of(module: str) -> str:
    """``histoeq.train.trainer`` -> ``train``; ``histoeq.errors`` -> ``errors``; ``histoeq`` -> ``histoeq``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """(histoeq module, line) for every import in `path`, at any depth, relative imports resolved.

    ``from histoeq import models`` names the subpackage, ``importlib.import_module("histoeq.x")`` with a literal
    counts too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path, root)
    base = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = ".".join(base[: len(base) - node.level + 1] + ([source] if source else []))
            if source == "histoeq":
                found += [(f"histoeq.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((source, node.lineno))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            found.append((node.args[0].value, node.lineno))
    return [(name, line) for name, line in found if name == "histoeq" or name.startswith("histoeq.")]


def package_graph() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> ["file:line", ...], for imports across packages."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        src = package_of(module_name(path))
        for target, line in imported_modules(path):
            dst = package_of(target)
            # `from histoeq import __version__` names an attribute of the root package, not a subpackage.
            if dst.startswith("__") and dst != "__main__":
                dst = "histoeq"
            if dst != src:
                edges[(src, dst)].append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in edges:
        graph[src].add(dst)
        graph.setdefault(dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    path = tmp_path / "histoeq" / "evaluate" / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from histoeq.export import exporter\n"
                    "from ..runs import checkpoint\nfrom . import metrics\nfrom histoeq import models\n"
                    "import importlib\nimportlib.import_module('histoeq.infer')\nimport numpy\n")
    assert sorted(name for name, _ in imported_modules(path, tmp_path)) == [
        "histoeq.evaluate", "histoeq.export", "histoeq.infer", "histoeq.models", "histoeq.runs"]


def test_every_package_has_a_layer() -> None:
    packages = {package_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages - set(RANK) == set(), "declare the new package's place in LAYERS"


def test_no_package_imports_a_later_stage() -> None:
    rank = {**{pkg: len(LAYERS) for edge in package_graph() for pkg in edge}, **RANK}  # undeclared: on top
    upward = {f"{src} -> {dst}": where for (src, dst), where in package_graph().items() if rank[dst] > rank[src]}
    assert upward == {}, "lower packages import higher ones:\n" + "\n".join(
        f"  {edge}: {', '.join(where)}" for edge, where in sorted(upward.items()))


def test_no_package_cycle() -> None:
    edges = package_graph()
    found = cycles(edges)
    assert found == [], "package cycles:\n" + "\n".join(
        f"  {src} -> {dst}: {', '.join(where)}" for group in found for (src, dst), where in sorted(edges.items())
        if src in group and dst in group)


def _no_heavy_modules(args: list[str]) -> dict:
    """Run the CLI with `args` in a fresh interpreter; its exit code and which heavy modules it loaded."""
    code = (
        "import json, sys\n"
        "from histoeq.cli import main\n"
        "try:\n"
        f"    rc = main({args!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "heavy = ['torch', 'onnx', 'histoeq.export.exporter', 'histoeq.train', 'histoeq.evaluate']\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_predict_help_loads_no_torch() -> None:
    assert _no_heavy_modules(["predict", "--help"]) == {"rc": 0, "loaded": []}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import export_tiny_onnx

    return export_tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


def test_predict_with_an_onnx_model_loads_no_torch(tiny_onnx: Path, tmp_path: Path) -> None:
    slide = tmp_path / "small.tif"  # 200 x 150 px at 4 µm/px (2500 px/cm): 12 tiles of the 50 px model
    pixels = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    tifffile.imwrite(slide, pixels, photometric="rgb", resolution=(2500, 2500), resolutionunit="CENTIMETER")
    out = tmp_path / "out"
    result = _no_heavy_modules(["predict", str(slide), "--model", str(tiny_onnx), "--out", str(out),
                                "--device", "cpu", "--min-tissue", "0"])
    assert result == {"rc": 0, "loaded": []}
    assert (out / "small.csv").read_text().count("\n") == 1 + 12
