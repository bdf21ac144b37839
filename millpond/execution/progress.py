"""Progress bars per stage: on a terminal only (or when asked), and only for work that takes
long enough to be worth watching."""

from __future__ import annotations

import sys


def progress_enabled(setting: bool | None) -> bool:
    if setting is not None:
        return setting
    return sys.stderr.isatty()


class NoBar:
    """What a stage counts its tasks on when no bar is shown: nothing, and no tqdm import."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def stage_bar(total: int, description: str, enabled: bool):
    """A bar counting tasks; appears after half a second so tiny jobs print nothing."""
    if not enabled:
        return NoBar()
    from tqdm.auto import tqdm  # imported on first use: keeps `import millpond` fast

    return tqdm(
        total=total,
        desc=description,
        unit="task",
        delay=0 if not sys.stderr.isatty() else 0.5,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
