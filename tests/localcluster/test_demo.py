"""`make demo`'s own parts: the watcher outlives an API server outage; the demo makes its API key."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from vibecraft_api.auth import digest, parse_secret
from vibecraft_localcluster import demo
from vibecraft_localcluster.cluster import ClusterError

from tests.conftest import Cluster


class FlakyCluster:
    """kubectl answers: the API server is down for `outage` calls, then the render has succeeded."""

    def __init__(self, outage: int) -> None:
        self.outage, self.calls = outage, 0

    def kubectl(self, *args: str) -> str:
        self.calls += 1
        if self.calls <= self.outage:
            raise ClusterError("kubectl get mv demo: The connection to the server 127.0.0.1:16443 was refused")
        return json.dumps({"metadata": {"name": "demo"}, "status": {"phase": "Succeeded", "attempts": 1}})


def test_watch_carries_on_through_an_api_server_outage(capsys: pytest.CaptureFixture[str]) -> None:
    lc: Any = FlakyCluster(outage=3)
    mv = demo.watch(lc, "demo", timeout=30, poll=0.01)
    assert mv["status"]["phase"] == "Succeeded" and lc.calls == 4
    out = capsys.readouterr().out
    assert out.count("API server unreachable, retrying") == 1 and "API server back" in out


def test_watch_gives_up_at_its_deadline_with_a_message() -> None:
    lc: Any = FlakyCluster(outage=10**9)
    with pytest.raises(SystemExit, match="render did not finish"):
        demo.watch(lc, "demo", timeout=0.2, poll=0.01)


def test_demo_key_is_made_here_and_kept_as_a_digest(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    def apply(obj: dict[str, Any]) -> None:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))

    key = demo.demo_api_key(apply, tmp_path, namespace=namespace)
    assert len(key) >= 24 and (tmp_path / demo.API_KEY_FILE).stat().st_mode & 0o077 == 0
    data = json.loads(cluster.kubectl("get", "secret", demo.KEYS_SECRET, "-n", namespace, "-o", "json").stdout)["data"]
    assert key not in base64.b64decode(data[demo.DEMO_TENANT]).decode()  # only the digest is stored
    assert parse_secret(data, "vc-") == {digest(key): demo.DEMO_TENANT}
    assert demo.demo_api_key(apply, tmp_path, namespace=namespace) == key  # a later demo keeps the key
