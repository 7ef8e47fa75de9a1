"""Admission of renders under the cluster-wide and per-namespace limits, fair between namespaces."""

import heapq
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vibecraft_common.limits import DEFAULT_PARALLELISM, PARALLELISM_AUTO, parallelism_for
from vibecraft_common.status import PENDING, QUEUED, RUNNING, SUCCEEDED

from vibecraft_operator.constants import R_QUEUED
from vibecraft_operator.settings import Settings
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
    slots: int = 1  # render slots it holds or wants: its pods (spec.parallelism, status.chunks); 0 = auto, not yet known

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
    per_render: int = 0  # pods one render may split over (the operator's max_parallelism); 0 = no cap

    @property
    def cap(self) -> int:
        """The most slots one render may hold (0: no limit): per_render, and no more than a limit allows, or
        it could never start."""
        return min((c for c in (self.per_render, self.cluster, self.namespace) if c), default=0)

    def slots(self, entry: QueueEntry) -> int:
        """The slots `entry` holds or needs: its pods ("auto" before its chunks are known: `per_render`), at
        most `cap`."""
        wanted = entry.slots or self.per_render or 1
        return max(1, min(wanted, self.cap) if self.cap else wanted)


@dataclass(frozen=True)
class Admission:
    """Whether a waiting render may start now, and if not, why."""

    admitted: bool
    reason: str = ""
    message: str = ""
    position: int | None = None  # if not admitted: its place in line (1 = the next slot is its)


def limits_of(settings: Settings) -> Limits:
    """The operator's limits, from its settings."""
    return Limits(cluster=settings.max_running, namespace=settings.max_running_per_namespace,
                  per_render=settings.max_parallelism)


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
        slots=slots_of(spec, status),
    )


def slots_of(spec: Mapping[str, Any], status: Mapping[str, Any]) -> int:
    """The render slots a render takes: one per pod it may run at once. A split render reserves its chunks for
    the whole render (prepare and join run one pod, but the segments stage between them must not find its
    slots taken): status.chunks once the prepare stage fixed them, before that spec.parallelism (0 = auto:
    as many as a render may use, Limits.per_render)."""
    chunks = _number(status.get("chunks"))
    if chunks:
        return chunks
    wanted = parallelism_for(spec.get("parallelism", DEFAULT_PARALLELISM), spec.get("preview"))
    if wanted == PARALLELISM_AUTO:
        return 0
    return _number(wanted) or 1


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
    that frees, even with a single slot. A namespace at its own cap gets no more (its renders are left out),
    counting slots: a render split over 3 pods holds 3 (Limits.slots).
    """
    entries = list(entries)
    running: Counter[str] = Counter()
    for e in entries:
        if e.running:
            running[e.namespace] += limits.slots(e)
    last_slot: dict[str, str] = {}
    for e in entries:
        if e.started > last_slot.get(e.namespace, ""):
            last_slot[e.namespace] = e.started
    queues: dict[str, deque[QueueEntry]] = {}
    for entry in sorted((e for e in entries if e.waiting), key=lambda e: e.order):
        queues.setdefault(entry.namespace, deque()).append(entry)
    order: list[QueueEntry] = []
    while queues:
        open_ = [ns for ns in queues
                 if not (limits.namespace and running[ns] + limits.slots(queues[ns][0]) > limits.namespace)]
        if not open_:
            break
        ns = min(open_, key=lambda n: (running[n], last_slot.get(n, ""), queues[n][0].order))
        placed = queues[ns].popleft()
        order.append(placed)
        running[ns] += limits.slots(placed)
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
    `typical` seconds from their start; each waiting render then takes `typical` seconds, and as many slots as
    it has pods (it starts when the last of them frees). The order is
    fair_order's (round robin between namespaces); a namespace at its own cap waits for its own renders.
    O(n log n): cheap enough to run over every MusicVideo on each pass.
    """
    entries = list(entries)
    order = fair_order(entries, replace(limits, namespace=0))  # the namespace cap is simulated below
    ends: dict[str, list[float]] = {}  # namespace: when each slot it holds frees
    for e in entries:
        if e.running:
            if e.eta is not None:
                left = float(e.eta)
            else:
                began = parse_time(e.started)
                elapsed = (now - began).total_seconds() if began is not None else 0.0
                left = max(0.0, typical - elapsed)
            ends.setdefault(e.namespace, []).extend([left] * limits.slots(e))
    cluster: list[float] | None = None
    if limits.cluster:
        cluster = sorted(t for times in ends.values() for t in times)[: limits.cluster]
        cluster += [0.0] * (limits.cluster - len(cluster))
        heapq.heapify(cluster)
    for times in ends.values():
        heapq.heapify(times)
    result: dict[str, Forecast] = {}
    for position, e in enumerate(order, start=1):
        need = limits.slots(e)
        start = max(heapq.heappop(cluster) for _ in range(need)) if cluster is not None else 0.0
        mine = ends.setdefault(e.namespace, [])
        while mine and mine[0] <= start:
            heapq.heappop(mine)
        while limits.namespace and mine and len(mine) + need > limits.namespace:
            start = max(start, heapq.heappop(mine))  # the earliest of its namespace's slots to free
        end = start + typical
        for _ in range(need):
            if cluster is not None:
                heapq.heappush(cluster, end)
            heapq.heappush(mine, end)
        result[e.uid] = Forecast(position, round(start))
    return result


def admit(target: QueueEntry, entries: Iterable[QueueEntry], limits: Limits) -> Admission:
    """Admit `target` iff it is among the waiting renders the free slots go to (fair_order), each taking its
    pods' slots. A render needing more slots than are free makes the ones behind it wait too (no overtaking:
    a wide render would otherwise starve behind a stream of narrow ones).

    A full namespace does not block other namespaces; a full cluster blocks everyone.
    """
    everyone = [*(e for e in entries if e.uid != target.uid), target]
    free = free_slots(everyone, limits)
    order = fair_order(everyone, limits)
    index = next((i for i, e in enumerate(order) if e.uid == target.uid), None)
    if index is None:  # its namespace is at its own cap
        return Admission(False, R_QUEUED, f"waiting for a render slot ({limits.namespace} may run in this namespace)")
    fits = 0  # the renders at the front of the line that the free slots take, in order (no overtaking)
    for e in order:
        if free is not None:
            free -= limits.slots(e)
            if free < 0:
                break
        fits += 1
    if index < fits:
        return Admission(True)
    # Beyond the free slots (there are only so many with a cluster-wide limit): the cluster is full.
    need = limits.slots(target)
    pods = f"; it needs {need}" if need > 1 else ""
    return Admission(False, R_QUEUED, f"waiting for a render slot ({limits.cluster} may run cluster-wide{pods})",
                     position=index - fits + 1)


def free_slots(entries: Iterable[QueueEntry], limits: Limits) -> int | None:
    """Cluster-wide slots no running render holds (None: no cluster-wide limit)."""
    if not limits.cluster:
        return None
    return max(0, limits.cluster - sum(limits.slots(e) for e in entries if e.running))


class Ledger:
    """The index's view of all MusicVideos, corrected by the phases this process just wrote.

    The reconciler is the only writer of status.phase, so its latest write is always at least as
    fresh as what the watch has delivered; noting it at once stops two renders taking one slot.
    """

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._slots: dict[str, int] = {}

    def note(self, uid: str, phase: str) -> None:
        """Record the phase just written for `uid`."""
        self._phases[uid] = phase

    def note_slots(self, uid: str, chunks: int | None) -> None:
        """Record status.chunks just written for `uid` (its slots: an auto render gives some back); None: cleared,
        the index's view (from the spec) holds again."""
        if chunks:
            self._slots[uid] = chunks
        else:
            self._slots.pop(uid, None)

    def forget(self, uid: str) -> None:
        """The MusicVideo is gone."""
        self._phases.pop(uid, None)
        self._slots.pop(uid, None)

    def entries(self, observed: Iterable[QueueEntry]) -> list[QueueEntry]:
        """The observed entries with the noted phases and slots applied (stale notes are dropped)."""
        result = []
        seen = set()
        for entry in observed:
            seen.add(entry.uid)
            phase, slots = self._phases.get(entry.uid), self._slots.get(entry.uid)
            if phase is not None and phase != entry.phase:
                entry = replace(entry, phase=phase)
            if slots is not None:
                if slots == entry.slots:
                    del self._slots[entry.uid]  # the index has caught up
                else:
                    entry = replace(entry, slots=slots)
            result.append(entry)
        for notes in (self._phases, self._slots):
            for uid in set(notes) - seen:
                del notes[uid]
        return result
