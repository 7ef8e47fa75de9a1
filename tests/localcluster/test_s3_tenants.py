"""Storage credentials scoped per tenant (issue 17): the local S3 server itself refuses a tenant's
renderer credentials everywhere but that tenant's prefixes, so a tenant who reads the key from a pod
in their namespace still cannot touch another tenant's songs or videos."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3]


def _client(cluster: Cluster, key: str, secret: str) -> Any:
    c = cluster.cfg
    return boto3.client("s3", endpoint_url=c.s3_endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name=c.s3_region)


def _operations(s3: Any, bucket: str, tenant: str) -> dict[str, Callable[[], Any]]:
    """The five things a renderer does with storage, aimed at `tenant`'s objects."""
    song, video = f"uploads/{tenant}/song.ogg", f"videos/{tenant}/v1/video.mp4"
    return {
        "read the song": lambda: s3.get_object(Bucket=bucket, Key=song)["Body"].read(),
        "read the video": lambda: s3.head_object(Bucket=bucket, Key=video),
        "list the videos": lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"videos/{tenant}/"),
        "overwrite the video": lambda: s3.put_object(Bucket=bucket, Key=video, Body=b"forged"),
        "delete the song": lambda: s3.delete_object(Bucket=bucket, Key=song),
    }


def test_a_tenants_credentials_reach_only_its_own_prefixes(cluster: Cluster) -> None:
    bucket, run = cluster.cfg.bucket, uuid.uuid4().hex[:6]
    tenants = {t: f"{t}{run}" for t in ("a", "b")}
    admin = cluster.s3.client()
    creds = {}
    for t, name in tenants.items():
        admin.put_object(Bucket=bucket, Key=f"uploads/{name}/song.ogg", Body=b"song of " + name.encode())
        admin.put_object(Bucket=bucket, Key=f"videos/{name}/v1/video.mp4", Body=b"video of " + name.encode())
        creds[t] = cluster.lc.s3_identity(name, read=[f"uploads/{name}/"], write=[f"videos/{name}/"])
    assert cluster.lc.s3_identity(tenants["a"], read=[], write=[]) == creds["a"]  # idempotent

    refused: dict[str, str] = {}
    for me, other in (("a", "b"), ("b", "a")):
        s3 = _client(cluster, *creds[me])
        for what, op in _operations(s3, bucket, tenants[other]).items():
            try:
                op()
                refused[f"{me} → {other}: {what}"] = "ALLOWED"
            except ClientError as exc:
                refused[f"{me} → {other}: {what}"] = str(exc.response["Error"]["Code"])
        # Its own: the renderer reads its song and writes, reads and lists its videos.
        own = tenants[me]
        s3.get_object(Bucket=bucket, Key=f"uploads/{own}/song.ogg")["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"videos/{own}/v2/video.mp4", Body=b"new")
        s3.head_object(Bucket=bucket, Key=f"videos/{own}/v2/video.mp4")
        assert s3.list_objects_v2(Bucket=bucket, Prefix=f"videos/{own}/")["KeyCount"] == 2
    assert len(refused) == 10 and set(refused.values()) <= {"AccessDenied", "403"}, refused
    # Nothing of b's changed: the admin (the API's bucket-wide key) reads the originals.
    assert admin.get_object(Bucket=bucket, Key=f"videos/{tenants['b']}/v1/video.mp4")["Body"].read() == \
        b"video of " + tenants["b"].encode()
    with pytest.raises(ClientError):  # and a tenant cannot delete even its own upload
        _client(cluster, *creds["a"]).delete_object(Bucket=bucket, Key=f"uploads/{tenants['a']}/song.ogg")
