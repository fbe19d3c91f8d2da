"""The library's import graph: every import (lazy ones inside functions too) follows the layers.

Data flows one way: ``utils`` at the bottom, ``attention`` -> ``model`` -> ``checkpoints``, and
the layers that use them above. A module may import only the components listed for it in
:data:`ALLOWED`; the test reads every ``import`` statement of every file with ``ast``, so a lazy
import that closes a cycle fails here, not in a user's session.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swiftlearn"

#: component -> the components it may import (a component is a top-level module or package)
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "attention": {"utils"},
    "blocks": {"attention", "utils"},
    "model": {"attention", "blocks", "utils"},
    "checkpoints": {"model", "utils"},
    "fuse": {"model", "blocks", "attention", "utils"},
    "data": {"utils"},
    "measure": set(),  # FLOP counting and peak memory of any callable
    "stats": set(),  # intervals and paired comparisons of accuracies (numpy only)
    "complexity": {"attention", "model", "measure", "utils"},
    "api": {"model", "checkpoints"},
    "train": {"data", "model", "checkpoints", "utils"},
    "viz": {"utils"},
    "widgets": {"complexity", "measure", "viz", "utils"},
    # the notebooks' checks (07's interpreter handler: export.mil)
    "exercises": {"attention", "blocks", "model", "complexity", "export", "stats", "utils"},
    "explorers": {"attention", "data", "viz", "utils"},  # the mechanism explorers
    "diagrams": {"utils"},  # drawn diagrams (python -m swiftlearn.diagrams)
    "export": {"model", "checkpoints", "data", "utils"},
    "bench": {"model", "checkpoints", "fuse", "export", "train", "data", "complexity",
              "measure", "utils"},
    # __init__: the version; train, export, bench: the commands it assembles (named in strings)
    "cli": {"utils", "data", "model", "__init__", "train", "export", "bench"},
    "__init__": None,  # the package's front: may re-export anything
}


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "swiftlearn":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the swiftlearn modules ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names
                          if _is_module(f"{target}.{a.name}")}
            # `from . import checkpoints` imports the submodule, not the package's names
            found |= submodules if len(submodules) == len(node.names) else {target}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value))
    # a module named in a module-level table and imported by name later (cli.py's commands,
    # importlib.import_module(name)): an import all the same. Strings elsewhere, such as a
    # `python -m swiftlearn.cli` command line a launcher runs, start processes, not imports.
    tree = ast.parse(path.read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
            found |= {n.value for n in ast.walk(stmt.value) if isinstance(n, ast.Constant)
                      and isinstance(n.value, str)
                      and re.fullmatch(r"swiftlearn(\.\w+)+", n.value) and _is_module(n.value)}
    return {m for m in found if m.startswith("swiftlearn")}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in _files():
        src = _component(_module_name(path))
        if path.parent == PACKAGE and path.name == "__init__.py":
            src = "__init__"
        for target in _imports(path):
            dst = _component(target)
            if dst is not None and dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


def test_every_component_is_listed():
    components = {_component(_module_name(p)) for p in _files()}
    components.add("__init__")
    assert components <= set(ALLOWED), (
        f"new library components {sorted(components - set(ALLOWED))}: add them to ALLOWED in "
        "tests/test_layering.py (and to the module map in CONTRIBUTING.md)")


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    src = "__init__" if path == PACKAGE / "__init__.py" else _component(_module_name(path))
    allowed = ALLOWED[src]
    if allowed is None:
        return
    bad = sorted(t for t in _imports(path)
                 if (_component(t) not in allowed | {src}))
    assert not bad, (f"{path.relative_to(PACKAGE)} ({src}) imports {bad}; {src} may import "
                     f"only {sorted(allowed)}")


def test_modules_named_in_strings_count_as_imports():
    """cli.py imports its commands by name (importlib): the test sees those edges too."""
    assert {"swiftlearn.train.cli", "swiftlearn.export.cli", "swiftlearn.bench.cli"} <= \
        _imports(PACKAGE / "cli.py")


def test_no_cycles_between_components():
    edges = _edges()
    edges.pop("__init__", None)

    def visit(node, stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):]
                                                                   + [nxt]))
            visit(nxt, stack + [nxt])

    for start in sorted(edges):
        visit(start, [start])


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """A negative control: a lazy relative import inside a function is found."""
    fake = tmp_path / "swiftlearn"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "model.py").write_text("def f():\n    from .checkpoints import load\n")
    (fake / "checkpoints.py").write_text("from . import model\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _imports(fake / "model.py") == {"swiftlearn.checkpoints"}
    assert "swiftlearn.model" in _imports(fake / "checkpoints.py")
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_cycles_between_components()
