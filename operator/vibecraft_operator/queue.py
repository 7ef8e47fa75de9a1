"""Admission of renders under the cluster-wide and per-namespace limits, fair between namespaces."""

import heapq
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vibecraft_common.status import PENDING, QUEUED, RUNNING, SUCCEEDED

from vibecraft_operator.constants import R_QUEUED
from vibecraft_operator.timeutil import parse_time

WAITING_PHASES = frozenset({"", PENDING, QUEUED})


@dataclass(frozen=True)
class QueueEntry:
    """What admission needs to know about one MusicVideo."""

    uid: str
    namespace: str
    name: str
    created: str  # RFC 3339, so string order is time order
    phase: str
    suspended: bool = False
    kueue: bool = False  # Kueue admits it, not this queue
    started: str = ""  # status.startedAt (RFC 3339) of its render, kept once it finished: when its namespace last got a slot
    finished: str = ""  # status.finishedAt (RFC 3339)
    resource_version: str = ""
    position: int | None = None  # status.queuePosition as written
    estimate: int | None = None  # status.estimatedStartSeconds as written
    queue_updated: str = ""  # status.queueUpdatedAt: when `estimate` was written
    eta: float | None = None  # status.progress.etaSeconds: the renderer's own estimate of what is left

    @property
    def running(self) -> bool:
        """Holds a render slot (including while it waits for a retry)."""
        return self.phase == RUNNING

    @property
    def waiting(self) -> bool:
        """Wants a slot from this queue."""
        return self.phase in WAITING_PHASES and not self.suspended and not self.kueue

    @property
    def order(self) -> tuple[str, str, str]:
        """Creation order; names break ties of equal (second-resolution) timestamps."""
        return self.created, self.namespace, self.name


@dataclass(frozen=True)
class Limits:
    """Max running renders; 0 = unlimited."""

    cluster: int = 0
    namespace: int = 0


@dataclass(frozen=True)
class Admission:
    """Whether a waiting render may start now, and if not, why."""

    admitted: bool
    reason: str = ""
    message: str = ""
    position: int | None = None  # if not admitted: its place in line (1 = the next slot is its)


def queue_entry(body: Mapping[str, Any]) -> QueueEntry:
    """The QueueEntry of a MusicVideo body.

    Suspended means spec.suspend, not the Suspended condition: once spec.suspend is cleared, the
    condition stays True until the reconciler records the resume, in the very step that asks for a
    slot; read from the condition, the render would be refused its own free slot ("waiting for older
    renders") and queued for a moment before it starts.
    """
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    return QueueEntry(
        uid=str(meta.get("uid") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        created=str(meta.get("creationTimestamp") or ""),
        phase=str(status.get("phase") or ""),
        suspended=bool(spec.get("suspend")),
        kueue=bool(spec.get("queueName")),
        started=str(status.get("startedAt") or ""),
        finished=str(status.get("finishedAt") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        position=_number(status.get("queuePosition")),
        estimate=_number(status.get("estimatedStartSeconds")),
        queue_updated=str(status.get("queueUpdatedAt") or ""),
        eta=_number((status.get("progress") or {}).get("etaSeconds")),
    )


def estimate_now(entry: QueueEntry, now: datetime) -> float | None:
    """The estimate as written, counted from `now` instead of from when it was written."""
    if entry.estimate is None:
        return None
    written = parse_time(entry.queue_updated)
    return entry.estimate - ((now - written).total_seconds() if written is not None else 0.0)


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def fair_order(entries: Iterable[QueueEntry], limits: Limits) -> list[QueueEntry]:
    """The waiting renders in the order free slots go to them.

    Fair between namespaces (tenants): each next slot goes to the namespace with the fewest renders
    running (counting those placed before it); among those, round robin: to the one that got a slot
    least recently (the latest startedAt of its renders; never beats any), then the one whose oldest
    waiting render is oldest. Within a namespace, oldest first. So a tenant who queues 10 renders while
    another queues one does not make the other wait for all 10: the other's render takes the next slot
    that frees, even with a single slot. A namespace at its own cap gets no more (its renders are left out).
    """
    entries = list(entries)
    running = Counter(e.namespace for e in entries if e.running)
    last_slot: dict[str, str] = {}
    for e in entries:
        if e.started > last_slot.get(e.namespace, ""):
            last_slot[e.namespace] = e.started
    queues: dict[str, deque[QueueEntry]] = {}
    for entry in sorted((e for e in entries if e.waiting), key=lambda e: e.order):
        queues.setdefault(entry.namespace, deque()).append(entry)
    order: list[QueueEntry] = []
    while queues:
        open_ = [ns for ns in queues if not (limits.namespace and running[ns] >= limits.namespace)]
        if not open_:
            break
        ns = min(open_, key=lambda n: (running[n], last_slot.get(n, ""), queues[n][0].order))
        order.append(queues[ns].popleft())
        running[ns] += 1
        last_slot[ns] = f"~{len(order):09d}"  # placed now: after every real timestamp, in placing order
        if not queues[ns]:
            del queues[ns]
    return order


@dataclass(frozen=True)
class Forecast:
    """Where a waiting render stands: its place in the queue (1 starts next) and when it should start."""

    position: int
    start_seconds: int


def typical_duration(entries: Iterable[QueueEntry], default: float, recent: int = 50) -> float:
    """Seconds a render takes: the median over the `recent` latest that succeeded (startedAt→finishedAt;
    retries included, as a user waits for them too), else `default`."""
    done = sorted(((e.finished, e.started) for e in entries if e.phase == SUCCEEDED and e.started and e.finished),
                  reverse=True)[:recent]
    seconds = [(end - start).total_seconds() for f, s in done
               if (end := parse_time(f)) is not None and (start := parse_time(s)) is not None]
    return max(1.0, statistics.median(seconds)) if seconds else default


def forecast(entries: Iterable[QueueEntry], limits: Limits, now: datetime, typical: float) -> dict[str, Forecast]:
    """The waiting renders' places and estimated starts (uid → Forecast), by simulating slot turnover.

    Slots free when running renders end: after the renderer's own ETA when it reports one, else after
    `typical` seconds from their start; each waiting render then takes `typical` seconds. The order is
    fair_order's (round robin between namespaces); a namespace at its own cap waits for its own renders.
    O(n log n): cheap enough to run over every MusicVideo on each pass.
    """
    entries = list(entries)
    order = fair_order(entries, Limits(cluster=limits.cluster))  # the namespace cap is simulated below
    ends: dict[str, list[float]] = {}
    for e in entries:
        if e.running:
            if e.eta is not None:
                left = float(e.eta)
            else:
                began = parse_time(e.started)
                elapsed = (now - began).total_seconds() if began is not None else 0.0
                left = max(0.0, typical - elapsed)
            ends.setdefault(e.namespace, []).append(left)
    cluster: list[float] | None = None
    if limits.cluster:
        cluster = sorted(t for times in ends.values() for t in times)[: limits.cluster]
        cluster += [0.0] * (limits.cluster - len(cluster))
        heapq.heapify(cluster)
    for times in ends.values():
        heapq.heapify(times)
    result: dict[str, Forecast] = {}
    for position, e in enumerate(order, start=1):
        start = heapq.heappop(cluster) if cluster is not None else 0.0
        mine = ends.setdefault(e.namespace, [])
        while mine and mine[0] <= start:
            heapq.heappop(mine)
        if limits.namespace and len(mine) >= limits.namespace:
            start = heapq.heappop(mine)  # the earliest of its namespace's renders to end
        end = start + typical
        if cluster is not None:
            heapq.heappush(cluster, end)
        heapq.heappush(mine, end)
        result[e.uid] = Forecast(position, round(start))
    return result


def admit(target: QueueEntry, entries: Iterable[QueueEntry], limits: Limits) -> Admission:
    """Admit `target` iff it is among the waiting renders the free slots go to (fair_order).

    A full namespace does not block other namespaces; a full cluster blocks everyone.
    """
    everyone = [*(e for e in entries if e.uid != target.uid), target]
    used = sum(1 for e in everyone if e.running)
    free = max(0, limits.cluster - used) if limits.cluster else len(everyone)
    order = fair_order(everyone, limits)
    index = next((i for i, e in enumerate(order) if e.uid == target.uid), None)
    if index is not None and index < free:
        return Admission(True)
    if index is None:  # its namespace is at its own cap
        return Admission(False, R_QUEUED, f"waiting for a render slot ({limits.namespace} may run in this namespace)")
    # Beyond the free slots (there are only so many with a cluster-wide limit): the cluster is full.
    return Admission(False, R_QUEUED, f"waiting for a render slot ({limits.cluster} may run cluster-wide)",
                     position=index - free + 1)


class Ledger:
    """The index's view of all MusicVideos, corrected by the phases this process just wrote.

    The reconciler is the only writer of status.phase, so its latest write is always at least as
    fresh as what the watch has delivered; noting it at once stops two renders taking one slot.
    """

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}

    def note(self, uid: str, phase: str) -> None:
        """Record the phase just written for `uid`."""
        self._phases[uid] = phase

    def forget(self, uid: str) -> None:
        """The MusicVideo is gone."""
        self._phases.pop(uid, None)

    def entries(self, observed: Iterable[QueueEntry]) -> list[QueueEntry]:
        """The observed entries with the noted phases applied (stale notes are dropped)."""
        result = []
        seen = set()
        for entry in observed:
            seen.add(entry.uid)
            phase = self._phases.get(entry.uid)
            result.append(replace(entry, phase=phase) if phase is not None and phase != entry.phase else entry)
        for uid in set(self._phases) - seen:
            del self._phases[uid]
        return result
