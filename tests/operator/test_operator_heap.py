"""heap.py: freed memory goes back to the OS (the operator's RSS target in bench_operator_latency.py)."""

import os

import pytest
from vibecraft_operator import heap

pytestmark = pytest.mark.skipif(not heap.available(), reason="glibc only")

BLOCK = 2048  # over Python's 512-byte small-object limit: from malloc's heap, like the JSON of watch events
TOTAL = 96 * 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_trim_gives_back_what_free_alone_keeps() -> None:
    """Blocks freed below one that is still held stay in the process until malloc_trim returns them."""
    blocks = [bytearray(BLOCK) for _ in range(TOTAL // BLOCK)]
    held = bytearray(BLOCK)  # allocated last: the heap's top stays in use, so free() cannot shrink it
    full = rss()
    del blocks
    freed = rss()
    assert full - freed < TOTAL // 4, "free() alone returned the memory: nothing for trim to do here"
    assert heap.trim()
    trimmed = rss()
    assert freed - trimmed > TOTAL * 3 // 4, (full, freed, trimmed)
    del held


def test_tune_sets_the_thresholds() -> None:
    assert heap.tune()
