"""Memory limits for pod containers: a real memory cgroup where one is writable (the kernel
OOM-kills at the limit), otherwise an RSS watchdog that kills the process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def _own_memory_cgroup() -> tuple[Path, int] | None:
    """The memory cgroup this process is in, and the cgroup version (1 or 2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and (CGROUP_FS / "memory").is_dir():
            return CGROUP_FS / "memory" / path.lstrip("/"), 1
    for line in lines:
        if line.startswith("0::") and "memory" in _read(CGROUP_FS / "cgroup.controllers"):
            return CGROUP_FS / line[3:].lstrip("/"), 2
    return None


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def node_root(node: str) -> tuple[Path, int] | None:
    """The parent cgroup for this node's pods, created if we may; None means use the watchdog."""
    own = _own_memory_cgroup()
    if own is None:
        return None
    base, version = own
    root = base / f"vibecraft-{node}"
    try:
        root.mkdir(exist_ok=True)
        if version == 2:
            (base / "cgroup.subtree_control").write_text("+memory")
            (root / "cgroup.subtree_control").write_text("+memory")
    except OSError:
        return None
    return root, version


class MemoryCgroup:
    """One container's cgroup."""

    def __init__(self, root: Path, version: int, name: str, limit_bytes: int | None) -> None:
        self.path = root / name
        self.version = version
        self.path.mkdir(exist_ok=True)
        if limit_bytes:
            if version == 1:
                (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):  # no swap accounting on some kernels
                    (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            else:
                (self.path / "memory.max").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):
                    (self.path / "memory.swap.max").write_text("0")

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_killed(self) -> bool:
        text = _read(self.path / ("memory.oom_control" if self.version == 1 else "memory.events"))
        for line in text.splitlines():
            key, _, val = line.partition(" ")
            if key == "oom_kill" and val.strip().isdigit() and int(val) > 0:
                return True
        return False

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.procs_file).split()]

    def kill(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        for _ in range(50):
            self.kill()
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and its descendants (for the watchdog fallback)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def kill_all_pods(node: str) -> None:
    """Kill every process left in this node's pod cgroups (cluster-down leaves nothing behind)."""
    own = _own_memory_cgroup()
    if own is None:
        return
    root = own[0] / f"vibecraft-{node}"
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir():
            MemoryCgroup(root, own[1], child.name, None).remove()
