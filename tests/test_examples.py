"""Every script in examples/ runs to completion as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_script_runs(script: Path, tmp_path: Path) -> None:
    env = dict(os.environ, MILLPOND_PROGRESS="0")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip(), "the example printed nothing"


def test_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"quickstart", "rag_ingest", "partial_sql_join"}
