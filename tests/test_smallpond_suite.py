"""smallpond 0.15's own DataFrame tests (``tests/test_dataframe.py``), renamed, pass in full
on both engines: the embedded one, and Ray as smallpond's conftest starts it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from smallpond_sdist import clean_env, fetch_sdist, generate_mock_urls, port

pytestmark = pytest.mark.timeout(900)

#: smallpond's conftest without Ray: the same ``sp`` fixture on the embedded engine
EMBEDDED_CONFTEST = '''
import os

import pytest

import millpond


@pytest.fixture
def sp(request):
    """A millpond session for each test, on the embedded engine"""
    runtime_root = os.getenv("TEST_RUNTIME_ROOT") or "tests/runtime"
    sp = millpond.init(data_root=os.path.join(runtime_root, request.node.name))
    yield sp
    sp.shutdown()
'''


@pytest.fixture(scope="module")
def smallpond_tests(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """smallpond's sources and a working directory holding its renamed test_dataframe.py
    with the data its datagen.py makes."""
    source = fetch_sdist(tmp_path_factory.mktemp("smallpond-sdist"))
    workdir = tmp_path_factory.mktemp("smallpond-tests")
    port(source, "tests/test_dataframe.py", workdir)
    generate_mock_urls(source, workdir)
    return source, workdir


def _run_suite(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_dataframe.py"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=800,
        env=clean_env(),
    )


def _counts(output: str) -> dict[str, int]:
    summary = output.strip().splitlines()[-1]
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}


@pytest.mark.parametrize("engine", ["embedded", "ray"])
def test_smallpond_dataframe_tests_pass_renamed(smallpond_tests, engine):
    source, workdir = smallpond_tests
    conftest = workdir / "tests" / "conftest.py"
    if engine == "ray":
        pytest.importorskip("ray")
        port(source, "tests/conftest.py", workdir)  # ray.init(address="local"), as smallpond
    else:
        conftest.write_text(EMBEDDED_CONFTEST)
    done = _run_suite(workdir)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    # all 21 tests: 20 pass, and smallpond itself skips test_limit_large
    assert _counts(done.stdout) == {"passed": 20, "skipped": 1}, done.stdout[-2000:]
