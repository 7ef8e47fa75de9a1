"""The operator's own Jobs, as a user's cluster runs them: a MusicVideo becomes a Job whose pod the real
kubelet starts from the renderer image, with the operator's security context, scratch emptyDir and
memory limit; the renderer reports progress to the API server through the `kubernetes` Service
(kube-proxy) with its ServiceAccount token, and the video lands in S3. A memory limit too small for
the render is enforced by the kernel inside the container, and the operator retries with more."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from vibecraft_common.resource import EXIT_MEMORY_GUARD, EXIT_REASONS, GROUP, PLURAL, VERSION
from vibecraft_localcluster.realnode import BRIDGE_IP

from tests.conftest import Cluster, S3Server, new_namespace, provision_renders
from tests.harness import OperatorProcess, install_crd, wait_for
from tests.renderer.helpers import caption_text

pytestmark = pytest.mark.realnode


@dataclass
class Setup:
    cluster: Cluster
    s3: S3Server
    ns: str
    song_url: str
    op: OperatorProcess
    node: str
    env: dict[str, str]  # the operator's


@pytest.fixture(scope="module")
def setup(real_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A namespace provisioned for renders (renderer SA + RBAC, S3 Secret), a 6 s song, the operator."""
    c = real_cluster.cfg
    tmp = tmp_path_factory.mktemp("real-operator")
    s3, cluster = real_cluster.s3, real_cluster
    install_crd(cluster.kubeconfig)
    ns = new_namespace(cluster, "real")
    provision_renders(cluster, s3, ns)
    for key, seconds in ((f"songs/{ns}.wav", 6), (f"songs/{ns}-long.wav", 60)):
        song = tmp / f"{seconds}s.wav"  # a 120 BPM kick under a tone
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"aevalsrc=0.8*sin(2*PI*60*t)*exp(-30*mod(t\\,0.5))+0.2*sin(2*PI*220*t):d={seconds}",
                        "-ar", "22050", str(song)], check=True)
        s3.client().upload_file(str(song), c.bucket, key)
    # A whole core per render: a real runtime enforces the CPU limit (CFS quota), and at 100m a 6 s song
    # takes ~100 s. The tests here render one at a time.
    env = {**cluster.operator_env(), "VIBECRAFT_DEFAULT_CPU": "1",
           "VIBECRAFT_LOG_FORMAT": "full", "VIBECRAFT_RETRY_BACKOFF_SECONDS": "1"}
    op = OperatorProcess(cluster.kubeconfig, [ns], tmp / "operator.log", env=env)
    op.start()
    try:
        yield Setup(cluster, s3, ns, f"s3://{c.bucket}/songs/{ns}.wav", op, c.node_name, env)
    finally:
        cluster.kubectl("delete", f"{PLURAL}.{GROUP}", "--all", "-n", ns, "--timeout=60s", check=False)
        op.stop()
        print(f"--- operator log ---\n{op.log_tail(6000)}")


def _render(s: Setup, name: str, **spec: Any) -> dict[str, Any]:
    """Apply a MusicVideo and return it once Succeeded or Failed."""
    mv = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MusicVideo", "metadata": {"name": name, "namespace": s.ns},
          "spec": {"audio": {"url": s.song_url}, "output": {"url": f"s3://{s.s3.bucket}/real/{s.ns}/{name}/"},
                   "video": {"width": 320, "height": 180, "fps": 15}, **spec}}
    s.cluster.kubectl("apply", "-f", "-", input=json.dumps(mv))

    def finished() -> dict[str, Any] | None:
        got = json.loads(s.cluster.kubectl("get", f"{PLURAL}.{GROUP}", name, "-n", s.ns, "-o", "json").stdout)
        return got if got.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    def said() -> str:
        return f"{name} to finish; operator log:\n{s.op.log_tail(3000)}\n{s.cluster.diagnose(s.ns)}"

    return wait_for(finished, timeout=300, what=said)


def _pods(s: Setup, name: str) -> list[dict[str, Any]]:
    pods = json.loads(s.cluster.kubectl("get", "pods", "-n", s.ns, "-o", "json").stdout)["items"]
    return sorted((p for p in pods if p["metadata"]["name"].startswith(f"{name}-a")),
                  key=lambda p: p["metadata"]["creationTimestamp"])


def test_a_musicvideo_renders_in_a_real_pod(setup: Setup, tmp_path: Path) -> None:
    """With lyrics and a title card (non-ASCII, as UTF-8 in the pod's spec env): the image's libass and font
    draw them; the lyric line is read back from the video with OCR."""
    done = _render(setup, "song", video={"width": 640, "height": 360, "fps": 15}, title="Café Crossroads",
                   lyrics={"text": "[00:01.00]HELLO FROM THE POD\n[00:05.00]\n"})
    pods = _pods(setup, "song")
    assert done["status"]["phase"] == "Succeeded", (done["status"], [p["status"] for p in pods])
    # The renderer's own progress reached the API server from inside the pod.
    assert done["status"].get("analysis", {}).get("tempo"), done["status"]
    pod = pods[0]
    assert pod["spec"]["nodeName"] == setup.node, pod["spec"]
    assert pod["status"]["containerStatuses"][0]["imageID"], "a real image, from containerd's store"
    listed = setup.s3.client().list_objects_v2(Bucket=setup.s3.bucket, Prefix=f"real/{setup.ns}/song/")
    assert f"real/{setup.ns}/song/video.mp4" in {o["Key"] for o in listed.get("Contents", [])}
    if shutil.which("tesseract"):
        video = tmp_path / "video.mp4"
        setup.s3.client().download_file(setup.s3.bucket, f"real/{setup.ns}/song/video.mp4", str(video))
        assert "HELLO FROM THE POD" in caption_text(video, 3.0, (640, 360), top=0.75)


def test_lyrics_without_timestamps_fail_once_with_the_renderers_reason(setup: Setup) -> None:
    done = _render(setup, "badlyrics", lyrics={"text": "words without\nany times\n"})
    failure = done["status"].get("lastFailure") or {}
    assert done["status"]["phase"] == "Failed" and failure.get("reason") == "BadLyrics", done["status"]
    assert "no timestamps found" in failure.get("message", "") and done["status"]["attempts"] == 1, done["status"]


def test_an_oom_kill_inside_the_container_is_retried_with_more_memory(setup: Setup) -> None:
    done = _render(setup, "tight", resources={"memory": "160Mi", "maxMemory": "2Gi"})
    events = json.loads(setup.cluster.kubectl("get", "events", "-n", setup.ns, "--field-selector",
                                              "involvedObject.name=tight", "-o", "json").stdout)["items"]
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    said = [(e["reason"], e["message"]) for e in events]
    assert done["status"]["phase"] == "Succeeded", (done["status"], said)
    # "JobCreated: attempt N: Job tight-aN (160Mi memory, ...)": x1.5 after each OOM kill, never less.
    mib = [int(m.group(1)) for _, msg in said if (m := re.search(r"\((\d+)Mi memory", msg))]
    assert mib[0] == 160 and len(mib) >= 2 and mib == sorted(set(mib)), said
    # Killed by the kernel at its cgroup limit inside the container (or the renderer's guard just before).
    assert any(r in ("OOMKilled", EXIT_REASONS[EXIT_MEMORY_GUARD]) for r, _ in said) or any(
        "OOM" in msg for _, msg in said), said


@pytest.mark.chaos  # scenario 10 of issue 19
def test_a_render_outgrowing_its_scratch_limit_fails_as_disk_full(setup: Setup, tmp_path: Path) -> None:
    """The kubelet evicts the pod at its scratch emptyDir's sizeLimit. The Job alone would start pod
    after pod (an eviction is a disruption to its podFailurePolicy); the operator ends the attempt and
    the MusicVideo records why. The limit is operator-wide: a second operator, its own namespace."""
    s = setup
    ns = new_namespace(s.cluster, "disk")
    provision_renders(s.cluster, s.s3, ns)
    op = OperatorProcess(s.cluster.kubeconfig, [ns], tmp_path / "operator.log",
                         env={**s.env, "VIBECRAFT_SCRATCH_SIZE_LIMIT": "1Mi"})
    op.start()
    try:
        # 60 s of audio at 720p30 (~25 s in the pod): the render outlasts the kubelet's volume-usage sampling
        # and eviction check (10 s each, realnode.py); at 320x180 it once finished in 16 s, before either.
        done = _render(replace(s, ns=ns, op=op, song_url=s.song_url.replace(".wav", "-long.wav")), "disk", retries=0,
                       video={"width": 1280, "height": 720, "fps": 30})
        failure = done["status"].get("lastFailure") or {}
        assert (done["status"]["phase"], failure.get("reason")) == ("Failed", "DiskFull"), done["status"]
        assert 'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi"' in failure.get("message", ""), failure
        jobs = json.loads(s.cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]
        assert not [j for j in jobs if not j["metadata"].get("deletionTimestamp")], "the attempt's Job is gone"
    finally:
        s.cluster.kubectl("delete", f"{PLURAL}.{GROUP}", "--all", "-n", ns, "--timeout=60s", check=False)
        op.stop()


def test_audio_urls_to_internal_addresses_fail_alike_and_connect_nowhere(setup: Setup) -> None:
    """SSRF from a render pod (issue 17): audio URLs naming the node (where the canary listens, as cloud
    metadata or a node service would), the kube-apiserver's Service, cloud metadata and loopback fail
    with one message (no status code, no errno: status is not a port scanner) and the canary is never
    reached, although the pod could reach it (a control pod connects)."""
    s = setup
    seen: list[str] = []
    canary = socket.create_server(("0.0.0.0", 0))
    port = canary.getsockname()[1]

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, peer = canary.accept()
                seen.append(peer[0])
                conn.close()

    threading.Thread(target=accept, daemon=True).start()
    kube = json.loads(s.cluster.kubectl("get", "svc", "kubernetes", "-n", "default", "-o", "json").stdout)
    urls = {"node": f"http://{BRIDGE_IP}:{port}/song.ogg",
            "apiserver": f"https://{kube['spec']['clusterIP']}/api/v1/namespaces",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "loopback": f"http://localhost:{port}/song.ogg"}
    try:
        for name, url in urls.items():  # applied together: the pods start side by side
            mv = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MusicVideo",
                  "metadata": {"name": f"ssrf-{name}", "namespace": s.ns},
                  "spec": {"audio": {"url": url}, "output": {"url": f"s3://{s.s3.bucket}/real/{s.ns}/ssrf-{name}/"},
                           "retries": 0, "resources": {"cpu": "250m"}}}
            s.cluster.kubectl("apply", "-f", "-", input=json.dumps(mv))
        failures = {}
        for name in urls:
            mv_name = f"ssrf-{name}"

            def failed(mv: str = mv_name) -> dict[str, Any] | None:
                got = json.loads(s.cluster.kubectl("get", f"{PLURAL}.{GROUP}", mv, "-n", s.ns, "-o", "json").stdout)
                return got["status"] if got.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

            status = wait_for(failed, timeout=240, what=f"{mv_name} to end")
            assert status["phase"] == "Failed", status
            failures[name] = status["lastFailure"]["message"]
        assert seen == [], f"the canary was reached from {seen}"
        generic = {name: msg.replace(url.split("?")[0], "<url>") for (name, msg), url in zip(failures.items(),
                                                                                           urls.values(), strict=True)}
        assert len(set(generic.values())) == 1, failures
        assert "not reachable or not allowed" in next(iter(generic.values())), failures
        # The control: the node address is reachable from a pod, so the guard (not the network) refused it.
        probe = f"import socket; socket.create_connection(('{BRIDGE_IP}', {port}), timeout=10).close()"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssrf-control", "namespace": s.ns},
               "spec": {"restartPolicy": "Never", "containers": [{
                   "name": "main", "image": s.cluster.renderer_image, "imagePullPolicy": "Never",
                   "command": ["python", "-c", probe]}]}}
        s.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        wait_for(lambda: seen, timeout=120, what=lambda: f"the control pod to connect\n{s.cluster.diagnose(s.ns)}")
    finally:
        canary.close()
