"""Real containers: pods started by the real kubelet (v1.37) through containerd + runc from the image
built from Dockerfile.renderer. What a kind or EKS user gets, checked here before they deploy it:
the image renders, runs as its non-root user, cannot write a read-only root, is OOM-killed by the
kernel inside its container at its memory limit, and is evicted when it overfills a sized emptyDir.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
import yaml
from vibecraft_operator.classify import OWN_STORAGE_MESSAGES
from vibecraft_operator.jobs import RENDERER_CONTAINER_SECURITY

from tests.conftest import RENDERER_IMAGE, Cluster
from tests.harness import wait_for

pytestmark = pytest.mark.realnode

# What the operator's renderer Job sets on its container, plus the pod-level runAsNonRoot.
HARDENED = {**RENDERER_CONTAINER_SECURITY, "runAsNonRoot": True}


def _pod(name: str, argv: list[str], *, memory: str = "256Mi", security: dict[str, Any] | None = None,
         volumes: list[dict[str, Any]] | None = None, mounts: list[dict[str, Any]] | None = None,
         env: list[dict[str, str]] | None = None, args: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main", "image": RENDERER_IMAGE, "imagePullPolicy": "Never",
        ("args" if args else "command"): argv,
        "resources": {"limits": {"memory": memory}, "requests": {"memory": memory}},
        "securityContext": security if security is not None else HARDENED,
        "volumeMounts": mounts or [], "env": env or [],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [container], "volumes": volumes or []}}


def _run(cluster: Cluster, manifest: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    """Create the pod and return it once it has finished (Succeeded or Failed)."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]

    def done() -> dict[str, Any] | None:
        pod = json.loads(cluster.kubectl("get", "pod", name, "-o", "json").stdout)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    return wait_for(done, timeout=timeout, what=lambda: f"pod {name} to finish\n{cluster.diagnose('default', name)}")


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def _logs(cluster: Cluster, name: str) -> str:
    """Through the API server and the kubelet, as `kubectl logs` users read them."""
    return cluster.kubectl("logs", name).stdout


def test_the_node_is_a_real_kubelet_with_containerd(real_cluster: Cluster) -> None:
    node = json.loads(real_cluster.kubectl("get", "node", real_cluster.cfg.node_name, "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.37.2" and info["containerRuntimeVersion"].startswith("containerd://")
    # The running kubelet never garbage-collects the imported images (nothing could pull them back).
    configz = f"/api/v1/nodes/{real_cluster.cfg.node_name}/proxy/configz"
    config = json.loads(real_cluster.kubectl("get", "--raw", configz).stdout)
    assert config["kubeletconfig"]["imageGCHighThresholdPercent"] == 100, config["kubeletconfig"]


def test_a_song_renders_in_a_renderer_pod_into_s3(real_cluster: Cluster, tmp_path: Any) -> None:
    song = tmp_path / "song.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=110:duration=6,volume=0.5[a];aevalsrc=0.8*sin(2*PI*60*t)*exp(-30*mod(t\\,0.5)):d=6[k];"
                    "[a][k]amix=inputs=2", "-ar", "22050", str(song)], check=True)
    key = f"uploads/real-{uuid.uuid4().hex[:6]}"
    s3 = real_cluster.s3.client()
    s3.upload_file(str(song), real_cluster.cfg.bucket, f"{key}/song.wav")
    c = real_cluster.cfg
    env = [{"name": k, "value": v} for k, v in
           {**real_cluster.s3.env(), "HOME": "/scratch", "NUMBA_CACHE_DIR": "/scratch/numba"}.items()]
    pod = _pod("render", [f"s3://{c.bucket}/{key}/song.wav", "-o", f"s3://{c.bucket}/{key}/video.mp4",
                          "--width", "320", "--height", "180", "--fps", "15"], memory="1Gi", env=env, args=True,
               volumes=[{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}, {"name": "tmp", "emptyDir": {}}],
               mounts=[{"name": "scratch", "mountPath": "/scratch"}, {"name": "tmp", "mountPath": "/tmp"}])
    done = _run(real_cluster, pod)
    assert done["status"]["phase"] == "Succeeded", (_terminated(done), _logs(real_cluster, "render")[-2000:])
    out = tmp_path / "video.mp4"
    s3.download_file(c.bucket, f"{key}/video.mp4", str(out))
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)],
                                      capture_output=True, text=True, check=True).stdout)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (320, 180) and abs(float(video["duration"]) - 6.0) < 0.2


def test_runs_as_the_images_non_root_user_and_cannot_write_its_root(real_cluster: Cluster) -> None:
    script = "id -u; touch /home/vibecraft/x 2>&1; echo rc=$?"
    hardened = _run(real_cluster, _pod("readonly", ["sh", "-c", script]))
    writable = _run(real_cluster, _pod("writable", ["sh", "-c", script], security={}))
    # the image's USER: uid 10001, without runAsUser in the pod
    assert _logs(real_cluster, "readonly").splitlines()[0] == "10001"
    assert "Read-only file system" in _logs(real_cluster, "readonly") and "rc=1" in _logs(real_cluster, "readonly")
    assert "rc=0" in _logs(real_cluster, "writable"), "the control: the same write works on a writable root"
    assert hardened["status"]["phase"] == writable["status"]["phase"] == "Succeeded"


def test_the_kernel_oom_kills_inside_the_container_at_its_limit(real_cluster: Cluster) -> None:
    hog = "import time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(5)"
    done = _run(real_cluster, _pod("hog", ["python", "-c", hog], memory="64Mi"))
    term = _terminated(done)
    assert (term["reason"], term["exitCode"]) == ("OOMKilled", 137), term
    small = _run(real_cluster, _pod("fits", ["python", "-c", hog.replace("300", "16")], memory="64Mi"))
    assert small["status"]["phase"] == "Succeeded", _terminated(small)


def test_overfilling_a_sized_empty_dir_evicts_the_pod(real_cluster: Cluster) -> None:
    fill = "head -c 60000000 /dev/zero > /scratch/fill && echo written && sleep 300"
    pod = _pod("filler", ["sh", "-c", fill], volumes=[{"name": "scratch", "emptyDir": {"sizeLimit": "20Mi"}}],
               mounts=[{"name": "scratch", "mountPath": "/scratch"}])
    start = time.monotonic()
    done = _run(real_cluster, pod, timeout=180)
    assert done["status"]["phase"] == "Failed" and done["status"].get("reason") == "Evicted", done["status"]
    assert "emptyDir" in done["status"].get("message", "") or "scratch" in done["status"].get("message", ""), (
        done["status"], time.monotonic() - start)


def test_overfilling_an_ephemeral_storage_limit_evicts_the_pod(real_cluster: Cluster) -> None:
    """The container's `limits.ephemeral-storage` covers its unsized emptyDirs too; the kubelet's
    message is one the operator reads as DiskFull (classify.OWN_STORAGE_MESSAGES)."""
    fill = "head -c 60000000 /dev/zero > /scratch/fill && echo written && sleep 300"
    pod = _pod("hoarder", ["sh", "-c", fill], volumes=[{"name": "scratch", "emptyDir": {}}],
               mounts=[{"name": "scratch", "mountPath": "/scratch"}])
    pod["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = "20Mi"
    done = _run(real_cluster, pod, timeout=180)
    assert done["status"]["phase"] == "Failed" and done["status"].get("reason") == "Evicted", done["status"]
    assert any(m in done["status"].get("message", "") for m in OWN_STORAGE_MESSAGES), done["status"]
