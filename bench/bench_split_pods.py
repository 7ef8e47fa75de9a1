"""A split render through the operator and real pods (issue 20, part 2): what bench_split.py measures
with processes, here with `spec.parallelism` on a real cluster (kube-apiserver, the kubelet with
containerd + runc, the renderer image built from Dockerfile.renderer, SeaweedFS as S3).

One 10-minute song (real music when available, 1280x720 30 fps ultrafast) rendered three times, one
MusicVideo each, one after the other on the one 2-core node:

  parallelism 1   one pod with resources.cpu 2 (the whole node)
  parallelism 2   prepare, 2 chunk pods of 1 CPU each, join
  parallelism 4   prepare, 4 chunk pods of 500m each, join

Every pod of a render gets the same CPU (its CFS quota): a split render's prepare and join pods get
the chunks' share, as the operator gives them. Printed per render: wall time from `kubectl apply` to
Succeeded, the CPU-seconds of all its pods (each renderer logs its own and its ffmpeg children's
CPU when it exits), their ratio to the one-pod render (target <= 1.15: splitting must not waste
work), and the pods' own wall times. From the one-pod render's composing time per 30 s segment and
the split renders' prepare / join pods, it projects a 60-minute song on N 2-core nodes (one chunk
pod per node, each with the whole node):

  wall(N) = prepare + ceil(120 / N) x segment + join + between stages

with prepare and join (at 1 CPU: pessimistic for a node of its own) scaled from 10 to 60 minutes, and
`between stages` what the parallelism-2 render took beyond its three stages' pods (the operator
noticing a stage finished, creating the next Job, scheduling, container start), measured here.

    python bench/bench_split_pods.py [--minutes 10] [--keep DIR]
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests.conftest
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_renderer import FPS, HEIGHT, WIDTH, make_song
from bench_split import song_args
from kubernetes import client
from vibecraft_common.resource import GROUP, LABEL_NAME, PLURAL, VERSION

from tests.conftest import Cluster, new_namespace, provision_renders, start_cluster
from tests.harness import OperatorProcess, install_crd, wait_for

TARGET_WORK_RATIO = 1.15
SEGMENT_SECONDS = 30.0
RUNS = ((1, "2"), (2, "1"), (4, "500m"))  # parallelism, CPU of each pod
CPU_LINE = re.compile(r"cpu ([0-9.]+) s\)")  # the renderer's last lines: "... done in 9.1 s (cpu 15.2 s) ..."
COMPOSING = re.compile(r"stage times: .*composing ([0-9.]+)s")


def render(cluster: Cluster, custom: client.CustomObjectsApi, core: client.CoreV1Api, ns: str, name: str,
           song_url: str, parallelism: int, cpu: str) -> dict[str, Any]:
    """Apply one MusicVideo and wait for it; its wall time and its pods' CPU, wall and start-up."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MusicVideo", "metadata": {"name": name},
            "spec": {"audio": {"url": song_url}, "output": {"url": f"s3://{cluster.s3.bucket}/bench/{name}/"},
                     "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS}, "parallelism": parallelism,
                     "resources": {"cpu": cpu}, "deadlineSeconds": 7200}}  # fmt: skip
    start = time.perf_counter()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def phase() -> str:
        mv = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return str((mv.get("status") or {}).get("phase") or "")

    wait_for(lambda: phase() in ("Succeeded", "Failed"), timeout=7200, interval=1.0, what=f"{name} to finish")
    wall = time.perf_counter() - start
    if phase() != "Succeeded":
        mv = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        raise SystemExit(f"{name} failed: {json.dumps(mv.get('status'))[:2000]}")
    pods = []
    for pod in core.list_namespaced_pod(ns, label_selector=f"{LABEL_NAME}={name}").items:
        log = core.read_namespaced_pod_log(pod.metadata.name, ns)
        cpu_s = sum(float(v) for v in CPU_LINE.findall(log))
        state = pod.status.container_statuses[0].state.terminated
        composing = COMPOSING.search(log)
        pods.append({"pod": pod.metadata.name, "job": pod.metadata.labels.get("batch.kubernetes.io/job-name", ""),
                     "cpu": cpu_s, "wall": (state.finished_at - state.started_at).total_seconds(),
                     "composing": float(composing.group(1)) if composing else 0.0})  # fmt: skip
    return {"parallelism": parallelism, "cpuPerPod": cpu, "wall": wall, "cpu": sum(p["cpu"] for p in pods),
            "pods": pods}


def main() -> int:
    args, work, seconds = song_args(__doc__, "vibecraft-bench-pods-", "keep the cluster's state and the song here")
    song = make_song(work / "song.ogg", seconds)
    lc = start_cluster(work / "cluster", "kubelet", "bench-node")
    operator: OperatorProcess | None = None
    try:
        cluster = Cluster(lc)
        install_crd(cluster.kubeconfig)
        ns = new_namespace(cluster, "bench")
        provision_renders(cluster, cluster.s3, ns)
        cluster.s3.client().upload_file(str(song), cluster.s3.bucket, "bench/song.ogg")
        env = {**cluster.operator_env(), "VIBECRAFT_LOG_FORMAT": "plain", "VIBECRAFT_MAX_RUNNING": "4",
               "VIBECRAFT_MAX_PARALLELISM": "4", "VIBECRAFT_RENDERER_COMMAND": ""}
        operator = OperatorProcess(cluster.kubeconfig, [ns], work / "operator.log", env=env)
        operator.start()
        api = cluster.api_client()
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        rows = [render(cluster, custom, core, ns, f"p{p}", f"s3://{cluster.s3.bucket}/bench/song.ogg", p, cpu)
                for p, cpu in RUNS]
    finally:
        if operator is not None:
            operator.stop()
        lc.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    one = rows[0]
    print(f"\n{seconds / 60:.1f}-minute song, {WIDTH}x{HEIGHT}@{FPS} ultrafast, through the operator on one 2-core "
          "real node (kubelet + containerd + runc)")
    print(f"  {'parallelism':>11}  {'CPU/pod':>7}  {'pods':>4}  {'wall':>8}  {'CPU':>8}  {'CPU / one pod':>13}  "
          f"{'prepare | chunks (slowest) | join':>34}")
    ok = True
    for row in rows:
        ratio = row["cpu"] / one["cpu"]
        split = row["parallelism"] > 1
        mark = "" if not split else ("ok" if ratio <= TARGET_WORK_RATIO else "MISSED")
        ok = ok and (not split or ratio <= TARGET_WORK_RATIO)
        stages = ""
        if split:
            by_job = {suffix: [p for p in row["pods"] if p["job"].endswith(suffix)] for suffix in ("-p", "-s", "-j")}
            stages = (f"{max(p['wall'] for p in by_job['-p']):6.1f} | {max(p['wall'] for p in by_job['-s']):6.1f} | "
                      f"{max(p['wall'] for p in by_job['-j']):5.1f}")
        print(f"  {row['parallelism']:>11}  {row['cpuPerPod']:>7}  {len(row['pods']):>4}  {row['wall']:7.1f}s  "
              f"{row['cpu']:7.1f}s  {ratio:12.2f}x  {stages:>34}  {mark}")
    print(f"  work ratio target <= {TARGET_WORK_RATIO} (CPU-seconds of all the split render's pods / the one pod's)")

    n_segments = math.ceil(seconds / SEGMENT_SECONDS)
    per_segment = one["pods"][0]["composing"] / n_segments  # a 30 s segment with a 2-core node to itself
    two = rows[1]
    prepare = next(p["wall"] for p in two["pods"] if p["job"].endswith("-p"))
    join = next(p["wall"] for p in two["pods"] if p["job"].endswith("-j"))
    chunks = max(p["wall"] for p in two["pods"] if p["job"].endswith("-s"))
    between = two["wall"] - prepare - chunks - join
    scale = 3600.0 / seconds
    long_segments = math.ceil(3600.0 / SEGMENT_SECONDS)
    print("\nprojection, 60-minute song on N 2-core nodes, one chunk pod each with the whole node:")
    print(f"  wall(N) = prepare + ceil({long_segments} / N) x segment + join + between stages")
    print(f"  measured for {seconds / 60:.1f} min (x{scale:.2f} for 60 min; prepare and join at parallelism 2, 1 CPU): "
          f"prepare {prepare:.1f} s, join {join:.1f} s, segment {per_segment:.1f} s (30 s of video, 2 CPUs), "
          f"between stages {between:.1f} s")
    for n in (1, 2, 4, 8, 16):
        total = prepare * scale + math.ceil(long_segments / n) * per_segment + join * scale + between
        print(f"  N = {n:>2}: {total:7.0f} s  ({total / 3600.0:.2f}x the song)")
    print(json.dumps({"bench": "split_pods", **{f"p{r['parallelism']} work ratio": round(r["cpu"] / one["cpu"], 3)
                                                for r in rows}}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
