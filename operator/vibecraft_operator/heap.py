"""Giving freed memory back to the OS, so the operator's RSS follows what it holds rather than its worst burst.

Measured in bench/bench_operator_latency.py's backlog round (500 finished and 500 queued MusicVideos):
the objects Python still held (tracemalloc) were well under half of the process's RSS. Most of the
gap was kopf's unbounded connections (fixed in session.py); some of it is memory already freed but
kept by glibc's malloc: objects over 512 bytes (dict tables, the JSON text of each watch event, the
lists of queue entries an admission builds) come from malloc's main heap, which only shrinks from its
top. With a 64 KiB mmap threshold alone (set through MALLOC_MMAP_THRESHOLD_, before the trimming below)
the operator settled at 142 MB after that round instead of 177 MB.
Two glibc knobs, without touching what the operator keeps:

- blocks of MMAP_THRESHOLD bytes or more get their own mappings, unmapped on free (glibc's default
  threshold grows itself up to 32 MiB after the first large free, which is what kept them);
- `malloc_trim(0)`, run every TRIM_INTERVAL seconds, hands the free pages inside the heap back
  (madvise), not only its top.

Elsewhere (musl, macOS) both are no-ops: the operator works the same, only with more RSS.
"""

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024  # bytes: a block this size or larger is mapped on its own (glibc's start: 128 KiB)
TRIM_THRESHOLD = 256 * 1024  # bytes of free space at the heap's top that are given back at once
TRIM_INTERVAL = 5.0  # seconds between malloc_trim calls (each costs about a millisecond per 100 MB of heap)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (has malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def available() -> bool:
    """Whether the C library is glibc, so tune() and trim() do something."""
    return _glibc() is not None


def tune() -> bool:
    """Set the thresholds (see the module docstring); False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def trim() -> bool:
    """Give the heap's free pages back to the OS now; whether any were (False where not glibc)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


async def trim_forever(interval: float = TRIM_INTERVAL) -> None:
    """trim() every `interval` seconds until cancelled (a no-op loop is not started where it cannot work)."""
    if not available():
        log.info("not glibc: freed memory is left to the C library")
        return
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(OSError):
            trim()
