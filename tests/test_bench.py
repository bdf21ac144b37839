"""The benchmark suite stays runnable: its quick mode runs every benchmark end to end and
checks each contender's result against the reference (no timings are asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_bench_quick_mode_runs_and_every_result_matches(tmp_path) -> None:
    env = dict(os.environ, MILLPOND_PROGRESS="0")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in (
        "groupby",
        "python udf",
        "small data, heavy udf",
        "tiny cold",
        "tiny warm",
        "scan+filter+write",
        "pipelining",
    ):
        assert name in done.stdout
