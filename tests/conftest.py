"""Shared fixtures for the millpond test suite.

* ``session``: a millpond session, parametrised over ``"inline"`` (stages run in the driver,
  the default for small inputs) and ``"workers"`` (``inline_bytes=0``: every stage runs on a
  pool of two worker processes). The two sessions are created once per test run and shared,
  which keeps worker start-up off every test; tests must not shut them down (use
  ``make_session`` for a session of their own).
* ``make_session``: a factory for sessions with custom settings, shut down after the test.
* ``tmp_data_root``: a fresh directory to use as a session's ``data_root``.
* ``parquet_dataset``: a small deterministic Parquet dataset (4 files x 5,000 rows) in
  ``tmp_path``; ``parquet_table`` is the same data as one Arrow table.
* ``assert_same_rows``: compare two tables as multisets of rows (order ignored unless asked).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import millpond

SESSION_MODES = ("inline", "workers")
NUM_EXECUTORS = 2

DATASET_FILES = 4
DATASET_ROWS_PER_FILE = 5_000
DATASET_ROWS = DATASET_FILES * DATASET_ROWS_PER_FILE
DATASET_DISTINCT_K = 50


def session_options(mode: str, data_root: str, **overrides: object) -> dict[str, object]:
    """The ``millpond.init`` arguments of a test session in ``mode``."""
    if mode not in SESSION_MODES:
        raise ValueError(f"unknown session mode {mode!r}; expected one of {SESSION_MODES}")
    options: dict[str, object] = {
        "data_root": data_root,
        "num_executors": NUM_EXECUTORS,
        "progress": False,
    }
    if mode == "workers":
        options["inline_bytes"] = 0
    options.update(overrides)
    return options


@pytest.fixture(scope="session")
def _shared_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = str(tmp_path_factory.mktemp("millpond-shared-root"))
    sessions: dict[str, millpond.Session] = {"__root__": root}  # type: ignore[dict-item]
    yield sessions
    for key, value in sessions.items():
        if key != "__root__":
            value.shutdown()


@pytest.fixture(params=SESSION_MODES)
def session(request: pytest.FixtureRequest, _shared_sessions: dict) -> millpond.Session:
    """A shared session in each mode (``inline`` / ``workers``); do not shut it down."""
    mode = request.param
    current = _shared_sessions.get(mode)
    if current is None or current._closed:
        current = millpond.init(**session_options(mode, _shared_sessions["__root__"]))
        _shared_sessions[mode] = current
    return current


@pytest.fixture
def tmp_data_root(tmp_path) -> str:
    """A fresh, empty directory for a session's ``data_root``."""
    path = tmp_path / "millpond-data"
    path.mkdir()
    return str(path)


@pytest.fixture
def make_session(tmp_data_root: str) -> Iterator[Callable[..., millpond.Session]]:
    """``make_session(mode="workers", **init_overrides)``: a session of the test's own, with
    its ``data_root`` in the test's temporary directory; all are shut down afterwards."""
    made: list[millpond.Session] = []

    def make(mode: str = "workers", **overrides: object) -> millpond.Session:
        session = millpond.init(**session_options(mode, tmp_data_root, **overrides))
        made.append(session)
        return session

    yield make
    for s in made:
        s.shutdown()


def dataset_file_table(index: int) -> pa.Table:
    """File ``index`` of the test dataset: ``id`` int64 (unique, 0..19999 overall), ``k``
    int32 (50 distinct values, NULL on every 97th id), ``v`` float64, ``s`` string."""
    ids = np.arange(
        index * DATASET_ROWS_PER_FILE, (index + 1) * DATASET_ROWS_PER_FILE, dtype=np.int64
    )
    k = pa.array((ids * 7) % DATASET_DISTINCT_K, pa.int32())
    k = pc.if_else(pa.array(ids % 97 == 0), pa.scalar(None, pa.int32()), k)
    v = ((ids * 37) % 1000) / 10.0 - 50.0
    s = pa.array([f"s{i % 300:03d}" for i in ids.tolist()], pa.string())
    return pa.table({"id": pa.array(ids), "k": k, "v": pa.array(v, pa.float64()), "s": s})


@pytest.fixture
def parquet_dataset(tmp_path) -> str:
    """Directory holding ``part-0.parquet`` … ``part-3.parquet`` (5,000 rows each)."""
    directory = tmp_path / "dataset"
    directory.mkdir()
    for i in range(DATASET_FILES):
        pq.write_table(dataset_file_table(i), directory / f"part-{i}.parquet", row_group_size=2_500)
    return str(directory)


@pytest.fixture
def parquet_table() -> pa.Table:
    """The whole test dataset as one Arrow table, in file order."""
    return pa.concat_tables([dataset_file_table(i) for i in range(DATASET_FILES)])


def _frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table.to_pandas() if isinstance(table, pa.Table) else table.copy()


def large_offsets(schema: pa.Schema) -> pa.Schema:
    """``schema`` as millpond's collected results carry it (as smallpond's do): every
    string and binary type, nested ones too, with 64-bit offsets."""

    def large(t: pa.DataType) -> pa.DataType:
        if t == pa.string():
            return pa.large_string()
        if t == pa.binary():
            return pa.large_binary()
        if pa.types.is_list(t):
            return pa.list_(pa.field(t.value_field.name, large(t.value_type)))
        if pa.types.is_struct(t):
            return pa.struct([f.with_type(large(f.type)) for f in t])
        if pa.types.is_map(t):
            return pa.map_(large(t.key_type), large(t.item_type))
        return t

    return pa.schema([f.with_type(large(f.type)) for f in schema], metadata=schema.metadata)


def assert_frames_equal(
    actual: pa.Table | pd.DataFrame,
    expected: pa.Table | pd.DataFrame,
    *,
    ordered: bool = False,
    check_column_order: bool = True,
    check_dtype: bool = False,
    rtol: float = 1e-9,
) -> None:
    """Assert that two tables hold the same rows (as multisets unless ``ordered``)."""
    a, e = _frame(actual), _frame(expected)
    assert sorted(a.columns) == sorted(e.columns), (list(a.columns), list(e.columns))
    if check_column_order:
        assert list(a.columns) == list(e.columns)
    else:
        a = a[list(e.columns)]
    assert len(a) == len(e), f"{len(a)} rows, expected {len(e)}"
    if not ordered and len(a.columns):
        cols = list(e.columns)
        a = a.sort_values(cols, na_position="last", kind="stable")
        e = e.sort_values(cols, na_position="last", kind="stable")
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True),
        e.reset_index(drop=True),
        check_dtype=check_dtype,
        check_exact=False,
        rtol=rtol,
    )


@pytest.fixture
def assert_same_rows() -> Callable[..., None]:
    """:func:`assert_frames_equal`, as a fixture for test modules."""
    return assert_frames_equal


@pytest.fixture(autouse=True)
def _no_leaked_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run with default settings whatever the caller's ``MILLPOND_*`` variables say."""
    for name in list(os.environ):
        if name.startswith("MILLPOND_"):
            monkeypatch.delenv(name)


# -- Ray -----------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RAY_AUTH: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Token authentication with a token of the test session's own for the Ray head the
    tests start, whatever ``~/.ray`` holds: the head, this process and the scripts tests
    run all agree. Set before anything imports Ray (which reads it once)."""
    import secrets
    import tempfile

    directory = tempfile.mkdtemp(prefix="mpray-auth")
    path = os.path.join(directory, "auth_token")
    with open(path, "w") as f:
        f.write(secrets.token_hex(32))
    _RAY_AUTH.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=path)
    os.environ.update(_RAY_AUTH)


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    path = _RAY_AUTH.get("RAY_AUTH_TOKEN_PATH")
    if path:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address(ray_head: dict[str, str]) -> str:
    return ray_head["address"]


@pytest.fixture(scope="session")
def ray_head() -> Iterator[dict[str, str]]:
    """A Ray head started once per test session (2 CPUs, 2 declared GPUs, no dashboard):
    its ``address``, and its Ray Client address (``client``). Tests attach to it through
    ``ray_address``."""
    pytest.importorskip("ray")
    with start_ray_head(num_cpus=2, num_gpus=2) as head:
        yield head


@contextlib.contextmanager
def start_ray_head(num_cpus: int, num_gpus: int) -> Iterator[dict[str, str]]:
    """Start a Ray head on this machine under ``ray start --block``; terminating that
    process (at the end) stops this head and only it."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    ray_cli = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    temp_dir = tempfile.mkdtemp(prefix="mpray", dir="/tmp")  # short: Ray's socket paths
    port, client_port = _free_port(), _free_port()
    env = dict(os.environ)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    # the Ray workers import millpond from this checkout, and test modules from here
    # (their functions pickle by reference)
    paths = (os.path.dirname(tests_dir), tests_dir, env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(_RAY_AUTH)
    log_path = os.path.join(temp_dir, "ray-start.log")
    with open(log_path, "w") as log_file:
        head = subprocess.Popen(
            [ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
            + ["--port", str(port), "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus)]
            + ["--include-dashboard", "false", "--disable-usage-stats"]
            + ["--ray-client-server-port", str(client_port)]
            + ["--object-store-memory", str(256 * 1024 * 1024)]
            + ["--temp-dir", temp_dir],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 90
        while True:
            with open(log_path) as f:
                text = f.read()
            if "block forever" in text:
                break
            if head.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the test Ray head did not start:\n{text[-3000:]}")
            time.sleep(0.2)
        yield {"address": f"127.0.0.1:{port}", "client": f"ray://127.0.0.1:{client_port}"}
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:  # its own process group: Ray's processes
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def start_ray_node(head_address: str, num_cpus: int, hidden: str) -> Iterator[str]:
    """Join a worker node to the head at ``head_address`` that runs in a mount namespace of
    its own, where ``hidden`` is an empty tmpfs: a node on this machine that cannot see
    what the driver writes under ``hidden`` (as a node without the driver's disk). Needs
    ``unshare`` and the right to mount (root). It joins a few seconds later: callers wait
    for it (``ray.nodes()``) in the process that uses the cluster. Yields the node's log."""
    import shutil
    import signal
    import subprocess
    import tempfile

    ray_cli = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    env = dict(os.environ)
    env.update(_RAY_AUTH, RAY_USAGE_STATS_ENABLED="0")
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(tests_dir), tests_dir, env.get("PYTHONPATH")) if p
    )
    fd, log_path = tempfile.mkstemp(prefix="mpray-node", suffix=".log", dir="/tmp")
    os.close(fd)
    command = (
        f"mount -t tmpfs millpond-hidden {shlex.quote(hidden)} && exec {shlex.quote(ray_cli)} "
        f"start --block --address {head_address} --node-ip-address 127.0.0.1 "
        f"--num-cpus {num_cpus} --num-gpus 0 --disable-usage-stats"
    )
    with open(log_path, "w") as log_file:
        node = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", command],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield log_path
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.remove(log_path)


# -- sandbox for destructive calls ----------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home directory (``HOME``) holding a project folder that is the working
    directory. Tests that aim ``overwrite`` or a delete at ``.``, ``~`` or a parent of an
    input enter it first, so a broken guard costs only this tree, never the real home or
    the repository. Yields the fake home."""
    home = tmp_path / "home"
    project = home / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('my code')\n")
    (project / "notes.txt").write_text("my notes\n")
    (home / ".bashrc").write_text("# my shell\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    return home


def tree_snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) below ``root``: equal before and after
    means nothing was changed or deleted."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


# -- S3 ------------------------------------------------------------------------------------


class S3Server:
    """A real S3-compatible HTTP server on 127.0.0.1 (moto's server mode), with a key and
    secret of its own (an IAM user it created). It checks credentials only inside
    :meth:`authenticating`: moto 5 miscomputes the signature of a listing whose prefix
    holds a ``/``, so with checks on, only requests that should fail are meaningful."""

    def __init__(self) -> None:
        import json
        import uuid

        import requests
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        iam = self._client("iam", "bootstrap", "bootstrap")
        user = f"millpond-tests-{uuid.uuid4().hex[:8]}"  # moto's state is per process
        iam.create_user(UserName=user)
        policy = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        iam.put_user_policy(
            UserName=user,
            PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3 = self._client("s3", self.key, self.secret)
        self._uuid = uuid
        self._requests = requests

    @contextlib.contextmanager
    def authenticating(self) -> Iterator[None]:
        """Every request inside is checked: a wrong key or secret gets a 403."""
        self._set_auth("0")
        try:
            yield
        finally:
            self._set_auth("inf")

    def _set_auth(self, unchecked_requests: str) -> None:
        self._requests.post(
            f"{self.endpoint}/moto-api/reset-auth",
            data=unchecked_requests,
            headers={"Content-Type": "text/plain"},
        ).raise_for_status()

    def _client(self, service: str, key: str, secret: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

    @property
    def storage_options(self) -> dict[str, object]:
        """fsspec/s3fs options that reach this server."""
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint}

    def new_bucket(self) -> str:
        """A fresh, empty bucket of a name no other test uses."""
        name = f"test-{self._uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The object keys under ``prefix``, sorted (read with boto3, not millpond)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3 server for the test session; each test takes a bucket of its own."""
    server = S3Server()
    yield server
    server.stop()
