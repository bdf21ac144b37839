"""Quoting of paths, names and values that reach DuckDB SQL: the one place it is done."""

from __future__ import annotations

from collections.abc import Iterable


def quote_string(value: str) -> str:
    """A SQL string literal: ``it's.parquet`` becomes ``'it''s.parquet'``."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A SQL identifier, double quotes doubled inside (``a"b`` is written ``"a""b"``)."""
    return '"' + str(name).replace('"', '""') + '"'


def string_list(values: Iterable[str]) -> str:
    """A DuckDB list literal of strings, e.g. for ``read_parquet([...])``."""
    return "[" + ", ".join(quote_string(v) for v in values) + "]"


_GLOB_ESCAPES = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})


def literal_path(path: str) -> str:
    """A file path as DuckDB's readers must see it to open that one file: they expand
    ``*``, ``?`` and ``[...]`` in every path, so those characters are escaped as one-character
    classes (``x*.parquet`` becomes ``x[*].parquet``, which matches only itself)."""
    return str(path).translate(_GLOB_ESCAPES)


def file_list(paths: Iterable[str]) -> str:
    """A DuckDB list literal of files read as they are named, never as globs."""
    return string_list(literal_path(p) for p in paths)


def ident_list(names: Iterable[str]) -> str:
    """Comma-separated quoted identifiers."""
    return ", ".join(quote_ident(n) for n in names)
