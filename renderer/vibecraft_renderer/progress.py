"""Progress reporting: stages, percent, frames and ETA, to a terminal bar, the log, or the MusicVideo.

In a Job (VIBECRAFT_MUSICVIDEO_NAME/NAMESPACE set) the renderer patches only `status.progress` of
its MusicVideo with a JSON merge patch, at most about once a second, stage changes immediately.
A failing patch is logged and never fails the render: progress is advisory.

A split render (spec.parallelism) reports one percent across its three stages: each stage maps its own
0..100 onto its share of the whole (stage_span), so the percent only rises from prepare through the
segments stage's pods to the join. The segments stage's pods run at once: each writes its own
`status.progress.chunks.<index>` and the totals (frames summed, the latest ETA) computed from everyone's
latest report, under the resourceVersion it read: a write that raced another pod's is refused (409)
and made again from the fresh state (CONFLICT_RETRIES times), so one pod's report never overwrites
another's and the totals never go down.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from vibecraft_common.resource import (
    ENV_MV_NAME,
    ENV_MV_NAMESPACE,
    GROUP,
    PLURAL,
    STAGE_JOIN,
    STAGE_PREPARE,
    STAGE_SEGMENTS,
    VERSION,
)
from vibecraft_common.status import STAGES, Stage

log = logging.getLogger(__name__)

PATCH_INTERVAL_S: Final = 1.0
LOG_INTERVAL_S: Final = 10.0
PATCH_TIMEOUT_S: Final = (3.0, 5.0)
CONFLICT_RETRIES: Final = 4  # a chunk's report raced another pod's this many times in a row: left for the next one


def stage_weights(backend: str) -> dict[str, float]:
    """Rough share of wall time per stage, so percent moves steadily."""
    generating = 25.0 if backend == "replicate" else 0.5
    return {"downloading": 2.0, "analyzing": 6.0, "generating": generating, "composing": 82.0,
            "encoding": 6.0, "uploading": 3.0}  # fmt: skip


def stage_span(stage: str, weights: dict[str, float]) -> tuple[float, float]:
    """The share (percent from, to) of a split render's progress that a render stage covers: prepare what
    comes before composing, the segments stage composing, the join the rest; a whole render all of it."""
    total = sum(weights.values())
    before = 100.0 * sum(weights.get(s, 0.0) for s in STAGES[: STAGES.index("composing")]) / total
    after = before + 100.0 * weights.get("composing", 0.0) / total
    return {STAGE_PREPARE: (0.0, before), STAGE_SEGMENTS: (before, after), STAGE_JOIN: (after, 100.0)}.get(
        stage, (0.0, 100.0))


@dataclass(frozen=True)
class Snapshot:
    """One progress report; to_status() is the MusicVideo status.progress object."""

    stage: str
    percent: float
    frames_done: int | None
    frames_total: int | None
    eta_seconds: int | None
    message: str
    predictions: int | None = None  # Replicate predictions created so far (replicate backend only)
    span: tuple[float, float] = (0.0, 100.0)  # the share of the whole render's percent this process covers
    render_frames: int | None = None  # a chunk's: frames of the whole render (frames_* are the chunk's own)

    def to_status(self) -> dict[str, Any]:
        """camelCase fields of status.progress (None clears a field in a merge patch); `predictions` only
        once a Replicate prediction was created (the operator charges the last count an attempt reported)."""
        status: dict[str, Any] = {
            "stage": self.stage,
            "percent": round(self.percent, 1),
            "framesDone": self.frames_done,
            "framesTotal": self.frames_total,
            "etaSeconds": self.eta_seconds,
            "message": self.message,
        }
        if self.predictions is not None:
            status["predictions"] = self.predictions
        return status


class Sink(Protocol):
    """Where snapshots go."""

    def emit(self, snap: Snapshot, important: bool) -> None:
        """Report; important=True for stage changes and the final report."""

    def close(self) -> None:
        """Flush and release."""


class Progress:
    """Tracks stage/fractions and fans snapshots out to sinks."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        weights: dict[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        span: tuple[float, float] = (0.0, 100.0),
    ) -> None:
        self.sinks = list(sinks)
        self.weights = weights or stage_weights("procedural")
        self.span = span  # this process's share of the whole render's percent (stage_span)
        self.render_frames: int | None = None  # a chunk: frames of the whole render
        self.clock = clock
        self.started = clock()
        self.stage_seconds: dict[str, float] = {}  # wall time per finished stage
        self._stage_started = self.started
        self.stage_name = STAGES[0]
        self.fraction = 0.0
        self.frames_done: int | None = None
        self.frames_total: int | None = None
        self.message = ""
        self._rate_start: tuple[float, int] | None = None
        self.last: Snapshot | None = None
        self.predictions: int | None = None
        self._emitting = threading.Lock()  # Replicate workers report predictions from their own threads

    def _percent(self) -> float:
        total = sum(self.weights.values())
        done = 0.0
        for name in STAGES:
            if name == self.stage_name:
                done += self.weights.get(name, 0.0) * min(max(self.fraction, 0.0), 1.0)
                break
            done += self.weights.get(name, 0.0)
        return min(100.0, 100.0 * done / total)

    def _eta(self, percent: float) -> int | None:
        now = self.clock()
        if self.stage_name == "composing" and self.frames_total and self.frames_done is not None:
            if self._rate_start is None:
                return None
            t0, f0 = self._rate_start
            rendered = self.frames_done - f0
            if rendered <= 0 or now - t0 < 1e-6:
                return None
            rate = rendered / (now - t0)
            tail = (self.weights["encoding"] + self.weights["uploading"]) / self.weights["composing"]
            remaining = (self.frames_total - self.frames_done) / rate
            return round(remaining + tail * (self.frames_total / rate))
        if STAGES.index(self.stage_name) > STAGES.index("composing") and percent > 1.0:
            elapsed = now - self.started
            return round(elapsed * (100.0 - percent) / percent)
        return None

    def _emit(self, important: bool) -> None:
        with self._emitting:
            pct = self._percent()
            lo, hi = self.span
            snap = Snapshot(self.stage_name, lo + (hi - lo) * pct / 100.0, self.frames_done, self.frames_total,
                            self._eta(pct), self.message, self.predictions, self.span, self.render_frames)
            self.last = snap
            for sink in self.sinks:
                sink.emit(snap, important)

    def stage(self, name: Stage, message: str = "") -> None:
        """Enter a stage (reported immediately)."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name}")
        self._close_stage()
        self.stage_name = name
        self.fraction = 0.0
        self.message = message
        if STAGES.index(name) < STAGES.index("composing"):
            self.frames_done = self.frames_total = None  # after composing they stay (n/n frames)
        self._emit(important=True)

    def update(
        self,
        fraction: float | None = None,
        frames_done: int | None = None,
        frames_total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Progress within the current stage (throttled by the sinks)."""
        if frames_total is not None:
            self.frames_total = frames_total
        if frames_done is not None:
            if self._rate_start is None:
                self._rate_start = (self.clock(), frames_done)
            self.frames_done = frames_done
            if self.frames_total:
                self.fraction = frames_done / self.frames_total
        if fraction is not None:
            self.fraction = fraction
        if message is not None:
            self.message = message
        self._emit(important=False)

    def predictions_created(self, count: int) -> None:
        """Replicate predictions created so far: billed, so reported at once (the operator charges the
        namespace's budget with the last count the attempt reported)."""
        self.predictions = count
        self._emit(important=True)

    def restart_rate(self) -> None:
        """Frames skipped via checkpoints must not inflate the measured frame rate."""
        self._rate_start = None

    def _close_stage(self) -> None:
        now = self.clock()
        self.stage_seconds[self.stage_name] = self.stage_seconds.get(self.stage_name, 0.0) + now - self._stage_started
        self._stage_started = now

    def finish(self, message: str = "done") -> None:
        """Final 100% report, then close the sinks."""
        self._close_stage()
        self.stage_name = STAGES[-1]
        self.fraction = 1.0
        self.message = message
        self._emit(important=True)
        self.close()

    def close(self) -> None:
        """Release sinks (also on failure)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # reporting must never mask the real outcome
                log.warning("progress sink close failed: %s", exc)
        self.sinks = []


class LogSink:
    """Plain log lines: every stage change and every LOG_INTERVAL_S otherwise."""

    def __init__(self, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last = -1e9

    def emit(self, snap: Snapshot, important: bool) -> None:
        """Log if due."""
        now = self.clock()
        if important or now - self._last >= self.interval:
            self._last = now
            frames = f" frames {snap.frames_done}/{snap.frames_total}" if snap.frames_total else ""
            eta = f" eta {snap.eta_seconds}s" if snap.eta_seconds is not None else ""
            msg = f" - {snap.message}" if snap.message else ""
            log.info("progress %s %.1f%%%s%s%s", snap.stage, snap.percent, frames, eta, msg)

    def close(self) -> None:
        """Nothing to release."""


class TqdmSink:
    """A terminal progress bar (CLI use)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=100.0, unit="%", file=sys.stderr, dynamic_ncols=True,
                         bar_format="{desc:<11} {percentage:5.1f}%|{bar}| {postfix}")  # fmt: skip

    def emit(self, snap: Snapshot, important: bool) -> None:
        """Redraw (tqdm throttles its own redraws)."""
        self._bar.set_description_str(snap.stage, refresh=False)
        parts = []
        if snap.frames_total:
            parts.append(f"{snap.frames_done}/{snap.frames_total} frames")
        if snap.eta_seconds is not None:
            parts.append(f"eta {snap.eta_seconds}s")
        if snap.message:
            parts.append(snap.message)
        self._bar.set_postfix_str(", ".join(parts), refresh=False)
        self._bar.n = round(snap.percent, 1)
        self._bar.refresh() if important else self._bar.update(0)

    def close(self) -> None:
        """Leave the bar on screen."""
        self._bar.close()


class KubeStatusSink:
    """Patches status.progress of the MusicVideo (merge patch), throttled to ~1/s."""

    def __init__(
        self,
        name: str,
        namespace: str,
        api: Any | None = None,
        interval: float = PATCH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        chunk: int | None = None,
        chunks: int = 1,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.chunk = chunk  # a segments-stage pod: reports to status.progress.chunks.<chunk> and the totals
        self.chunks = chunks
        self.conflicts = 0
        self.interval = interval
        self.clock = clock
        self._api = api
        self._loaded = api is not None
        self._last_sent = -1e9
        self._pending: Snapshot | None = None
        self._failures = 0
        self.sent = 0
        self.refused = 0

    def _client(self) -> Any | None:
        if not self._loaded:
            self._loaded = True
            try:
                from kubernetes import client, config

                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()  # honours KUBECONFIG: local runs against a dev cluster
                self._api = client.CustomObjectsApi()
            except Exception as exc:
                log.warning("progress: no Kubernetes client configuration (%s); status will not be patched", exc)
        return self._api

    def emit(self, snap: Snapshot, important: bool) -> None:
        """Send now if due (or important), else remember it for the next send."""
        self._pending = snap
        backoff = min(30.0, self.interval * (2 ** min(self._failures, 5)))
        if important or self.clock() - self._last_sent >= backoff:
            self._flush()

    def _flush(self) -> None:
        snap, self._pending = self._pending, None
        api = self._client()
        if snap is None or api is None:
            return
        self._last_sent = self.clock()
        try:
            if self.chunk is None:
                self._patch(api, {"status": {"progress": snap.to_status()}})
            else:
                self._report_chunk(api, snap)
            self.sent += 1
            self._failures = 0
        except Exception as exc:
            self._failures += 1
            self.refused += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:
                log.warning("progress: patching %s/%s status failed (%d in a row): %s",
                            self.namespace, self.name, self._failures, _short(exc))  # fmt: skip

    def _patch(self, api: Any, body: Mapping[str, Any]) -> None:
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, body,
            _content_type="application/merge-patch+json", _request_timeout=PATCH_TIMEOUT_S,
        )  # fmt: skip

    def _report_chunk(self, api: Any, snap: Snapshot) -> None:
        """This chunk's entry and the totals from everyone's latest entries, written only over the version
        they were computed from (409: another pod wrote in between; read again and recompute)."""
        for _ in range(CONFLICT_RETRIES):
            mv = api.get_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                         _request_timeout=PATCH_TIMEOUT_S)  # fmt: skip
            current = (mv.get("status") or {}).get("progress") or {}
            progress = chunk_progress(snap, str(self.chunk), current, self.chunks)
            body = {"metadata": {"resourceVersion": mv["metadata"]["resourceVersion"]}, "status": {"progress": progress}}
            try:
                self._patch(api, body)
                return
            except Exception as exc:
                if getattr(exc, "status", None) != 409:
                    raise
                self.conflicts += 1
        raise RuntimeError(f"{CONFLICT_RETRIES} conflicting writes in a row (other chunks reporting)")

    def close(self) -> None:
        """Send the last pending snapshot; log the tally (a cluster's admission policy may refuse some)."""
        if self._pending is not None:
            self._flush()
        if self._api is not None:
            log.info("progress: %d status patches accepted, %d refused", self.sent, self.refused)


def chunk_progress(snap: Snapshot, key: str, current: Mapping[str, Any], chunks: int) -> dict[str, Any]:
    """status.progress of a split render's segments stage: chunk `key`'s own entry from `snap`, and the totals
    over the chunks of `current` (status.progress as last read) with this one replaced. A chunk's frames never
    go back (a retried pod reports 0 until it has looked at the segments it can reuse); pods that have not
    reported yet count 0 frames. Percent spans the segments stage's share (Snapshot.span) and never falls
    below what was read: a chunk's first report, before it knows the render's frame count, takes the one
    the prepare stage (or another chunk) wrote."""
    read_percent = float(current.get("percent") or 0.0)
    read_total = int(current.get("framesTotal") or 0)
    current = current.get("chunks") or {}
    before = current.get(key) or {}
    frames = snap.frames_done
    if frames is None or frames < int(before.get("framesDone") or 0):
        frames = before.get("framesDone")
    mine = {"stage": snap.stage, "framesDone": frames, "framesTotal": snap.frames_total or before.get("framesTotal"),
            "etaSeconds": snap.eta_seconds}
    everyone = {**current, key: mine}
    done = sum(int(c.get("framesDone") or 0) for c in everyone.values())
    total = snap.render_frames or read_total or sum(int(c.get("framesTotal") or 0) for c in everyone.values())
    finished = sum(1 for c in everyone.values() if c.get("framesTotal") and c.get("framesDone") == c["framesTotal"])
    etas = [float(c["etaSeconds"]) for c in everyone.values() if c.get("etaSeconds") is not None]
    lo, hi = snap.span
    return {
        "stage": "composing",
        "percent": round(max(read_percent, lo + (hi - lo) * min(1.0, done / total) if total else lo), 1),
        "framesDone": done,
        "framesTotal": total or None,
        "etaSeconds": round(max(etas)) if etas and finished < chunks else None,
        "message": f"{finished}/{chunks} chunks rendered, {len(everyone)} reporting",
        "chunks": {key: mine},
    }


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200]


def default_sinks(quiet: bool = False, chunk: int | None = None, chunks: int = 1) -> list[Sink]:
    """MusicVideo status when running in a Job (a segments-stage pod: as chunk `chunk` of `chunks`), a tqdm
    bar on a terminal, log lines otherwise."""
    name, namespace = os.environ.get(ENV_MV_NAME), os.environ.get(ENV_MV_NAMESPACE)
    if name and namespace:
        return [KubeStatusSink(name, namespace, chunk=chunk, chunks=chunks), LogSink()]
    if not quiet and sys.stderr.isatty():
        return [TqdmSink()]
    return [LogSink()]
