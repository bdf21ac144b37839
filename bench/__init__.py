"""millpond benchmark suite.

Run it from the repository root with ``python -m bench`` (``--help`` for options).
Every contender runs in a fresh Python subprocess so that its wall time and its
peak memory (summed RSS of the process tree) are measured the same way.

This package is kept free of heavy imports at top level: ``python -m bench.child``
(the per-contender entry point) imports it first.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
