"""Entry point for ``python -m millpond``."""

from millpond.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
