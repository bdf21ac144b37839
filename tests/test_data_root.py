"""The data_root is private to the user: a default one another local user created first
(or a link planted in its place) is refused, sessions get 0700 directories, intermediate
files are the user's alone, and the user's outputs keep the user's own umask."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import millpond
from millpond.config import default_data_root
from millpond.errors import DataRootError

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to 'nobody' needs root")


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory standing for the shared /tmp, where the default data_root
    goes (``TMPDIR``)."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert default_data_root().startswith(str(shared))
    return shared


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_default_data_root_is_created_private(private_tmp: Path) -> None:
    with millpond.init(progress=False) as sp:
        assert sp.config.data_root == default_data_root()
        assert _mode(sp.config.data_root) == 0o700
        assert _mode(sp.session_dir) == 0o700
        assert sp.from_items([{"x": 1}]).map("x + 1 AS y").take_all() == [{"y": 2}]


@as_root
def test_a_default_data_root_another_user_created_first_is_not_used(private_tmp: Path) -> None:
    hijacked = Path(default_data_root())
    hijacked.mkdir()
    hijacked.chmod(0o777)
    os.chown(hijacked, NOBODY, NOBODY)
    with pytest.raises(DataRootError) as info:
        millpond.init(progress=False)
    message = str(info.value)
    assert str(hijacked) in message and "uid 65534" in message and "data_root=" in message
    assert list(hijacked.iterdir()) == []  # nothing was written there


def test_a_link_in_place_of_the_default_data_root_is_not_followed(
    private_tmp: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, default_data_root())
    with pytest.raises(DataRootError, match="symbolic link"):
        millpond.init(progress=False)
    assert list(elsewhere.iterdir()) == []


def test_a_file_in_place_of_the_default_data_root_is_refused(private_tmp: Path) -> None:
    Path(default_data_root()).write_text("not a directory")
    with pytest.raises(DataRootError, match="not a directory"):
        millpond.init(progress=False)


def test_a_default_data_root_of_ours_open_to_others_is_made_private(private_tmp: Path) -> None:
    mine = Path(default_data_root())
    mine.mkdir()
    mine.chmod(0o777)
    with millpond.init(progress=False):
        assert _mode(mine) == 0o700


@as_root
def test_a_session_directory_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    planted = root / "nightly"
    planted.mkdir(parents=True)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(DataRootError, match="session directory"):
        millpond.init(job_id="nightly", data_root=str(root), progress=False)


def test_intermediate_files_are_private_and_outputs_follow_the_users_umask(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        with millpond.init(
            data_root=str(tmp_path / "root"), keep_intermediate=True, progress=False
        ) as sp:
            df = sp.from_items([{"k": i % 3, "x": i} for i in range(30)], npartitions=3)
            df = df.map_batches(lambda t: t).repartition(2, hash_by="k")
            df.write_parquet(str(out))
            job_dir = Path(sp.last_job.dir)
            files = [p for p in job_dir.rglob("*.parquet")]
            assert files, "the job kept its intermediate files"
            assert {_mode(p) for p in files} == {0o600}
            folders = [p for p in job_dir.rglob("*") if p.is_dir()]
            assert {_mode(p) for p in [job_dir, *folders]} == {0o700}
    finally:
        os.umask(previous)
    assert {_mode(p) for p in out.iterdir()} == {0o644}
    assert pq.read_table(str(out)).num_rows == 30
