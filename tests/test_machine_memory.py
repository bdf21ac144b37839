"""Cgroup memory-limit detection, on fake /proc and cgroup trees built under ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import millpond.config as config
import millpond.machine as machine
from millpond.config import GB

# Real line shapes from /proc/self/mountinfo (cgroup v2 only, and a v1 host).
V2_MOUNTINFO = """\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
V1_MOUNTINFO = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/cpuacct,memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuacct,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:15 - cgroup2 cgroup2 rw
"""
V1_UNLIMITED = "9223372036854771712"


def make_tree(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> str:
    """Write ``proc/self/{cgroup,mountinfo}`` and the cgroup files under ``root``."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return str(root)


@pytest.mark.parametrize(
    ("cgroup", "limits", "expected"),
    [
        pytest.param(  # the process's own nested cgroup is limited, "max" above it
            "/system.slice/run-u42.service",
            {"system.slice": "max", "system.slice/run-u42.service": str(3 * GB)},
            3 * GB,
            id="own-nested-cgroup",
        ),
        pytest.param(  # only an ancestor is limited: it binds its children
            "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope",
            {
                "kubepods.slice": str(20 * GB),
                "kubepods.slice/kubepods-pod1.slice": str(2 * GB),
                "kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope": "max",
            },
            2 * GB,
            id="ancestor-only",
        ),
        pytest.param(
            "/user.slice/user-1000.slice",
            {"user.slice": "max", "user.slice/user-1000.slice": "max"},
            None,
            id="all-max-is-unlimited",
        ),
    ],
)
def test_v2_takes_the_smallest_memory_max_up_to_the_mount(
    tmp_path: Path, cgroup: str, limits: dict[str, str], expected: int | None
) -> None:
    files = {f"sys/fs/cgroup/{group}/memory.max": value for group, value in limits.items()}
    root = make_tree(tmp_path, f"0::{cgroup}\n", V2_MOUNTINFO, files)
    assert machine._cgroup_memory_limit(root) == expected


def test_v2_mount_point_with_escaped_space(tmp_path: Path) -> None:
    mountinfo = "35 24 0:30 / /my\\040cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
    root = make_tree(tmp_path, "0::/job\n", mountinfo, {"my cgroup/job/memory.max": str(GB)})
    assert machine._cgroup_memory_limit(root) == GB


def test_v1_combined_controllers_nested_path(tmp_path: Path) -> None:
    base = "sys/fs/cgroup/cpuacct,memory"
    root = make_tree(
        tmp_path,
        "11:name=systemd:/batch/job7\n5:cpuacct,memory:/batch/job7\n2:cpu:/\n0::/\n",
        V1_MOUNTINFO,
        {
            f"{base}/memory.limit_in_bytes": V1_UNLIMITED,
            f"{base}/batch/memory.limit_in_bytes": V1_UNLIMITED,
            f"{base}/batch/job7/memory.limit_in_bytes": str(3 * GB),
            # a cpu-only hierarchy's file of the same name must not count
            "sys/fs/cgroup/cpu/memory.limit_in_bytes": str(GB),
        },
    )
    assert machine._cgroup_memory_limit(root) == 3 * GB


def test_v1_container_mount_root_is_the_cgroup(tmp_path: Path) -> None:
    mountinfo = (
        "1500 1490 0:32 /docker/abc123 /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime "
        "master:15 - cgroup cgroup rw,memory\n"
    )
    root = make_tree(
        tmp_path,
        "4:memory:/docker/abc123\n",
        mountinfo,
        {"sys/fs/cgroup/memory/memory.limit_in_bytes": str(3 * GB)},
    )
    assert machine._cgroup_memory_limit(root) == 3 * GB


def test_v1_unlimited(tmp_path: Path) -> None:
    base = "sys/fs/cgroup/cpuacct,memory"
    root = make_tree(
        tmp_path,
        "5:cpuacct,memory:/process_api/ab95\n",
        V1_MOUNTINFO,
        {
            f"{base}/memory.limit_in_bytes": V1_UNLIMITED,
            f"{base}/process_api/ab95/memory.limit_in_bytes": V1_UNLIMITED,
        },
    )
    assert machine._cgroup_memory_limit(root) is None


def test_hybrid_takes_smallest_of_v1_and_v2(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        "5:cpuacct,memory:/a\n0::/a\n",
        V1_MOUNTINFO,
        {
            "sys/fs/cgroup/cpuacct,memory/a/memory.limit_in_bytes": str(4 * GB),
            "sys/fs/cgroup/unified/a/memory.max": str(2 * GB),
        },
    )
    assert machine._cgroup_memory_limit(root) == 2 * GB


@pytest.mark.parametrize(
    "cgroup, mountinfo",
    [(None, None), ("0::/a\n", None), (None, V2_MOUNTINFO), ("0::/a\n", V2_MOUNTINFO)],
)
def test_missing_files_mean_no_limit(
    tmp_path: Path, cgroup: str | None, mountinfo: str | None
) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    if cgroup is not None:
        (tmp_path / "proc/self/cgroup").write_text(cgroup)
    if mountinfo is not None:
        (tmp_path / "proc/self/mountinfo").write_text(mountinfo)
    assert machine._cgroup_memory_limit(str(tmp_path)) is None


def test_machine_memory_on_this_machine() -> None:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < machine.machine_memory() <= physical


def test_default_memory_limit_follows_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = min(3 * GB, physical)
    monkeypatch.setattr(machine, "_cgroup_memory_limit", lambda root="/": limit)
    assert config.SessionConfig().memory_limit == pytest.approx(0.8 * limit, rel=1e-6)
