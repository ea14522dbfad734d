"""The shape of the code: no import cycles, no private names across modules, and the service's run path
free of operator tools.

The import graph is read from the source with ``ast``: every import that runs (at module level or
inside a function, late imports included) and every ``importlib.import_module`` of a module named
as a string (the CLI's command table). Imports under ``if TYPE_CHECKING:`` never run and are left
out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "convert")


def module_files() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    out: Dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = module_files()


def is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, less the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def resolve(name: str, package: str, level: int) -> str:
    if level:
        base = package.split(".")
        base = base[: len(base) - level + 1]
        return ".".join(base + ([name] if name else []))
    return name


def imports_of(module: str, path: Path) -> Iterator[Tuple[str, List[str], int]]:
    """(imported module, names taken from it, line) for each import in ``module`` that runs."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    uses_importlib = False
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
                uses_importlib |= alias.name.startswith("importlib")
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module or "", package, node.level)
            uses_importlib |= base.startswith("importlib")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub, [], node.lineno) if sub in MODULES else (base, [alias.name], node.lineno)
    if uses_importlib:  # a module named in a string and imported by name (the CLI's table)
        for node in runtime_nodes(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
                yield node.value, [], node.lineno


def graph() -> Dict[str, Set[str]]:
    return {m: {dep for dep, _, _ in imports_of(m, p) if dep in MODULES and dep != m} for m, p in MODULES.items()}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_late_and_importlib_imports():
    """The reader itself: a function-level import and the CLI's table are edges; TYPE_CHECKING is not."""
    edges = graph()
    assert "agent.service.run" in edges["agent.cli"] and "agent.tools.label" in edges["agent.cli"]
    assert "agent.service.preview_http" in edges["agent.service.preview"]  # imported inside a method
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles (each a set of modules that import each other, directly or not):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_no_private_name_is_used_across_modules():
    """``from x import _name`` and ``module._name`` stay inside the module that defines ``_name``."""
    bad = []
    for module, path in MODULES.items():
        modules_bound: Set[str] = set()
        for dep, names, line in imports_of(module, path):
            bad += [f"{module}:{line} imports {dep}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
        tree = ast.parse(path.read_text())
        for node in runtime_nodes(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if f"{resolve(node.module, module, node.level)}.{alias.name}" in MODULES:
                        modules_bound.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules_bound.update(a.asname for a in node.names if a.asname and a.name in MODULES)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules_bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("argv", [["run", "--help"], ["run", "--config", "/nonexistent/maskwatch.yaml"]])
def test_maskwatch_run_loads_no_operator_tool(argv):
    """The service's path (the CLI, its run command, the pipeline) imports no tool, and no converter."""
    code = ("import sys\nfrom agent import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "import agent.service.run\n"
            "print(sorted(m for m in sys.modules if m.startswith(('agent.tools', 'convert', 'tensorflow'))))")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# Text that names code: sidecars (provenance, rebuild recipes: the model card prints them), the model
# card, the README and docs/, the schemas' descriptions.
NAMING_CODE = sorted([*(REPO / "models").glob("*.json"), REPO / "models" / "MODEL_CARD.md", REPO / "README.md",
                      *(REPO / "docs").glob("*.md"), *(REPO / "agent" / "schemas").glob("*.json")])


@pytest.mark.parametrize("doc", NAMING_CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_and_sidecars_name_only_files_and_modules_this_checkout_has(doc):
    """After a module moves, every path (`convert/ports/x.py`), `python -m` module and backticked
    dotted name (`convert.export.quantize`, `agent.tools.demo.draw_mask`) naming it moves with it."""
    import re

    text = doc.read_text()
    missing = [f for f in set(re.findall(r"(?<![\w/.])(?:agent|convert|bench|scripts|tests)/[\w/]+\.(?:py|sh)\b", text))
               if not (REPO / f).is_file()]
    missing += [m for m in set(re.findall(r"python3? -m ((?:agent|convert|bench)\b[\w.]*)", text)) if m not in MODULES]
    for name in set(re.findall(r"`((?:agent|convert)\.[\w.]+)`", text)):
        parts = name.split(".")  # a module, or a name inside one: some prefix of two or more parts is a module
        if not any(".".join(parts[:k]) in MODULES for k in range(len(parts), 1, -1)):
            missing.append(name)
    assert not missing, f"{doc.relative_to(REPO)} names {sorted(missing)}"


# convert/ from the bottom up: what a layer may import is itself and the layers below it.
CONVERT_LAYERS = (("convert.paths", "convert.tf"), ("convert.errors",), ("convert.litert", "convert.fetch"),
                  ("convert.ports",), ("convert.data",), ("convert.evaluate",), ("convert.export",),
                  ("convert.train",), ("convert.cli", "convert.__main__"))


def convert_layer(module: str) -> int:
    """The index in CONVERT_LAYERS of the layer a convert module belongs to."""
    for i, layer in enumerate(CONVERT_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in layer):
            return i
    raise AssertionError(f"{module} is in no layer of CONVERT_LAYERS: place it there")


def test_convert_imports_only_its_own_layer_and_those_below():
    """Ports rebuild graphs, data cuts and labels, evaluate scores, export writes model files, train
    trains: a port that reads the data sets or an export that imports a trainer is a helper in the
    wrong place (move the helper down, as bgr_loader and input_size_type were)."""
    edges = graph()
    up = [f"{m} -> {d}" for m in edges if m.startswith("convert.") and m != "convert"
          for d in edges[m] if d.startswith("convert.") and convert_layer(d) > convert_layer(m)]
    assert not up, "imports that run up convert's layers:\n" + "\n".join(sorted(up))
