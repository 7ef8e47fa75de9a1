"""POST /v1/videos in a namespace holding 10 000 finished videos, against the same API in an empty one.

Objects must not make the API slower as they pile up: counting a tenant's renders in progress lists
`!vibecraft.io/finished` (the operator labels finished MusicVideos), not the whole namespace. This
bench fills one tenant namespace with FINISHED_VIDEOS MusicVideos labelled finished (as the operator
labels them; no operator runs here, so none renders), then times CREATES sequential creates there
and in an empty tenant namespace (interleaved), and prints p50/p99 of both plus what listing the whole
full namespace costs (the old way). Fails (exit 1) if the p99 in the full namespace is >= 300 ms.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests.harness

import httpx
from bench_api import api_service, cluster_main, kube_tls
from vibecraft_common.resource import API_VERSION, FINISHED, GROUP, KIND, LABEL_FINISHED, PLURAL, VERSION
from vibecraft_localcluster.config import ClusterConfig

from tests.harness import install_crd, kubectl

FINISHED_VIDEOS = 10_000
CREATES = 300  # per namespace
FILL_CONCURRENCY = 32
BUDGET_P99_MS = 300.0


async def fill(cfg: ClusterConfig, namespace: str, count: int) -> tuple[float, float]:
    """`count` finished MusicVideos in `namespace`: seconds it took, and seconds one list of them all takes."""
    body = {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"generateName": "done-", "labels": {LABEL_FINISHED: FINISHED}},
            "spec": {"audio": {"url": "https://example.com/song.mp3"},
                     "output": {"url": f"s3://{cfg.bucket}/videos/bench/done/"}}}
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    queue = iter(range(count))
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=cfg.server, verify=kube_tls(cfg), timeout=60) as kube:
        async def worker() -> None:
            for _ in queue:
                (await kube.post(path, json=body)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
        listed = time.perf_counter()
        (await kube.get(path)).raise_for_status()  # the whole namespace, as the API listed it before
        full_list = time.perf_counter() - listed
    return time.perf_counter() - start, full_list


async def creates(api_url: str, keys: dict[str, str]) -> dict[str, list[float]]:
    """CREATES sequential POST /v1/videos per tenant, interleaved; latencies in ms."""
    out: dict[str, list[float]] = {name: [] for name in keys}
    clients = {name: httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
               for name, key in keys.items()}
    try:
        for _ in range(CREATES):
            for name, client in clients.items():
                start = time.perf_counter()
                resp = await client.post("/v1/videos", json={"audio": {"url": "https://example.com/song.mp3"}})
                out[name].append((time.perf_counter() - start) * 1000)
                resp.raise_for_status()
    finally:
        for client in clients.values():
            await client.aclose()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(cfg: ClusterConfig) -> int:
    suffix = secrets.token_hex(3)
    system_ns = f"bench-system-{suffix}"
    tenants = {"full": f"f{suffix}", "empty": f"e{suffix}"}
    keys = {name: f"bench-{secrets.token_urlsafe(24)}" for name in tenants}
    install_crd(cfg.kubeconfig)
    kubectl(cfg.kubeconfig, "create", "namespace", system_ns)
    for tenant in tenants.values():
        kubectl(cfg.kubeconfig, "create", "namespace", f"bench-{tenant}")
    kubectl(cfg.kubeconfig, "-n", system_ns, "create", "secret", "generic", "vibecraft-api-keys",
            *(f"--from-literal={tenants[n]}=sha256:{hashlib.sha256(k.encode()).hexdigest()}" for n, k in keys.items()))
    server, url = api_service(cfg, system_ns)
    server.env.update({"VIBECRAFT_API_RATE_LIMIT_PER_MINUTE": "100000", "VIBECRAFT_API_RATE_LIMIT_BURST": "10000",
                       "VIBECRAFT_API_MAX_CONCURRENT_RENDERS": "10000"})
    try:
        fill_seconds, full_list = asyncio.run(fill(cfg, f"bench-{tenants['full']}", FINISHED_VIDEOS))
        server.start(timeout=30)
        latencies = asyncio.run(creates(url, {name: keys[name] for name in tenants}))
    finally:
        server.stop(timeout=10)
        kubectl(cfg.kubeconfig, "delete", "namespace", system_ns, *(f"bench-{t}" for t in tenants.values()),
                "--wait=false")
    print(f"{FINISHED_VIDEOS} finished MusicVideos created in {fill_seconds:.0f} s; listing that whole namespace "
          f"(what each create did before the finished label) takes {full_list * 1000:.0f} ms")
    for name, values in latencies.items():
        print(f"  POST /v1/videos, {name:5} namespace: p50 {pct(values, 0.5):6.1f} ms   p99 {pct(values, 0.99):6.1f} ms"
              f"   ({len(values)} sequential creates)")
    full, empty = pct(latencies["full"], 0.99), pct(latencies["empty"], 0.99)
    print(f"  full / empty p99: {full / empty:.2f}x; budget p99 < {BUDGET_P99_MS:.0f} ms in the full namespace")
    if full >= BUDGET_P99_MS:
        print("FAIL: creating a video in a namespace of finished videos is over budget", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    return cluster_main(run, __doc__ or "", "bench-api-create")


if __name__ == "__main__":
    sys.exit(main())
