"""smallpond 0.15's own tests and scripts, fetched at test time (never copied into this
repository) and renamed the way a user would port a program: the word ``smallpond``
replaced with ``millpond``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SMALLPOND_VERSION = "0.15.0"
#: a local copy of the sdist to use instead of downloading it
SDIST_ENV = "MILLPOND_SMALLPOND_SDIST"


def renamed(text: str) -> str:
    """A smallpond program ported to millpond: the word replaced, nothing else."""
    return re.sub(r"\bsmallpond\b", "millpond", text)


def fetch_sdist(directory: Path) -> Path:
    """The unpacked smallpond sdist under ``directory``; skips the test (saying why) when
    it can be neither found nor downloaded."""
    tarball = os.environ.get(SDIST_ENV)
    if not tarball:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
                + [f"smallpond=={SMALLPOND_VERSION}", "-d", str(directory), "-q"],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot download the smallpond {SMALLPOND_VERSION} sdist: {exc}")
        found = sorted(directory.glob(f"smallpond-{SMALLPOND_VERSION}.tar.gz"))
        if done.returncode != 0 or not found:
            pytest.skip(
                f"cannot download the smallpond {SMALLPOND_VERSION} sdist from the package "
                f"index (set {SDIST_ENV} to a local copy): {done.stderr.strip()[-300:]}"
            )
        tarball = str(found[0])
    with tarfile.open(tarball) as archive:
        archive.extractall(directory, filter="data")
    return directory / f"smallpond-{SMALLPOND_VERSION}"


def port(source: Path, relative: str, destination: Path) -> Path:
    """Copy smallpond's file ``relative`` into ``destination`` (same relative path), renamed."""
    target = destination / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(renamed((source / relative).read_text(encoding="utf-8")), encoding="utf-8")
    return target


def generate_mock_urls(source: Path, workdir: Path) -> Path:
    """smallpond's test inputs (``tests/data/mock_urls``: 10 TSV files of 100 lines, 10
    Parquet files of 100 rows), made by its own ``tests/datagen.py``, renamed."""
    port(source, "tests/datagen.py", workdir)
    (workdir / "tests" / "__init__.py").touch()
    code = (
        "import sys; sys.path.insert(0, 'tests'); import datagen; "
        "datagen.generate_url_tsv_files('tests/data/mock_urls', 10, 100); "
        "datagen.generate_url_parquet_files('tests/data/mock_urls', 10)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, timeout=300)
    return workdir / "tests" / "data" / "mock_urls"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test session's MILLPOND_* settings, progress off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    env.update(MILLPOND_PROGRESS="0", **extra)
    return env
