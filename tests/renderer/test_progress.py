"""Progress reporting: percent/ETA bookkeeping and the throttled MusicVideo status patches."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from vibecraft_renderer.progress import KubeStatusSink, LogSink, Progress, Snapshot, default_sinks, stage_weights


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeApi:
    """Records patch_namespaced_custom_object_status calls; can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:  # fmt: skip
        if self.fail:
            raise RuntimeError("503 Service Unavailable")
        self.calls.append({"gvp": (group, version, plural), "ns": namespace, "name": name, "body": body, **kw})
        return body


class Recorder:
    def __init__(self) -> None:
        self.snaps: list[tuple[Snapshot, bool]] = []

    def emit(self, snap: Snapshot, important: bool) -> None:
        self.snaps.append((snap, important))

    def close(self) -> None:
        pass


def test_percent_is_monotonic_and_reaches_100() -> None:
    clock = Clock()
    rec = Recorder()
    p = Progress([rec], stage_weights("procedural"), clock=clock)
    p.stage("downloading")
    p.stage("analyzing")
    p.update(fraction=0.5)
    p.stage("generating")
    p.stage("composing")
    for done in range(0, 301, 30):
        clock.now += 1.0
        p.update(frames_done=done, frames_total=300)
    p.stage("encoding")
    p.stage("uploading")
    p.finish()
    percents = [s.percent for s, _ in rec.snaps]
    assert percents == sorted(percents) and percents[-1] == 100.0
    composing = [s for s, _ in rec.snaps if s.stage == "composing" and s.frames_done]
    assert composing[-1].frames_total == 300
    mid = composing[len(composing) // 2]
    assert mid.eta_seconds is not None and mid.eta_seconds > 0
    assert [imp for s, imp in rec.snaps if s.stage == "analyzing"] == [True, False]


def test_kube_sink_patches_only_status_progress_throttled() -> None:
    clock = Clock()
    api = FakeApi()
    sink = KubeStatusSink("song", "team-a", api=api, clock=clock)
    p = Progress([sink], clock=clock)
    p.stage("composing")  # important: sent at once
    for k in range(50):  # 50 updates within 0.5 s: throttled
        clock.now += 0.01
        p.update(frames_done=k, frames_total=100)
    assert len(api.calls) == 1
    clock.now += 1.0
    p.update(frames_done=60, frames_total=100)
    assert len(api.calls) == 2
    clock.now += 0.1
    p.update(frames_done=61, frames_total=100, message="segment 3/4")
    sink.close()  # flushes the pending update
    assert len(api.calls) == 3
    call = api.calls[-1]
    assert call["gvp"] == ("vibecraft.io", "v1alpha1", "musicvideos")
    assert (call["ns"], call["name"]) == ("team-a", "song")
    assert call["_content_type"] == "application/merge-patch+json"
    assert list(call["body"]) == ["status"] and list(call["body"]["status"]) == ["progress"]
    progress = call["body"]["status"]["progress"]
    assert set(progress) == {"stage", "percent", "framesDone", "framesTotal", "etaSeconds", "message"}
    assert progress["framesDone"] == 61 and progress["message"] == "segment 3/4"
    assert 0 <= progress["percent"] <= 100
    clock.now += 0.1
    p.predictions_created(2)  # billed: sent at once, throttle or not
    assert len(api.calls) == 4 and api.calls[-1]["body"]["status"]["progress"]["predictions"] == 2


def test_kube_patch_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    sink = KubeStatusSink("song", "ns", api=FakeApi(fail=True), clock=clock)
    p = Progress([sink], clock=clock)
    with caplog.at_level(logging.WARNING):
        p.stage("downloading")
        p.stage("analyzing")
        p.finish()
    assert any("503" in r.getMessage() for r in caplog.records)


def test_default_sinks_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBECRAFT_MUSICVIDEO_NAME", "song")
    monkeypatch.setenv("VIBECRAFT_MUSICVIDEO_NAMESPACE", "ns")
    sinks = default_sinks()
    assert isinstance(sinks[0], KubeStatusSink) and isinstance(sinks[1], LogSink)
    monkeypatch.delenv("VIBECRAFT_MUSICVIDEO_NAME")
    assert all(isinstance(s, LogSink) for s in default_sinks(quiet=True))


def test_unknown_stage_is_a_bug() -> None:
    with pytest.raises(ValueError):
        Progress([]).stage("dancing")


class ChunkApi:
    """A MusicVideo's status that several chunk sinks share: GET returns it with its resourceVersion, a merge
    patch carrying an older resourceVersion is refused with 409 like the API server's (`race` makes the next
    N patches find that someone else wrote in between)."""

    def __init__(self) -> None:
        self.progress: dict[str, Any] = {}
        self.version = 1
        self.race = 0
        self.conflicts = 0

    def get_namespaced_custom_object_status(self, *args: Any, **kw: Any) -> dict[str, Any]:
        import copy

        return {"metadata": {"resourceVersion": str(self.version)}, "status": {"progress": copy.deepcopy(self.progress)}}

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:  # fmt: skip
        if self.race:
            self.race -= 1
            self.version += 1
        if body["metadata"]["resourceVersion"] != str(self.version):
            self.conflicts += 1
            error = RuntimeError("409 Conflict")
            error.status = 409  # type: ignore[attr-defined]
            raise error
        new = body["status"]["progress"]
        chunks = {**self.progress.get("chunks", {}), **new.pop("chunks", {})}
        self.progress = {**self.progress, **new, "chunks": chunks}
        self.version += 1
        return body


def test_stage_spans_cover_the_whole_render_in_order() -> None:
    from vibecraft_renderer.progress import stage_span

    w = stage_weights("procedural")
    prepare, segments, join = (stage_span(s, w) for s in ("prepare", "segments", "join"))
    assert prepare[0] == 0 and prepare[1] == segments[0] and segments[1] == join[0] and join[1] == 100
    assert segments[1] - segments[0] > 75  # composing is most of the work
    assert stage_span("all", w) == (0.0, 100.0)


def test_a_stage_reports_only_its_share_of_the_percent() -> None:
    rec = Recorder()
    p = Progress([rec], stage_weights("procedural"), span=(10.0, 20.0))
    p.stage("downloading")
    p.finish()
    assert [round(s.percent, 6) for s, _ in rec.snaps] == [10.0, 20.0]


def test_chunk_pods_report_one_total_that_only_rises() -> None:
    """Three chunks of 100 frames report in turn, some racing each other: the totals are the sum of everyone's
    latest report, percent never falls, a racing write is recomputed (not lost), a retried chunk's
    first report (no frames yet) does not take its frames back."""
    from vibecraft_renderer.progress import chunk_progress, stage_span

    w = stage_weights("procedural")
    api, clock = ChunkApi(), Clock()
    sinks = [KubeStatusSink("song", "ns", api=api, clock=clock, chunk=k, chunks=3) for k in range(3)]
    span = stage_span("segments", w)
    seen = []
    for step in range(0, 101, 25):
        for k, sink in enumerate(sinks):
            api.race = 1 if k == 1 else 0  # chunk 1's first write always loses a race
            clock.now += 2.0
            sink.emit(Snapshot("composing", 0, step, 100, 10, "", span=span, render_frames=300), important=False)
            seen.append(api.progress["percent"])
    assert seen == sorted(seen) and api.conflicts == 5
    assert api.progress["framesDone"] == 300 and api.progress["framesTotal"] == 300
    assert api.progress["percent"] == round(span[1], 1) and api.progress["etaSeconds"] is None
    assert api.progress["message"] == "3/3 chunks rendered, 3 reporting"
    assert sorted(api.progress["chunks"]) == ["0", "1", "2"]
    again = chunk_progress(Snapshot("downloading", 0, None, None, None, "", span=span, render_frames=300), "1",
                           api.progress, 3)
    assert again["framesDone"] == 300 and again["chunks"]["1"]["framesDone"] == 100


def test_a_late_chunks_first_report_neither_lowers_the_percent_nor_loses_the_total() -> None:
    """Chunk pods start at different times: a chunk's first report comes before it has read the plan (no
    render frame count yet). Its total is then the one already in the status (the prepare stage's), not the
    sum of the few chunks that reported, and the percent never falls below the one it read."""
    from vibecraft_renderer.progress import chunk_progress

    span = (10.0, 90.0)
    first = {"percent": 10.0, "framesTotal": 900}  # what the prepare stage left
    early = chunk_progress(Snapshot("composing", 0, 150, 300, 9, "", span=span, render_frames=900), "0", first, 3)
    assert early["percent"] == round(10 + 80 * 150 / 900, 1)
    late = chunk_progress(Snapshot("downloading", 0, None, None, None, "", span=span), "2", early, 3)
    assert late["framesTotal"] == 900 and late["percent"] == early["percent"]
    lowered = chunk_progress(Snapshot("composing", 0, 150, 300, 9, "", span=span, render_frames=900), "0",
                             {**early, "percent": 50.0}, 3)
    assert lowered["percent"] == 50.0


def test_a_chunk_that_keeps_losing_races_gives_up_until_its_next_report() -> None:
    api, clock = ChunkApi(), Clock()
    sink = KubeStatusSink("song", "ns", api=api, clock=clock, chunk=0, chunks=2)
    api.race = 99
    sink.emit(Snapshot("composing", 0, 5, 100, None, "", render_frames=200), important=True)
    assert sink.refused == 1 and api.progress == {}
    api.race = 0
    clock.now += 60
    sink.emit(Snapshot("composing", 0, 6, 100, None, "", render_frames=200), important=True)
    assert api.progress["framesDone"] == 6 and api.progress["chunks"]["0"]["framesDone"] == 6
