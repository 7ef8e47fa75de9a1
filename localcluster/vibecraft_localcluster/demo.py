"""`make demo`: the main job on an embedded default, the way a user would run it.

Builds the images from the Dockerfiles (localcluster/build-images.sh, cached), brings up the local
cluster with a real node (the kubelet with containerd + runc runs them) and S3, installs the Helm chart
with those images, uploads a sample song (a real song from Debian's hyperrogue-music, or a generated
one), applies a MusicVideo, shows live progress like `kubectl get mv -w` and copies the MP4 and
thumbnail to ./out/. With VIBECRAFT_NODE=agent the node agent runs the pods as host processes instead
(for a machine that cannot run containers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from vibecraft_common.status import SUCCEEDED, TERMINAL_PHASES, THUMBNAIL_NAME, VIDEO_NAME

from .cluster import ClusterError, LocalCluster
from .config import REPO_ROOT, default_state_dir, find_tool, free_port

SONGS = Path("/usr/share/hyperrogue/music")
PREFERRED_SONG = "hr3-crossroads.ogg"
RELEASE, NAMESPACE = "vibecraft", "vibecraft-system"
DEMO_TENANT = "demo"
TENANT_NAMESPACE = f"vc-{DEMO_TENANT}"  # the chart's api.namespacePrefix default + the tenant
KEYS_SECRET = "vibecraft-api-keys"  # the chart's api.keysSecret default
API_KEY_FILE = "demo-api-key"  # in the cluster's state dir, never in the clone


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m" if sys.stdout.isatty() else f"==> {msg}", flush=True)


def sample_song(work: Path, seconds: int) -> Path:
    """A real song trimmed to `seconds`, else a generated chord-and-drum loop at 120 BPM."""
    out = work / "demo.ogg"
    songs = sorted(SONGS.glob("*.ogg")) if SONGS.is_dir() else []
    if songs:
        src = SONGS / PREFERRED_SONG if (SONGS / PREFERRED_SONG).exists() else songs[0]
        say(f"sample song: {src.name} (first {seconds}s)")
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", str(seconds), "-c:a", "libvorbis", str(out)]
    else:
        say(f"sample song: generated 120 BPM loop ({seconds}s)")
        graph = (f"sine=f=220:d={seconds}[a];sine=f=277:d={seconds}[b];sine=f=330:d={seconds}[c];"
                 f"anoisesrc=d={seconds}:a=0.4,lowpass=f=120,volume='if(lt(mod(t,0.5),0.08),1,0)':eval=frame[k];"
                 "[a][b][c][k]amix=inputs=4[o]")
        cmd = ["ffmpeg", "-v", "error", "-y", "-filter_complex", graph, "-map", "[o]", "-c:a", "libvorbis", str(out)]
    subprocess.run(cmd, check=True)
    return out


def chart_values(lc: LocalCluster, ports: dict[str, int]) -> dict[str, Any]:
    """The demo's values: this cluster's S3 as pods reach it; on a real node the images build-images.sh
    built (what `kind load image-archive` of its archives gives a kind user); on the node agent, whose
    pods are host processes, ports of their own on the host."""
    c = lc.cfg
    s3 = c.pod_s3_endpoint
    values: dict[str, Any] = {
        # The host (the demo, a browser following a presigned link) reaches the same address.
        "s3": {"endpoint": s3, "publicEndpoint": s3, "region": c.s3_region, "bucket": c.bucket,
               "credentials": {"accessKeyId": c.s3_access_key, "secretAccessKey": c.s3_secret_key}},
        "operator": {"maxRunning": 2, "logFormat": "plain"},
        "renderer": {"namespaces": ["default"]},
        "api": {"tenants": [DEMO_TENANT]},
    }
    # Renders get storage keys the S3 server limits to what they read and write (docs/security.md); the
    # bucket-wide key stays with the operator and the API. kubectl renders in `default` read the demo's
    # songs/ and write under videos/demo/ (examples/musicvideo.yaml); the API tenant's read its uploads.
    scoped = {"default": lc.s3_identity("demo-default", read=["songs/"], write=[f"videos/{DEMO_TENANT}/"]),
              TENANT_NAMESPACE: lc.s3_identity(f"tenant-{DEMO_TENANT}", read=[f"uploads/{DEMO_TENANT}/"],
                                               write=[f"videos/{DEMO_TENANT}/"])}
    values["s3"]["namespaceCredentials"] = {ns: {"accessKeyId": key, "secretAccessKey": secret}
                                            for ns, (key, secret) in scoped.items()}
    if c.node == "kubelet":
        values["image"] = {"registry": "localhost/", "tag": version("vibecraft")}
    else:
        values["operator"].update(metricsPort=ports["metrics"], healthPort=ports["health"])
        values["api"]["port"] = ports["api"]
    return values


def helm_install(lc: LocalCluster, values: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(values, f)
    say(f"helm upgrade --install {RELEASE} charts/vibecraft -n {NAMESPACE}")
    lc.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds" / "musicvideo.yaml"))
    # No --wait: the API is not Ready until its key Secret exists (made next); api_ready() waits for it.
    subprocess.run([find_tool("helm"), "upgrade", "--install", RELEASE, str(REPO_ROOT / "charts" / "vibecraft"),
                    "-n", NAMESPACE, "--create-namespace", "-f", f.name, "--kubeconfig", str(lc.cfg.kubeconfig)],
                   check=True)
    lc.kubectl("rollout", "status", "-n", NAMESPACE, f"deploy/{RELEASE}-operator", "--timeout=180s")


def api_base(lc: LocalCluster, ports: dict[str, int]) -> str:
    """Where the host reaches the API: the Service's ClusterIP through kube-proxy on a real node (as a pod
    in the cluster would), the node agent's host port otherwise."""
    if lc.cfg.node != "kubelet":
        return f"http://127.0.0.1:{ports['api']}"
    ip = lc.kubectl("get", "svc", f"{RELEASE}-api", "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}").strip()
    return f"http://{ip}"


def columns(mv: dict[str, Any]) -> str:
    st = mv.get("status", {})
    prog = st.get("progress", {})
    pct = prog.get("percent")
    eta = prog.get("etaSeconds")
    return (f"{mv['metadata']['name']:<10} {st.get('phase', '-'):<10} "
            f"{(f'{pct:.0f}%' if isinstance(pct, (int, float)) else '-'):>5}  {prog.get('stage', '-'):<10} "
            f"{st.get('attempts', 0):>3}  {(f'eta {eta:.0f}s' if isinstance(eta, (int, float)) else ''):<9} "
            f"{prog.get('message', '')[:60]}")


def watch(lc: LocalCluster, name: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
    """Print a row whenever phase/stage/percent changes, like `kubectl get mv -w`.

    The render does not need the API server while it runs; an outage is reported once and waited out,
    as `kubectl get -w` users expect, until `timeout`.
    """
    print(f"{'NAME':<10} {'PHASE':<10} {'PROG':>5}  {'STAGE':<10} {'ATT':>3}  {'ETA':<9} MESSAGE", flush=True)
    last, deadline, down = "", time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        try:
            mv = json.loads(lc.kubectl("get", "mv", name, "-n", "default", "-o", "json"))
        except ClusterError as exc:
            if not down:
                print(f"API server unreachable, retrying ({str(exc).splitlines()[-1][:120]})", flush=True)
            down = True
            time.sleep(poll)
            continue
        if down:
            print("API server back", flush=True)
            down = False
        row = columns(mv)
        if row != last:
            print(row, flush=True)
            last = row
        if mv.get("status", {}).get("phase") in TERMINAL_PHASES:
            return dict(mv)
        time.sleep(poll)
    raise SystemExit(f"render did not finish in {timeout:.0f}s; see kubectl describe mv {name}")


def demo_api_key(apply: Callable[[dict[str, Any]], None], state: Path, namespace: str = NAMESPACE,
                 tenant: str = DEMO_TENANT) -> str:
    """An API key for the demo tenant, made for this machine's demo (the chart ships none).

    The raw key stays in the cluster's state dir (reused by later demos); the Secret holds only its
    SHA-256, as the API expects (`sha256:<hex>`).
    """
    path = state / API_KEY_FILE
    key = path.read_text().strip() if path.exists() else secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEYS_SECRET, "namespace": namespace},
           "stringData": {tenant: "sha256:" + hashlib.sha256(key.encode()).hexdigest()}})
    return key


def api_ready(base: str, key: str, timeout: float = 120) -> None:
    """Wait until the API lists the demo tenant's videos with the key (it reloads keys on an unknown one)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{base}/v1/videos", headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1)
    raise SystemExit(f"the API at {base} did not accept the demo key in {timeout:.0f}s: {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=45, help="length of the sample song")
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    state = default_state_dir()
    lc = LocalCluster.for_user(state)
    cfg = lc.cfg
    if cfg.node == "kubelet":
        say("container images from Dockerfile.renderer and Dockerfile.operator (localcluster/build-images.sh; "
            "first time ~25 min, then seconds)")
        subprocess.run(["bash", str(REPO_ROOT / "localcluster" / "build-images.sh")], check=True)
        say("local cluster (etcd, kube-apiserver, controller-manager, scheduler, kubelet + containerd, kube-proxy, S3)")
    else:
        say("local cluster (etcd, kube-apiserver, controller-manager, scheduler, node agent, S3)")
    lc.up()
    if cfg.node == "kubelet":
        lc.import_images()  # a cluster already running gets images rebuilt since it started
    ports_file = state / "demo-ports.json"
    ports = json.loads(ports_file.read_text()) if ports_file.exists() else {
        "metrics": free_port(), "health": free_port(), "api": free_port()}
    ports_file.write_text(json.dumps(ports))
    helm_install(lc, chart_values(lc, ports))
    key = demo_api_key(lambda obj: apply(lc, obj), state)  # the chart ships no key: the API waits for one

    import boto3

    s3 = boto3.client("s3", endpoint_url=cfg.s3_endpoint, aws_access_key_id=cfg.s3_access_key,
                      aws_secret_access_key=cfg.s3_secret_key, region_name=cfg.s3_region)
    with tempfile.TemporaryDirectory() as work:
        song = sample_song(Path(work), args.seconds)
        s3.upload_file(str(song), cfg.bucket, "songs/demo.ogg")
    say(f"uploaded s3://{cfg.bucket}/songs/demo.ogg; applying examples/musicvideo.yaml")
    lc.kubectl("delete", "mv", "demo", "-n", "default", "--ignore-not-found", "--wait=true")
    lc.kubectl("apply", "-n", "default", "-f", str(REPO_ROOT / "examples" / "musicvideo.yaml"))
    mv = watch(lc, "demo", timeout=1800)
    base = api_base(lc, ports)
    lc.kubectl("rollout", "status", "-n", NAMESPACE, f"deploy/{RELEASE}-api", "--timeout=300s")
    api_ready(base, key, timeout=300)
    status = mv.get("status", {})
    if status.get("phase") != SUCCEEDED:
        print(json.dumps(status.get("lastFailure", {}), indent=2))
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for obj, name in ((f"videos/demo/{VIDEO_NAME}", "demo.mp4"), (f"videos/demo/{THUMBNAIL_NAME}", "demo.jpg")):
        s3.download_file(cfg.bucket, obj, str(args.out / name))
    out = status.get("output", {})
    say(f"done: {args.out / 'demo.mp4'} ({out.get('durationSeconds', '?')} s, {out.get('sizeBytes', '?')} bytes), "
        f"thumbnail {args.out / 'demo.jpg'}; in S3 at {out.get('videoUrl', '')}")
    print(f"export KUBECONFIG={cfg.kubeconfig}   # then: kubectl get mv -A, kubectl describe mv demo")
    print(f"API: {base}  (docs {base}/docs; tenant {DEMO_TENANT!r}, key in {state / API_KEY_FILE})")
    if cfg.node == "kubelet":
        print(f"     (the Service's ClusterIP; from elsewhere: "
              f"kubectl port-forward -n {NAMESPACE} svc/{RELEASE}-api 8080:80)")
    print(f"curl -s -H 'Authorization: Bearer {key}' {base}/v1/videos")
    return 0


def apply(lc: LocalCluster, obj: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(obj, f)
        f.flush()
        lc.kubectl("apply", "-f", f.name)


if __name__ == "__main__":
    sys.exit(main())
