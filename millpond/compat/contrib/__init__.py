"""smallpond's ``smallpond.contrib``: ready-made nodes built on the LogicalPlan API —
table copies (``copy_table``), dataset logging (``log_dataset``) and Common Crawl WARC
import (``warc``, needs the ``warc`` extra). Importing this package imports none of them,
so a missing optional dependency only matters to the module that needs it."""

from __future__ import annotations

import logging
import sys

#: the Driver's console format, so lines from workers read like the driver's own
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def task_logger(name: str) -> logging.Logger:
    """The logger ``name``, made to reach the console when nothing configured logging.

    User code runs in worker processes, where no handler is installed, so INFO lines would
    be dropped; smallpond's contrib nodes log through loguru, which writes to stderr in
    every process. Call this where the lines are logged (not at import), so a program or a
    test that configured logging (pytest's ``caplog``) keeps receiving them as usual."""
    logger = logging.getLogger(name)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


__all__ = ["LOG_FORMAT", "task_logger"]
