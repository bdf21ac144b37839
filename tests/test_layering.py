"""The folder tree is the architecture: api -> planning -> execution -> operators -> io, with
the training feed (over io) below operators and the smallpond compatibility wing on top.
A module may import its own layer and the layers
below it, never one above (imports inside functions and under TYPE_CHECKING count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import millpond

PACKAGE = Path(millpond.__file__).parent

#: smallpond's module paths: thin re-exports of millpond.compat, part of that wing
COMPAT_SURFACES = (
    "millpond.logical",
    "millpond.execution.driver",
    "millpond.execution.task",
    "millpond.common",
    "millpond.dataframe",
    "millpond.contrib",
)

#: lowest first; a module of layer i imports only layers 0..i
LAYERS = (
    ("base", ("millpond.errors", "millpond.config", "millpond.machine")),
    ("io", ("millpond.io",)),
    ("feed", ("millpond.feed",)),  # the training feed: reads materialised results (io)
    ("operators", ("millpond.operators",)),
    ("execution", ("millpond.execution",)),
    ("planning", ("millpond.planning",)),
    ("api", ("millpond.api",)),
    ("ops", ("millpond.ops",)),  # data-preparation operators, over the DataFrame API
    ("compat", ("millpond.compat", *COMPAT_SURFACES)),
    ("application", ("millpond", "millpond.cli", "millpond.__main__", "millpond.demo")),
)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    """The layer of ``module``: the one whose most specific prefix it falls under."""
    best, best_len = None, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(module, prefix) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every millpond import of the file, wherever it is."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if _within(name, "millpond")]


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        mine = layer_of(module)
        for line, target in _imports(path, module):
            theirs = layer_of(target)
            if theirs > mine:
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({LAYERS[mine][0]}) "
                    f"imports {target} ({LAYERS[theirs][0]})"
                )
    return problems


def test_every_import_goes_downward():
    assert upward_imports() == []


def test_the_layering_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself must be able to fail: an io module importing the API is reported."""
    fake = tmp_path / "millpond"
    (fake / "io").mkdir(parents=True)
    (fake / "api").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "io" / "__init__.py").write_text("")
    (fake / "api" / "__init__.py").write_text("")
    (fake / "api" / "session.py").write_text("X = 1\n")
    (fake / "io" / "bad.py").write_text("def f():\n    from millpond.api.session import X\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports() == [
        "millpond/io/bad.py:2: millpond.io.bad (io) imports millpond.api.session (api)"
    ]


def test_compat_surfaces_only_re_export():
    """smallpond's module paths hold no code of their own: every statement is an import
    from millpond.compat (or the API, for ``millpond.dataframe``), ``__all__`` or a docstring."""
    for surface in COMPAT_SURFACES:
        base = PACKAGE.parent / Path(*surface.split("."))
        paths = [base.with_suffix(".py")] if base.with_suffix(".py").exists() else []
        paths += sorted(base.rglob("*.py")) if base.is_dir() else []
        assert paths, surface
        for path in paths:
            for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(stmt, ast.ImportFrom):
                    assert _within(stmt.module or "", "millpond.compat") or (
                        surface == "millpond.dataframe" and _within(stmt.module, "millpond.api")
                    ), f"{path}: imports {stmt.module}"
                    continue
                is_doc = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                is_all = isinstance(stmt, ast.Assign) and [
                    getattr(t, "id", "") for t in stmt.targets
                ] == ["__all__"]
                assert is_doc or is_all, f"{path}:{stmt.lineno}: code in a re-export module"
