"""Progress bars per stage: on a terminal only (or when asked), and only for work that takes
long enough to be worth watching."""

from __future__ import annotations

import sys


def progress_enabled(setting: bool | None) -> bool:
    if setting is not None:
        return setting
    return sys.stderr.isatty()


def stage_bar(total: int, description: str, enabled: bool):
    """A bar counting tasks; appears after half a second so tiny jobs print nothing."""
    from tqdm.auto import tqdm  # imported on first use: keeps `import millpond` fast

    return tqdm(
        total=total,
        desc=description,
        unit="task",
        disable=not enabled,
        delay=0 if enabled and not sys.stderr.isatty() else 0.5,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
