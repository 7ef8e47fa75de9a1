"""Apply -> Job latency of the operator on a real local cluster, against the bare Job controller.

Both run in this process against one private cluster (etcd, kube-apiserver, kube-controller-manager,
scheduler), so the machine's speed cancels out of the ratio:

  Job controller  - Jobs created; latency = create call sent -> its Pod seen on a watch (the
                    controller-manager reacting to an object: the floor for any controller)
  operator        - MusicVideos created with the real `vibecraft-operator` (unlimited concurrency);
                    latency = create call sent -> its Job seen on a watch

Each is measured twice over BENCH_COUNT (200) objects: paced (one every BENCH_INTERVAL, 0.2 s: a very busy
upload rate; the targets apply here) and as a burst (all at once from 8 clients: how fast a backlog drains).
Faster than ~8/s the Job controller's own client rate limit (20 requests/s; 3 per Job) makes the baseline
queue up, so the paced ratio would flatter the operator.
The scheduler and node agent are stopped first: pods stay Pending, nothing runs and no scheduling
retries load the machine, so only the controllers' reaction time is measured.
A third round (issue 19) loads a second operator (4 may run) with 500 finished and 500 waiting MusicVideos,
then creates 100 more, paced: latency = create call sent -> its status.queuePosition (or Job) on a watch.
Exits 1 if a target is missed: paced p50 <= 300 ms, p95 <= 1 s, p50 ratio to the Job controller <= 3
(paced and burst), operator peak RSS <= 200 MB; with the backlog p95 <= 1 s and peak RSS <= 200 MB.
BENCH_KEEP=1 keeps the logs.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests.harness

from kubernetes import client, config, watch
from vibecraft_common.resource import GROUP, LABEL_NAME, PLURAL, VERSION
from vibecraft_localcluster.cluster import LocalCluster
from vibecraft_localcluster.config import ClusterConfig, Ports

from tests.harness import OperatorProcess, install_crd, kubectl, wait_for

COUNT = int(os.environ.get("BENCH_COUNT", "200"))
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "0.2"))
CREATORS = 8  # concurrent create calls in a burst
TARGETS = {"paced p50 (s)": 0.300, "paced p95 (s)": 1.0, "paced ratio p50": 3.0, "burst ratio p50": 3.0,
           "operator peak RSS (MB)": 200.0, "backlog p95 (s)": 1.0, "backlog operator peak RSS (MB)": 200.0}
BACKLOG_FINISHED = int(os.environ.get("BENCH_BACKLOG_FINISHED", "500"))
BACKLOG_QUEUED = int(os.environ.get("BENCH_BACKLOG_QUEUED", "500"))
BACKLOG_NEW = int(os.environ.get("BENCH_BACKLOG_NEW", "100"))
QUEUE_SETTLE = 30.0  # seconds after the last create before counting start estimates
MODES = ("paced", "burst")


class FirstSeen:
    """Watch one kind in a namespace; note when each key first appears (monotonic seconds)."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str, selector: str, key: Callable[[Any], str | None]) -> None:
        self.seen: dict[str, float] = {}
        self._list, self._ns, self._selector, self._key = list_fn, namespace, selector, key
        self._watch = watch.Watch()
        self._ready, self._stopped = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("watch did not start")

    def _run(self) -> None:
        listed = self._list(self._ns, label_selector=self._selector)
        version = listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else listed.metadata.resource_version
        self._ready.set()
        try:
            while not self._stopped.is_set():
                # The list is read from etcd; the watch is served from the API server's watch cache, which
                # for a kind nobody wrote lately may be behind that version ("Too large resource version",
                # an ERROR event that ends the stream): watch again from the same version until it serves.
                try:
                    for event in self._watch.stream(self._list, self._ns, label_selector=self._selector,
                                                    resource_version=version, timeout_seconds=900):
                        obj = event.get("object")
                        if event.get("type") == "ERROR" or obj is None:
                            break
                        key = self._key(obj)
                        if key and key not in self.seen:
                            self.seen[key] = time.monotonic()
                        meta = obj.get("metadata", {}) if isinstance(obj, dict) else None
                        version = meta.get("resourceVersion", version) if meta is not None else obj.metadata.resource_version
                except client.ApiException as exc:  # the client raises some ERROR events (504 above, 410)
                    if exc.status != 504:
                        raise
                time.sleep(0.05)
        except Exception:
            # A stopped watch stays blocked on its connection until the cluster goes down under it.
            if not self._stopped.is_set():
                raise

    def wait(self, keys: Iterable[str], timeout: float) -> None:
        keys = list(keys)

        def missing() -> list[str]:
            return [k for k in keys if k not in self.seen]

        wait_for(lambda: not missing(), timeout=timeout, interval=0.05,
                 what=lambda: f"all {len(keys)} to appear ({len(missing())} never did, e.g. {missing()[:3]})")

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


def create_all(names: list[str], create: Callable[[str], None], mode: str) -> dict[str, float]:
    """Create every object (paced from one client, or a burst from CREATORS); when each call was sent."""
    sent: dict[str, float] = {}

    def one(name: str) -> None:
        sent[name] = time.monotonic()
        create(name)

    if mode == "burst":
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(one, names))
    else:
        start = time.monotonic()
        for i, name in enumerate(names):
            time.sleep(max(0.0, start + i * INTERVAL - time.monotonic()))
            one(name)
    return sent


def measure(names: list[str], create: Callable[[str], None], watcher: FirstSeen, mode: str) -> list[float]:
    """Latencies (sorted, seconds) from each create call to its child appearing."""
    sent = create_all(names, create, mode)
    watcher.wait(names, timeout=300)
    watcher.stop()
    return sorted(watcher.seen[k] - sent[k] for k in names)


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def job_controller(api: client.ApiClient, ns: str, mode: str) -> list[float]:
    """The floor: Job create -> Pod created by the controller-manager's Job controller."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    pods = FirstSeen(core.list_namespaced_pod, ns, "job-name", lambda p: (p.metadata.labels or {}).get("job-name"))

    def create(name: str) -> None:
        batch.create_namespaced_job(ns, {
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "containers": [{"name": "render", "image": "vibecraft/renderer:bench",
                                "resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                                              "limits": {"cpu": "1", "memory": "512Mi"}}}]}}}})

    return measure([f"job-{i:03d}" for i in range(COUNT)], create, pods, mode)


def operator(api: client.ApiClient, ns: str, mode: str) -> list[float]:
    """MusicVideo create -> Job created by vibecraft-operator."""
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    jobs = FirstSeen(batch.list_namespaced_job, ns, LABEL_NAME, lambda j: (j.metadata.labels or {}).get(LABEL_NAME))

    def create(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "MusicVideo", "metadata": {"name": name},
            "spec": {"audio": {"url": "s3://vibecraft/songs/bench.ogg"}, "output": {"url": f"s3://vibecraft/bench/{name}/"}}})

    return measure([f"mv-{i:03d}" for i in range(COUNT)], create, jobs, mode)


def backlog(lc: LocalCluster, api: client.ApiClient, state: Path) -> tuple[list[float], tuple[float, float, float], int]:
    """BACKLOG_FINISHED finished and BACKLOG_QUEUED waiting MusicVideos (4 may run), then BACKLOG_NEW more,
    paced: latency = create call sent -> its status.queuePosition (or Job) seen on a watch. Returns the
    latencies, the operator's usage and how many queued renders had an estimatedStartSeconds by then."""
    from vibecraft_operator.jobs import spec_hash

    ns = "mv-backlog"
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": ns}})
    kubectl(lc.cfg.kubeconfig, "wait", "--for=create", "serviceaccount/default", "-n", ns, "--timeout=60s")
    core.create_namespaced_service_account(ns, {"metadata": {"name": "vibecraft-renderer"}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "vibecraft-s3"}, "stringData": {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}})

    def body(name: str) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MusicVideo", "metadata": {"name": name},
                "spec": {"audio": {"url": "s3://vibecraft/songs/bench.ogg"},
                         "output": {"url": f"s3://vibecraft/bench/{name}/"}}}

    def finished(name: str) -> None:  # as the operator leaves a render that succeeded
        created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(name))
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name, {"status": {
            "phase": "Succeeded", "specHash": spec_hash(created["spec"]), "observedGeneration": 1, "attempts": 1,
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:02:00Z"}})

    print(f"backlog: {BACKLOG_FINISHED} finished MusicVideos ...", flush=True)
    with ThreadPoolExecutor(CREATORS) as pool:
        list(pool.map(finished, [f"done-{i:04d}" for i in range(BACKLOG_FINISHED)]))
    op = OperatorProcess(lc.cfg.kubeconfig, [ns], state / "operator-backlog.log",
                         env={"VIBECRAFT_LOG_FORMAT": "json", "VIBECRAFT_MAX_RUNNING": "4",
                              "VIBECRAFT_FETCH_OUTPUTS": "false"}, args=("--standalone",))
    try:
        op.start(timeout=60)
        print(f"backlog: {BACKLOG_QUEUED} waiting MusicVideos ...", flush=True)
        waiting = [f"wait-{i:04d}" for i in range(BACKLOG_QUEUED)]
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(lambda n: custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(n)), waiting))

        def phases() -> dict[str, str]:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}

        def all_waiting() -> bool:
            now = phases()
            return all(now.get(n) in ("Queued", "Running") for n in waiting)

        wait_for(all_waiting, timeout=300, interval=1, what="the waiting renders to be queued")
        print(f"backlog: {BACKLOG_NEW} new MusicVideos, paced ...", flush=True)

        def list_mvs(namespace: str, **kw: Any) -> Any:
            return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw)

        def placed(obj: Any) -> str | None:
            status = obj.get("status") or {}
            placed = status.get("queuePosition") is not None or status.get("jobName")
            return str(obj["metadata"]["name"]) if placed else None

        latencies = measure([f"new-{i:03d}" for i in range(BACKLOG_NEW)],
                            lambda n: custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(n)),
                            FirstSeen(list_mvs, ns, "", placed), "paced")
        time.sleep(QUEUE_SETTLE)
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        estimated = sum(1 for i in items if (i.get("status") or {}).get("estimatedStartSeconds") is not None)
        return latencies, usage(op.pid), estimated
    finally:
        op.stop(timeout=60)


def usage(pid: int) -> tuple[float, float, float]:
    """A process's RSS now and peak (MB), CPU seconds so far."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024, cpu


def run(lc: LocalCluster, state: Path) -> tuple[dict[str, list[float]], dict[str, list[float]], tuple[float, float, float],
                                                tuple[list[float], tuple[float, float, float], int]]:
    lc.stop("node-agent")
    lc.stop("kube-scheduler")
    install_crd(lc.cfg.kubeconfig)
    api = config.new_client_from_config(str(lc.cfg.kubeconfig))
    core = client.CoreV1Api(api)
    for ns in [f"{who}-{mode}" for who in ("jobs", "mv") for mode in MODES]:
        core.create_namespace({"metadata": {"name": ns}})
        # Pods wait for the namespace's default ServiceAccount (made by the controller-manager): not measured.
        kubectl(lc.cfg.kubeconfig, "wait", "--for=create", "serviceaccount/default", "-n", ns, "--timeout=60s")
    for mode in MODES:
        core.create_namespaced_service_account(f"mv-{mode}", {"metadata": {"name": "vibecraft-renderer"}})
        core.create_namespaced_secret(f"mv-{mode}", {"metadata": {"name": "vibecraft-s3"}, "stringData": {
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}})
    op = OperatorProcess(lc.cfg.kubeconfig, [f"mv-{mode}" for mode in MODES], state / "operator.log",
                         env={"VIBECRAFT_LOG_FORMAT": "json", "VIBECRAFT_MAX_RUNNING": "0",
                              "VIBECRAFT_FETCH_OUTPUTS": "false"},
                         args=("--standalone", *os.environ.get("BENCH_OPERATOR_ARGS", "").split()))
    try:
        op.start(timeout=60)
        base, ours = {}, {}
        for mode in MODES:
            print(f"{mode}: {COUNT} Jobs ...", flush=True)
            base[mode] = job_controller(api, f"jobs-{mode}", mode)
            print(f"{mode}: {COUNT} MusicVideos ...", flush=True)
            ours[mode] = operator(api, f"mv-{mode}", mode)
            time.sleep(3)  # the status patches and events after each Job land before the next round
        used = usage(op.pid)
    finally:
        op.stop(timeout=30)
    return base, ours, used, backlog(lc, api, state)


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="vibecraft-bench-"))
    try:
        lc = LocalCluster(ClusterConfig(state_dir=state / "cluster", ports=Ports.random(), node_name="bench-node"))
        print(f"starting a private local cluster in {state} ...", flush=True)
        lc.up()
        try:
            base, ours, (rss, peak, cpu), (lag, (_, backlog_peak, _), estimated) = run(lc, state)
        finally:
            lc.down()
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {state} (operator.log, cluster logs)")
        else:
            shutil.rmtree(state, ignore_errors=True)

    print(f"\n{COUNT} objects per round; latency = create call sent -> child object seen on a watch")
    print(f"paced = one every {INTERVAL * 1e3:.0f} ms from one client; burst = all at once from {CREATORS} clients")
    figures: dict[str, float] = {}
    for mode in MODES:
        b, o = base[mode], ours[mode]
        for who, values in (("Job controller (Job -> Pod)      ", b), ("vibecraft-operator (MV -> Job)   ", o)):
            print(f"  {mode:>5} {who} p50 {pct(values, 50) * 1e3:6.0f} ms   p95 {pct(values, 95) * 1e3:6.0f} ms"
                  f"   max {values[-1] * 1e3:6.0f} ms")
        print(f"  {mode:>5} ratio operator / Job controller: p50 {pct(o, 50) / pct(b, 50):.2f}x"
              f"   p95 {pct(o, 95) / pct(b, 95):.2f}x")
        figures[f"{mode} p50 (s)"], figures[f"{mode} p95 (s)"] = pct(o, 50), pct(o, 95)
        figures[f"{mode} ratio p50"] = pct(o, 50) / pct(b, 50)
    figures["operator peak RSS (MB)"] = peak
    queued = BACKLOG_QUEUED + BACKLOG_NEW - 4
    print(f"  backlog: {BACKLOG_FINISHED} finished + {BACKLOG_QUEUED} waiting MusicVideos (4 may run), then "
          f"{BACKLOG_NEW} more one every {INTERVAL * 1e3:.0f} ms: MV -> queue place (or Job) p50 "
          f"{pct(lag, 50) * 1e3:.0f} ms   p95 {pct(lag, 95) * 1e3:.0f} ms   max {lag[-1] * 1e3:.0f} ms; operator peak "
          f"RSS {backlog_peak:.0f} MB; {estimated}/{queued} queued with a start estimate {QUEUE_SETTLE:.0f} s later")
    figures["backlog p95 (s)"], figures["backlog operator peak RSS (MB)"] = pct(lag, 95), backlog_peak
    print(f"  operator after {len(MODES) * COUNT} renders started: RSS {rss:.0f} MB (peak {peak:.0f} MB), "
          f"{cpu:.1f} CPU-s ({cpu / (len(MODES) * COUNT) * 1e3:.0f} ms per render)")
    failed = False
    for name, target in TARGETS.items():
        ok = figures[name] <= target
        failed |= not ok
        print(f"{name:>24}: {figures[name]:8.3f} (target <= {target:g}) {'ok' if ok else 'MISSED'}")
    print(json.dumps({"bench": "operator_latency", **{k: round(v, 4) for k, v in figures.items()}}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
