"""End to end on the local cluster: the CRD validates, the operator runs renders as Jobs.

The operator runs as a subprocess (`python -m vibecraft_operator.main`, fixtures in conftest.py) scoped
to the test's namespace; renders use tests/operator/fake_renderer.py (through VIBECRAFT_RENDERER_COMMAND),
whose behaviour each test picks with spec.style.prompt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from vibecraft_common.resource import GROUP, PLURAL, VERSION

from tests.conftest import Cluster, S3Server
from tests.harness import ROOT, OperatorProcess, wait_for
from tests.operator.conftest import make_operator, stop_operators
from tests.renderer.helpers import count_frames

pytestmark = pytest.mark.cluster


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "audio": {"url": "s3://vibecraft/songs/demo.ogg"},
        "output": {"url": f"s3://vibecraft/e2e/{name}/"},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MusicVideo", "metadata": {"name": name}, "spec": body}


def get_mv(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def create_mv(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def phase(custom: client.CustomObjectsApi, namespace: str, name: str) -> str | None:
    return (get_mv(custom, namespace, name).get("status") or {}).get("phase")


def finished_status(custom: client.CustomObjectsApi, namespace: str, name: str, timeout: float = 300) -> dict[str, Any]:
    """The MusicVideo's status once it is Succeeded or Failed."""
    wait_for(lambda: phase(custom, namespace, name) in ("Succeeded", "Failed"), timeout=timeout,
             what=f"the render of {name} to finish")
    return dict(get_mv(custom, namespace, name)["status"])


def events_of(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [f"{e.type}/{e.reason}" for e in items]


INVALID = [
    ({"style": {"backend": "blender"}}, "style.backend must be procedural or replicate"),
    ({"video": {"fps": 0}}, "spec.video.fps in body should be greater than or equal to 1"),
    ({"resources": {"memory": "4Gi", "maxMemory": "2Gi"}}, "resources.memory must not be above resources.maxMemory"),
    ({"audio": {"url": "ftp://example.com/song.ogg"}}, "audio.url must be an s3://, https:// or http:// URL"),
    ({"video": {"width": 640}}, "video.width requires video.height"),
    ({"output": {"url": "https://example.com/out/"}}, "output.url must be an s3:// prefix"),
    ({"style": {"backend": "replicate"}}, "style.prompt is required when style.backend is replicate"),
    ({"style": {"motion": "clips"}}, "style.motion clips needs style.backend replicate"),
    ({"style": {"backend": "replicate", "prompt": "x", "motion": "clips", "maxClips": 9}},
     "spec.style.maxClips in body should be less than or equal to 8"),
    ({"resources": {"memory": "lots"}}, "resources.memory must be a quantity"),
    ({"audio": {"url": "s3://vibecraft/songs/demo.ogg", "bpm": 29.5}},
     "spec.audio.bpm in body should be greater than or equal to 30"),
    ({"audio": {"url": "s3://vibecraft/songs/demo.ogg", "bpm": 301}},
     "spec.audio.bpm in body should be less than or equal to 300"),
    ({"audio": {"url": "s3://vibecraft/songs/demo.ogg", "bpm": 120, "beatOffsetSeconds": -1}},
     "spec.audio.beatOffsetSeconds in body should be greater than or equal to 0"),
    ({"audio": {"url": "s3://vibecraft/songs/demo.ogg", "beatOffsetSeconds": 0.5}},
     "audio.beatOffsetSeconds requires audio.bpm"),
    # The one key grammar (issue 18): no `..`, `//`, `%` escapes or backslashes in what a tenant names.
    ({"audio": {"url": "s3://vibecraft/uploads/alice/../bob/song.mp3"}}, "audio.url must name a bucket and an object"),
    ({"audio": {"url": "s3://vibecraft/uploads/alice/%2e%2e/bob/song.mp3"}}, "the key made of letters, digits"),
    ({"output": {"url": "s3://vibecraft/videos/alice//bob/"}}, "output.url must be an s3:// prefix"),
    ({"output": {"url": "s3://vibecraft/videos/a\\..\\b/"}}, "single dots between single slashes"),
    ({"lyrics": {"url": "https://example.com/a.lrc", "text": "[00:01.00]x"}},
     "lyrics needs either lyrics.url or lyrics.text, not both"),
    ({"lyrics": {"url": "ftp://example.com/a.lrc"}}, "lyrics.url must be an s3://bucket/key, https:// or http:// URL"),
    ({"lyrics": {"text": "[00:01.00]x", "format": "ass"}}, "lyrics.format must be auto, lrc, srt, vtt"),
    ({"title": "t" * 121}, "spec.title: Too long: may not be more than 120 bytes"),
    ({"artist": "one\nStyle: two"}, "spec.artist in body should match"),
    ({"style": {"reactivity": [{"source": "cowbell", "target": "zoom"}]}}, 'Unsupported value: "cowbell"'),
    ({"style": {"reactivity": [{"source": "kick", "target": "zoom", "amount": 5}]}},
     "spec.style.reactivity[0].amount in body should be less than or equal to 4"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID, ids=[m.split(" ")[0] for _, m in INVALID])
def test_invalid_manifests_are_rejected_with_the_crds_message(
    cluster: Cluster, crd: None, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = manifest("bad", **spec)
    res = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(body),
                          check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_one_mistake_is_one_message(cluster: Cluster, crd: None, namespace: str) -> None:
    """fps: 500 broke the bound and its CEL twin alike: the API server listed the mistake twice."""
    res = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                          input=yaml.safe_dump(manifest("bad", video={"fps": 500})), check=False)
    assert res.returncode != 0
    assert res.stderr.count("Invalid value") == 1 and "less than or equal to 60" in res.stderr, res.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("musicvideo*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted_with_defaults(cluster: Cluster, crd: None, namespace: str, example: Path) -> None:
    res = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example), "-o", "json")
    spec = json.loads(res.stdout)["spec"]
    assert spec["retries"] >= 0 and spec["deadlineSeconds"] >= 60 and spec["style"]["backend"]
    assert spec["video"]["fps"] >= 1 and spec["suspend"] is False


def test_a_render_gets_a_job_with_the_right_limits_and_deletion_cleans_up(operator: OperatorProcess, apis: Any) -> None:
    custom, batch, core = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("limits", style={"prompt": "sleep:120"},
                                   resources={"memory": "300Mi", "cpu": "500m", "maxMemory": "1Gi"}))
    job = wait_for(lambda: _job(batch, ns, "limits-a1"), what="Job limits-a1")
    container = job.spec.template.spec.containers[0]
    assert container.resources.limits == {"memory": "300Mi", "cpu": "500m"}
    # Memory and CPU requested as limited; the scratch disk is requested too (its bound is the emptyDir sizeLimit).
    assert container.resources.requests == {"memory": "300Mi", "cpu": "500m", "ephemeral-storage": "1048Mi"}
    assert job.spec.backoff_limit == 0 and job.spec.template.spec.restart_policy == "Never"
    (ref,) = job.metadata.owner_references
    mv = get_mv(custom, ns, "limits")
    assert (ref.kind, ref.name, ref.uid) == ("MusicVideo", "limits", mv["metadata"]["uid"])
    assert [r.action for r in job.spec.pod_failure_policy.rules] == ["Ignore", "FailJob"]
    wait_for(lambda: phase(custom, ns, "limits") == "Running", what="phase Running")
    status = get_mv(custom, ns, "limits")["status"]
    assert (status["attempts"], status["memoryLimit"], status["jobName"]) == (1, "300Mi", "limits-a1")
    wait_for(lambda: "Normal/JobCreated" in events_of(core, ns, "limits"), what="JobCreated event")
    assert "vibecraft_renders_running 1.0" in operator.metrics()

    statuses, watcher = watch_statuses(custom, ns, "limits")
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "limits")
    wait_for(lambda: _gone(lambda: get_mv(custom, ns, "limits")), what="MusicVideo deleted (finalizer released)")
    wait_for(lambda: _gone(lambda: batch.read_namespaced_job("limits-a1", ns)), what="Job garbage-collected")
    watcher.join(timeout=30)
    phases = [st.get("phase") for st in statuses]
    assert "Cancelled" in phases, f"watchers never saw Cancelled before the object went: {phases}"
    assert "vibecraft_renders_total{result=\"cancelled\"} 1.0" in operator.metrics()


TINY = ROOT / "examples" / "musicvideo-tiny.yaml"
real_renderer = pytest.mark.parametrize(  # the renderer image's own entrypoint instead of the fake renderer
    "operator_settings", [{"VIBECRAFT_RENDERER_COMMAND": ""}], indirect=True, ids=["real-renderer"])


def tiny_example(s3: S3Server, tmp_path: Path, seconds: float, name: str | None = None,
                 **spec: dict[str, Any]) -> dict[str, Any]:
    """examples/musicvideo-tiny.yaml, its spec sections updated with `spec`, and a song of clicks at 120 BPM
    (`seconds` long, Ogg Vorbis) uploaded to its audio URL (in the local cluster's bucket)."""
    body = yaml.safe_load(TINY.read_text())
    body["metadata"]["name"] = name or body["metadata"]["name"]
    for section, values in spec.items():
        body["spec"][section].update(values)
    bucket, _, key = body["spec"]["audio"]["url"].removeprefix("s3://").partition("/")
    assert bucket == s3.bucket, "the examples name the local cluster's bucket"
    song = tmp_path / "song.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=f=880:d={seconds}", "-af",
                    "volume='if(lt(mod(t,0.5),0.05),1,0.02)':eval=frame", "-c:a", "libvorbis", str(song)], check=True)
    s3.client().upload_file(str(song), bucket, key)
    return dict(body)


@real_renderer
def test_the_tiny_example_renders_for_real_with_progress_in_status(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any, tmp_path: Path) -> None:
    """kubectl apply -f examples/musicvideo-tiny.yaml: the real renderer runs as the Job's pod."""
    custom, batch, _ = apis
    ns = operator.namespace
    example = tiny_example(s3, tmp_path, 20)
    name, out_url = example["metadata"]["name"], example["spec"]["output"]["url"]

    statuses, watcher = watch_statuses(custom, ns, name, until=lambda st: st.get("phase") in ("Succeeded", "Failed"))
    cluster.kubectl("apply", "-n", ns, "-f", str(TINY))
    job = wait_for(lambda: _job(batch, ns, f"{name}-a1"), what="the render's Job")
    limits = job.spec.template.spec.containers[0].resources.limits
    assert limits == {"memory": example["spec"]["resources"]["memory"], "cpu": example["spec"]["resources"]["cpu"]}
    status = finished_status(custom, ns, name)
    assert status["phase"] == "Succeeded", status
    assert status["output"]["videoUrl"] == f"{out_url}video.mp4" and status["attempts"] == 1
    assert abs(status["output"]["durationSeconds"] - 20.0) < 0.2 and status["analysis"]["tempo"] > 0
    watcher.join(timeout=30)
    seen = [(st.get("phase"), float((st.get("progress") or {}).get("percent") or 0)) for st in statuses]
    running = [pct for ph, pct in seen if ph == "Running"]
    assert len(set(running)) >= 3 and running == sorted(running), f"progress while Running: {seen}"
    assert running[0] < running[-1] and running[-1] > 50, seen
    out_bucket, _, prefix = out_url.removeprefix("s3://").partition("/")
    mp4 = s3.client().get_object(Bucket=out_bucket, Key=f"{prefix}video.mp4")["Body"].read()
    assert len(mp4) == status["output"]["sizeBytes"] and mp4[4:8] == b"ftyp"


@real_renderer
def test_a_given_bpm_overrides_detection_end_to_end(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any, tmp_path: Path) -> None:
    """spec.audio.bpm: 97 on a 120 BPM song: the real renderer cuts at 97 and status says so (and -o wide)."""
    body = tiny_example(s3, tmp_path, 8, name="tempo", audio={"url": "s3://vibecraft/songs/tempo-clicks.ogg", "bpm": 97},
                        output={"url": "s3://vibecraft/e2e/tempo/"},
                        video={"width": 64, "height": 36, "fps": 4})  # only the analysis matters here
    custom, ns = apis[0], operator.namespace
    create_mv(custom, ns, body)
    status = finished_status(custom, ns, "tempo")
    assert status["phase"] == "Succeeded", status
    assert status["analysis"]["tempo"] == 97 and status["analysis"]["tempoSource"] == "given", status["analysis"]
    assert 0 <= status["analysis"]["confidence"] <= 1
    wide = cluster.kubectl("get", f"{PLURAL}.{GROUP}", "tempo", "-n", ns, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert row[header.index(" BPM ") + 1:].split()[0] == "97", wide  # columns are left-aligned; REASON is empty
    assert "BPM" not in cluster.kubectl("get", f"{PLURAL}.{GROUP}", "tempo", "-n", ns).stdout  # priority 1


def watch_statuses(custom: client.CustomObjectsApi, namespace: str, name: str,
                   until: Callable[[dict[str, Any]], bool] = lambda st: False,
                   ) -> tuple[list[dict[str, Any]], threading.Thread]:
    """Every status a watch on one MusicVideo delivers from now (filled in a thread) until `until` or its deletion."""
    seen: list[dict[str, Any]] = []
    selector = f"metadata.name={name}"
    version = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                   field_selector=selector)["metadata"]["resourceVersion"]

    def run() -> None:
        for event in watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                          field_selector=selector, resource_version=version, timeout_seconds=300):
            status = dict((event["object"] or {}).get("status") or {})
            seen.append(status)
            if event["type"] == "DELETED" or until(status):
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return seen, thread


def test_oom_kill_is_retried_with_more_memory_then_succeeds(operator: OperatorProcess, apis: Any) -> None:
    custom, _, core = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("oom", style={"prompt": "oom@1,ok"},
                                   resources={"memory": "200Mi", "maxMemory": "1Gi"}))
    status = finished_status(custom, ns, "oom", timeout=180)
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 2 and status["memoryLimit"] == "300Mi"
    assert status["lastFailure"]["reason"] in ("OOMKilled", "ProbableOOMKill")
    assert status["output"]["sizeBytes"] == 4096 and status["output"]["durationSeconds"] == 12.5
    assert status["analysis"] == {"tempo": 128.0, "beats": 3, "sections": [{"start": 0.0, "end": 12.5,
                                                                            "label": "A"}]}
    oom_event = f"Warning/{status['lastFailure']['reason']}"
    wait_for(lambda: {oom_event, "Normal/Succeeded"} <= set(events_of(core, ns, "oom")), what="events")
    metrics = operator.metrics()
    assert "vibecraft_oom_retries_total 1.0" in metrics
    assert 'vibecraft_renders_total{result="succeeded"} 1.0' in metrics


def test_renderer_errors_are_retried_then_fail_with_the_termination_message(operator: OperatorProcess, apis: Any) -> None:
    custom, _, core = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("broken", style={"prompt": "fail:11"}, retries=1))
    wait_for(lambda: phase(custom, ns, "broken") == "Failed", timeout=120, what="phase Failed")
    status = get_mv(custom, ns, "broken")["status"]
    assert status["attempts"] == 2 and status["failedAttempts"] == 1
    assert status["lastFailure"]["reason"] == "DownloadFailed" and status["lastFailure"]["exitCode"] == 11
    assert status["lastFailure"]["message"] == "fake renderer failed on attempt 2"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DownloadFailed")
    wait_for(lambda: "Warning/RenderFailed" in events_of(core, ns, "broken"), what="RenderFailed event")


@pytest.mark.parametrize("operator_settings", [{"VIBECRAFT_MAX_RUNNING": "1"}], indirect=True)
def test_renders_beyond_the_limit_wait_queued_in_creation_order(operator: OperatorProcess, apis: Any) -> None:
    custom, batch, _ = apis
    ns = operator.namespace
    for name in ("first", "second", "third"):
        create_mv(custom, ns, manifest(name, style={"prompt": "sleep:4"}))
        time.sleep(1.1)  # creationTimestamp has second resolution
    wait_for(lambda: phase(custom, ns, "first") == "Running", what="first Running")
    wait_for(lambda: phase(custom, ns, "third") == "Queued", what="third Queued")
    assert phase(custom, ns, "second") == "Queued"
    assert _gone(lambda: batch.read_namespaced_job("second-a1", ns))
    for name in ("first", "second", "third"):
        wait_for(lambda n=name: phase(custom, ns, n) == "Succeeded", timeout=120, what=f"{name} Succeeded")
    started = [get_mv(custom, ns, n)["status"]["startedAt"] for n in ("first", "second", "third")]
    assert started == sorted(started)


def test_suspend_deletes_the_job_and_resume_continues(operator: OperatorProcess, apis: Any) -> None:
    custom, batch, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("pause", style={"prompt": "sleep:60@1,ok"}))
    wait_for(lambda: _job(batch, ns, "pause-a1"), what="Job pause-a1")
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "pause", {"spec": {"suspend": True}})
    wait_for(lambda: _gone(lambda: batch.read_namespaced_job("pause-a1", ns)), what="Job deleted on suspend")
    status = get_mv(custom, ns, "pause")["status"]
    assert status["phase"] == "Pending"
    assert any(c["type"] == "Suspended" and c["status"] == "True" for c in status["conditions"])
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "pause", {"spec": {"suspend": False}})
    wait_for(lambda: phase(custom, ns, "pause") == "Succeeded", timeout=120, what="resumed render to succeed")
    assert get_mv(custom, ns, "pause")["status"]["attempts"] == 2


def test_killing_the_operator_never_duplicates_a_job(operator: OperatorProcess, apis: Any) -> None:
    custom, batch, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("sturdy", style={"prompt": "sleep:8,ok"}))
    wait_for(lambda: _job(batch, ns, "sturdy-a1"), what="Job sturdy-a1")
    operator.stop(signal.SIGKILL)
    operator.start()
    wait_for(lambda: phase(custom, ns, "sturdy") == "Succeeded", timeout=120, what="render to succeed")
    jobs = batch.list_namespaced_job(ns).items
    assert [j.metadata.name for j in jobs] == ["sturdy-a1"]
    assert get_mv(custom, ns, "sturdy")["status"]["attempts"] == 1


@pytest.fixture(scope="session")
def peering(cluster: Cluster) -> Iterator[str]:
    """kopf's peering CRDs and a ClusterKopfPeering just for this test run."""
    cluster.kubectl("apply", "-f", str(ROOT / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    name = f"e2e-{os.getpid()}"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}))
    yield name
    cluster.kubectl("delete", "clusterkopfpeering", name, "--wait=false", check=False)


def test_replicas_elect_the_highest_priority_and_hand_over(
    cluster: Cluster, s3: S3Server, crd: None, peering: str, renderer_namespace: str, apis: Any, tmp_path: Path
) -> None:
    custom, batch, _ = apis
    ns = renderer_namespace
    replicas = [make_operator(cluster, s3, ns, tmp_path / f"operator-{prio}.log", args=("--priority", str(prio)),
                              VIBECRAFT_PEERING_NAME=peering) for prio in (10, 20)]
    for replica in replicas:
        replica.start()
    low, high = replicas
    try:
        wait_for(lambda: "Pausing operations" in low.log.read_text(), what="the low-priority replica to pause")
        create_mv(custom, ns, manifest("led", style={"prompt": "sleep:60"}))
        wait_for(lambda: _job(batch, ns, "led-a1"), what="the leader to create the Job")
        assert "led-a1" in high.log.read_text() and "led-a1" not in low.log.read_text()
        high.stop()  # graceful: it leaves the peering, the other one resumes
        wait_for(lambda: "Resuming operations" in low.log.read_text(), what="the other replica to resume")
        create_mv(custom, ns, manifest("after", style={"prompt": "sleep:60"}))
        wait_for(lambda: _job(batch, ns, "after-a1"), what="the new leader to create the Job")
        assert _job(batch, ns, "led-a2") is None  # the render in flight was adopted, not restarted
    finally:
        stop_operators(cluster, ns, *replicas)


def _job(batch: client.BatchV1Api, namespace: str, name: str) -> Any:
    try:
        return batch.read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@pytest.mark.parametrize("operator_settings", [{"VIBECRAFT_MAX_RUNNING": "4", "VIBECRAFT_RESYNC_SECONDS": "10"}],
                         indirect=True)
def test_a_flood_of_renders_never_exceeds_max_running(operator: OperatorProcess, cluster: Cluster, apis: Any) -> None:
    """Many MusicVideos applied together: at most 4 Jobs run at any moment, and every one succeeds.

    200 on the node agent; 24 (6x maxRunning) on a real node, where each is a real pod (sandbox,
    container, Python start-up under a CPU quota: ~4 s): 60 took 170 s of CI, 200 would take ~10 min."""
    custom, batch, _ = apis
    ns, count = operator.namespace, 24 if cluster.real else 200
    names = [f"bulk-{i:03d}" for i in range(count)]
    for name in names:
        create_mv(custom, ns, manifest(name, style={"prompt": "ok"}))
    peak, phases = 0, []  # the largest number of unfinished Jobs seen, the last phases

    def all_succeeded() -> bool:
        nonlocal peak, phases
        jobs = batch.list_namespaced_job(ns).items
        unfinished = [j for j in jobs if not any(c.type in ("Complete", "Failed") and c.status == "True"
                                                 for c in (j.status.conditions or []))]
        peak = max(peak, len(unfinished))
        mvs = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        phases = [(m.get("status") or {}).get("phase") for m in mvs]
        assert phases.count("Running") <= 4, f"{phases.count('Running')} renders Running at once"
        assert "Failed" not in phases, [m["status"] for m in mvs if (m.get("status") or {}).get("phase") == "Failed"][:1]
        return phases.count("Succeeded") == count

    wait_for(all_succeeded, timeout=900, interval=0.5,
             what=lambda: f"all {count} renders to succeed (phases: {sorted(set(phases), key=str)})")
    assert 1 <= peak <= 4, f"peak of {peak} unfinished Jobs"
    assert len(batch.list_namespaced_job(ns).items) == count  # one Job per render: no duplicates


@real_renderer
def test_a_render_split_over_an_indexed_job_makes_the_one_pod_video(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any, tmp_path: Path) -> None:
    """Issue 20: a 2-minute song with spec.parallelism 3 runs a prepare Job, an Indexed Job of 3 chunks (1, 1
    and 2 segments of 30 s) and a join Job in one attempt. The last chunk's pod is evicted mid-render, after
    its first segment: only that index runs again, reusing that segment. Progress only rises, every chunk
    reports under its own key, and the video is the one-pod render's frame for frame: 1200 frames, audio
    and video aligned."""
    custom, batch, core = apis
    ns = operator.namespace
    video = {"width": 640, "height": 360, "fps": 10}  # a 30 s segment takes seconds at 500m: time to evict
    one = tiny_example(s3, tmp_path, 120, name="whole", output={"url": "s3://vibecraft/e2e/whole/"}, video=video)
    split = dict(one, metadata={"name": "split"}, spec={**one["spec"], "parallelism": 3,
                                                        "output": {"url": "s3://vibecraft/e2e/split/"}})
    statuses, watcher = watch_statuses(custom, ns, "split", until=lambda st: st.get("phase") in ("Succeeded", "Failed"))
    create_mv(custom, ns, one)
    create_mv(custom, ns, split)

    def chunk_frames(index: str) -> int:
        chunks = ((get_mv(custom, ns, "split").get("status") or {}).get("progress") or {}).get("chunks") or {}
        return int((chunks.get(index) or {}).get("framesDone") or 0)

    # Evict chunk 3's pod once its first 30 s segment (300 frames) is stored, before its second is.
    wait_for(lambda: chunk_frames("2") >= 300, timeout=600, interval=0.2, what="chunk 3 to store its first segment")
    victim = next(p for p in core.list_namespaced_pod(ns, label_selector="batch.kubernetes.io/job-name=split-a1-s").items
                  if p.metadata.annotations.get("batch.kubernetes.io/job-completion-index") == "2")
    assert chunk_frames("2") < 600, "chunk 3 finished before it could be evicted"
    core.create_namespaced_pod_eviction(victim.metadata.name, ns, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=victim.metadata.name, namespace=ns)))
    for name in ("whole", "split"):
        status = finished_status(custom, ns, name, timeout=600)
        assert status["phase"] == "Succeeded" and status["attempts"] == 1, status
    watcher.join(timeout=30)
    stages = [st.get("stage") for st in statuses if st.get("stage")]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == ["prepare", "segments", "join"], stages
    running = [st["progress"] for st in statuses
               if st.get("phase") == "Running" and (st.get("progress") or {}).get("percent") is not None]
    percents = [p["percent"] for p in running]
    assert len(percents) > 5 and percents == sorted(percents), percents
    last = running[-1]  # the join's (success clears the renderer's fields)
    assert sorted(last["chunks"]) == ["0", "1", "2"] and last["framesDone"] == last["framesTotal"] == 1200, last

    indexed = _job(batch, ns, "split-a1-s")
    assert indexed.spec.completion_mode == "Indexed" and indexed.spec.completions == 3
    assert indexed.status.succeeded == 3
    pods = core.list_namespaced_pod(ns, label_selector="batch.kubernetes.io/job-name=split-a1-s").items
    index = {p.metadata.name: p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods}
    # The evicted pod is deleted; the other indexes kept their one pod each: only index 2 ran again.
    assert sorted(index.values()) == ["0", "1", "2"] and victim.metadata.name not in index, index
    again = next(p for p in pods if index[p.metadata.name] == "2")
    log = core.read_namespaced_pod_log(again.metadata.name, ns)
    assert "1 segments rendered, 1 reused" in log, log[-2000:]

    def fetch(name: str) -> Path:
        local = tmp_path / f"{name}.mp4"
        s3.client().download_file("vibecraft", f"e2e/{name}/video.mp4", str(local))
        return local

    def frames(video: Path) -> str:
        return subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-map", "0:v", "-f", "framemd5", "-"],
                              capture_output=True, text=True, check=True).stdout.split("\n", 4)[-1]  # fmt: skip

    whole, parts = fetch("whole"), fetch("split")
    assert frames(parts) == frames(whole)
    assert count_frames(parts) == 1200
    streams = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time,duration",
                                         "-of", "json", str(parts)], capture_output=True, text=True, check=True).stdout)
    times = {st["codec_type"]: (float(st["start_time"]), float(st["duration"])) for st in streams["streams"]}
    assert abs(times["video"][0] - times["audio"][0]) <= 0.1 and abs(times["video"][1] - times["audio"][1]) <= 0.1, times
