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


def test_demo_renders_get_storage_keys_limited_to_their_prefixes(cluster: Cluster) -> None:
    """The demo's render namespaces (kubectl's `default`, the API tenant's) get keys the S3 server limits;
    the bucket-wide key stays with the operator and the API."""
    import boto3
    from botocore.exceptions import ClientError

    creds = demo.chart_values(cluster.lc, {"metrics": 0, "health": 0, "api": 0})["s3"]["namespaceCredentials"]
    assert set(creds) == {"default", demo.TENANT_NAMESPACE}
    bucket = cluster.s3.bucket
    cluster.s3.client().put_object(Bucket=bucket, Key="songs/demo-test.ogg", Body=b"song")
    for ns, can_read, can_write in (("default", "songs/demo-test.ogg", "videos/demo/t/video.mp4"),
                                    (demo.TENANT_NAMESPACE, None, "videos/demo/t2/video.mp4")):
        scoped = boto3.client("s3", endpoint_url=cluster.s3.endpoint, region_name=cluster.s3.region,
                              aws_access_key_id=creds[ns]["accessKeyId"],
                              aws_secret_access_key=creds[ns]["secretAccessKey"])
        assert creds[ns]["accessKeyId"] != cluster.s3.access_key
        if can_read:
            assert scoped.get_object(Bucket=bucket, Key=can_read)["Body"].read() == b"song"
        scoped.put_object(Bucket=bucket, Key=can_write, Body=b"mp4")
        with pytest.raises(ClientError, match="AccessDenied"):
            scoped.put_object(Bucket=bucket, Key="videos/alice/x/video.mp4", Body=b"x")
        with pytest.raises(ClientError, match="AccessDenied"):
            scoped.get_object(Bucket=bucket, Key="uploads/alice/song.ogg")
