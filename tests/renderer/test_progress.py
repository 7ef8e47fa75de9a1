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
