"""Operator hot paths, without a cluster: one reconcile decision, and admission over a big queue.

Figures are ratios against baselines measured in the same run (so the machine's speed cancels):
  decide / json  - one decide() step vs json.dumps + json.loads of the same MusicVideo
  admit / sort   - admission of one render among N vs sorting the N queue entries
Fails (exit 1) if a ratio leaves its budget: the reconciler must stay cheap per wake-up.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vibecraft_operator.jobs import spec_hash
from vibecraft_operator.queue import Admission, Limits, QueueEntry, admit
from vibecraft_operator.reconcile import Observation, decide
from vibecraft_operator.settings import Settings

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SETTINGS = Settings(metrics_port=0)
BUDGETS = {"decide / json": 40.0, "admit / sort": 15.0}


def per_call(fn: Callable[[], object], seconds: float = 0.5) -> float:
    """Best-of-5 mean seconds per call."""
    best = float("inf")
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            fn()
            n += 1
        best = min(best, elapsed / n)
    return best


def musicvideo() -> dict[str, Any]:
    mv: dict[str, Any] = {
        "apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo",
        "metadata": {"name": "bench", "namespace": "default", "uid": "u", "generation": 1,
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"audio": {"url": "s3://b/a.ogg"}, "output": {"url": "s3://b/o/"}, "style": {"backend": "procedural"},
                 "video": {"fps": 30}, "retries": 2, "deadlineSeconds": 3600, "suspend": False},
        "status": {"phase": "Pending", "attempts": 0, "observedGeneration": 1},
    }
    mv["status"]["specHash"] = spec_hash(mv["spec"])
    return mv


def main() -> int:
    mv = musicvideo()
    obs = Observation(mv, None, [], NOW, Admission(True))
    ratios = {}
    assert decide(obs, SETTINGS).create_job is not None
    t_decide = per_call(lambda: decide(obs, SETTINGS))  # a launch: builds a Job, the most work
    t_json = per_call(lambda: json.loads(json.dumps(mv)))
    ratios["decide / json"] = t_decide / t_json

    n = 2000
    entries = [QueueEntry(f"u{i}", f"ns{i % 20}", f"mv{i}", f"2025-01-01T00:{i // 60 % 60:02}:{i % 60:02}Z",
                          "Running" if i < 50 else "Queued") for i in range(n)]
    target, limits = entries[-1], Limits(cluster=100, namespace=5)
    t_admit = per_call(lambda: admit(target, entries, limits))
    t_sort = per_call(lambda: sorted(entries, key=lambda e: e.order))
    ratios["admit / sort"] = t_admit / t_sort

    print(f"decide(): {t_decide * 1e6:8.1f} us per step   json roundtrip: {t_json * 1e6:6.1f} us")
    print(f"admit() among {n}: {t_admit * 1e3:6.2f} ms   sort: {t_sort * 1e3:6.2f} ms")
    failed = False
    for name, ratio in ratios.items():
        ok = ratio <= BUDGETS[name]
        failed |= not ok
        print(f"{name:>14}: {ratio:6.1f}x (budget {BUDGETS[name]:.0f}x) {'ok' if ok else 'OVER BUDGET'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
