"""The import rules of the two worlds, read from the source (ast), so a new module is checked unlisted.

- ``inference/`` (the worker) never imports bpy;
- ``operators/``, ``panels/`` and the extension's ``__init__`` (Blender's Python) never import the
  worker's stack: torch, cv2, scipy, librosa, mediapipe, pocketsphinx;
- nothing in ``operators/`` imports ``panels/`` (panels only draw; preferences are read through
  ``operators/prefs.py``);
- within ``inference/``, stages import downward only (``STAGE_MAY_IMPORT``): worker → motion,
  refiner → lips, tracking, persona → audio, heads → the base (``protocol``, ``files``);
- what the Blender side imports from ``inference/`` never imports the worker's stack at load time;
- no import circles among the extension's modules, counting imports inside functions (a late import
  only hides a circle, it does not remove one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_ONLY = {"torch", "cv2", "scipy", "librosa", "mediapipe", "pocketsphinx", "soundfile"}
BASE = {"inference", "inference.protocol", "inference.files"}
# stage package -> the stage packages it may import (besides itself and the base)
STAGE_MAY_IMPORT = {
    "audio": set(),
    "heads": set(),
    "lips": {"audio", "heads"},
    "tracking": {"audio", "heads"},
    "persona": {"audio", "heads"},
    "motion": {"lips", "audio", "heads"},
    "refiner": {"tracking", "persona", "audio", "heads"},
    "worker": {"motion", "refiner", "lips", "tracking", "persona", "audio", "heads"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [ROOT / "__init__.py"]
    for pkg in ("inference", "operators", "panels"):
        files += sorted((ROOT / pkg).rglob("*.py"))
    return {_module_name(p): p for p in files}


def _load_time_nodes(tree: ast.AST):
    """The nodes that run when the module is imported (not those inside functions)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _imports(name: str, path: Path, modules: set[str], load_time: bool = False) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the file (``load_time``: only those outside functions);
    relative imports resolved to full names, ``from pkg import mod`` counted as an import of the
    module ``pkg.mod`` when it is one."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in _load_time_nodes(tree) if load_time else ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                if sub in modules:
                    out.append((sub, node.lineno))
    return [(t, n) for t, n in out if t]


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    src = _sources()
    return {name: _imports(name, path, set(src)) for name, path in src.items()}


@pytest.fixture(scope="module")
def load_graph() -> dict[str, list[tuple[str, int]]]:
    src = _sources()
    return {name: _imports(name, path, set(src), load_time=True) for name, path in src.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_rules_see_every_module(graph):
    # A reader that found nothing would pass every rule below.
    assert "inference.protocol" in graph and "operators.prefs" in graph and "panels.preferences" in graph
    assert any(t == "bpy" for t, _ in graph["operators.prefs"])
    assert any(t == "inference.protocol" for t, _ in graph["operators.worker.client"])  # relative, resolved


def test_worker_never_imports_bpy(graph):
    bad = [
        f"{m}:{n} imports {t}"
        for m, deps in graph.items()
        if m.startswith("inference")
        for t, n in deps
        if _top(t) in {"bpy", "bmesh", "mathutils", "bpy_extras"}
    ]
    assert not bad, bad


def test_blender_side_never_imports_the_worker_stack(graph):
    bad = [
        f"{m}:{n} imports {t}"
        for m, deps in graph.items()
        if not m.startswith("inference")
        for t, n in deps
        if _top(t) in WORKER_ONLY
    ]
    assert not bad, bad


def test_operators_never_import_panels(graph):
    bad = [
        f"{m}:{n} imports {t}"
        for m, deps in graph.items()
        if m.startswith("operators")
        for t, n in deps
        if t == "panels" or t.startswith("panels.")
    ]
    assert not bad, bad


def _stage(name: str) -> str | None:
    """The stage package of an inference module (None for the base)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and name not in BASE else None


def test_every_inference_module_is_in_a_stage_or_the_base(graph):
    loose = [m for m in graph if m.startswith("inference") and m not in BASE and _stage(m) not in STAGE_MAY_IMPORT]
    assert not loose, f"place these in a stage package (and in STAGE_MAY_IMPORT): {loose}"


def test_stages_import_downward_only(graph):
    bad = []
    for m, deps in graph.items():
        if not m.startswith("inference.") or m in BASE:
            continue
        allowed = STAGE_MAY_IMPORT[_stage(m)] | {_stage(m)}
        for t, n in deps:
            if t.startswith("inference") and t not in BASE and _stage(t) not in allowed:
                bad.append(f"{m}:{n} imports {t}")
    assert not bad, bad


def test_blender_side_loads_only_light_inference_modules(graph, load_graph):
    """Follow the Blender side's imports into inference/ (and every package __init__ on the way): none
    of those modules may import the worker's stack when loaded."""
    todo = [t for m, deps in graph.items() if not m.startswith("inference") for t, _ in deps if t.startswith("inference")]
    seen, bad = set(), []
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            sub = ".".join(parts[:k])
            if sub in load_graph and sub not in seen:
                seen.add(sub)
                for t, n in load_graph[sub]:
                    if _top(t) in WORKER_ONLY:
                        bad.append(f"{sub}:{n} imports {t}")
                    elif t.startswith("inference"):
                        todo.append(t)
    assert "inference.protocol" in seen and "inference.heads.head_model" in seen
    assert not bad, bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles(graph):
    # ``from . import mod`` also names the package itself, whose __init__ imports its modules to
    # register them: an edge to one's own ancestor package is not a circle.
    edges = {
        m: {t for t, _ in deps if t in graph and t != m and not m.startswith(t + ".")} for m, deps in graph.items()
    }
    assert not _cycles(edges)
