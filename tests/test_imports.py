"""The import structure: no circles among the appliance's modules, and nothing below the doors
imports a door. Walks every module's imports (at any depth of the file, as Python would run them),
statically, so a circle is found even where it only closes inside a function."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("appliance", "gui")
# the doors: they call the application layer; no module below them may import one
DOORS = ("appliance.cli", "appliance.scheduler.daemon", "appliance.demo", "appliance.api.server", "appliance.bench", "gui")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if "samples" in path.parts:
                continue
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that ``import name`` loads (the longest known prefix), or None."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module and not (module.startswith(target + ".") and known[target].name == "__init__.py"):
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: set(imports_of(m, p, known)) for m, p in known.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
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
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(found)


def _is_door(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in DOORS)


def test_the_walk_sees_real_imports() -> None:
    """The walker itself: it finds imports made inside functions and resolves names to modules."""
    g = graph()
    assert "appliance.app.session" in g["appliance.cli"]  # imported inside a command function
    assert "appliance.vault.store" in g["appliance.app.session"]
    assert "appliance.crypto.envelope" in g["appliance.audit.log"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    found = circles(graph())
    assert not found, "import circles (each a set of modules importing each other):\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_nothing_below_the_doors_imports_a_door() -> None:
    bad = sorted((m, t) for m, targets in graph().items() if not _is_door(m) for t in targets if _is_door(t))
    assert not bad, "modules below the doors that import one: " + ", ".join(f"{m} -> {t}" for m, t in bad)


def test_the_audit_log_is_below_the_vault() -> None:
    """The log and the store share their crypto from a module below both (appliance.crypto)."""
    g = graph()
    assert not {t for t in g["appliance.audit.log"] | g["appliance.audit.witness"] if t.startswith("appliance.vault")}
    assert "appliance.crypto.envelope" in g["appliance.vault.store"]
