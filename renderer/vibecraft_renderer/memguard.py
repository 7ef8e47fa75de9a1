"""A memory guard: stop with a clear reason and exit code before the kernel OOM-kills the pod.

An OOM kill leaves only "OOMKilled" and a lost checkpoint; stopping ourselves at 90% of the
container limit (VIBECRAFT_MEMORY_LIMIT_MB, which the operator fills from limits.memory through the
downward API, else the cgroup's memory.max) lets the operator see why and pick a bigger limit.
Counts this process plus all its children (ffmpeg encoders, decoders), by RSS (page cache from writing segments does not
count, unlike the cgroup's memory.current).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .errors import MemoryGuardError

log = logging.getLogger(__name__)

MB: Final = 1024 * 1024
GUARD_FRACTION: Final = 0.9  # headroom for ffmpeg bursts between two samples
CHECK_INTERVAL_S: Final = 0.5


def cgroup_limit_bytes() -> int | None:
    """The container memory limit (cgroup v2, then v1), or None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return value if value < (1 << 60) else None  # v1 reports "unlimited" as a huge number
    return None


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def child_pids() -> set[int]:
    """Live children of this process, whichever thread started them (empty where /proc lacks it)."""
    pids: set[int] = set()
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return pids
    for task in tasks:
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return pids


class MemoryGuard:
    """Raises MemoryGuardError from check() when resident memory crosses the limit."""

    def __init__(self, limit_mb: float | None = None) -> None:
        container = int(limit_mb * MB) if limit_mb else cgroup_limit_bytes()
        self.limit: int | None = int(container * GUARD_FRACTION) if container else None
        self._next = 0.0
        self.peak = 0
        if self.limit:
            log.debug("memory guard at %d MB", self.limit // MB)

    def check(self, extra_pids: Iterable[int] = (), force: bool = False) -> None:
        """Cheap when called often: samples /proc at most every CHECK_INTERVAL_S.

        Children are found by themselves; extra_pids only matter where /proc cannot list them.
        """
        if not self.limit:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + CHECK_INTERVAL_S
        used = rss_bytes() + sum(rss_bytes(p) for p in child_pids() | set(extra_pids))
        self.peak = max(self.peak, used)
        if used > self.limit:
            raise MemoryGuardError(
                f"memory guard: renderer and ffmpeg use {used // MB} MB, over the {self.limit // MB} MB limit;"
                " lower video.width/height or raise the memory limit"
            )
