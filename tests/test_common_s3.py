"""vibecraft_common.s3: the one meaning of `s3://bucket/key` and the one client setup."""

from __future__ import annotations

import pytest
from vibecraft_common.s3 import S3Url, S3UrlError, s3_client


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [
        ("s3://vibecraft/videos/demo/video.mp4", "vibecraft", "videos/demo/video.mp4"),
        ("s3://vibecraft/videos/demo/", "vibecraft", "videos/demo/"),
        ("s3://vibecraft/", "vibecraft", ""),
        ("s3://vibecraft", "vibecraft", ""),
        ("S3://vibecraft/a", "vibecraft", "a"),
        # keys are verbatim: no query, fragment, percent-decoding or slash-squashing
        ("s3://b/a b?x=1#frag%20", "b", "a b?x=1#frag%20"),
        ("s3://b//lead", "b", "/lead"),
    ],
)
def test_parse(url: str, bucket: str, key: str) -> None:
    assert S3Url.parse(url) == S3Url(bucket, key)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/x", "not an s3:// URL"),
        ("s3:/b/k", "not an s3:// URL"),
        ("b/k", "not an s3:// URL"),
        ("", "not an s3:// URL"),
        ("s3:///k", "without bucket"),
        ("s3://", "without bucket"),
    ],
)
def test_parse_refuses(url: str, message: str) -> None:
    with pytest.raises(S3UrlError, match=message) as info:
        S3Url.parse(url)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "url", ["s3://vibecraft/videos/demo/video.mp4", "s3://vibecraft/", "s3://b/a b?x=1#f", "s3://b//lead"]
)
def test_str_round_trip(url: str) -> None:
    assert str(S3Url.parse(url)) == url
    loc = S3Url("b", "k/x.mp4")
    assert S3Url.parse(str(loc)) == loc


def test_join_and_dir_key() -> None:
    assert S3Url("b", "p").join("video.mp4") == S3Url("b", "p/video.mp4")
    assert S3Url("b", "p/").join("video.mp4") == S3Url("b", "p/video.mp4")
    assert S3Url("b").join("video.mp4") == S3Url("b", "video.mp4")
    assert (S3Url("b", "a/b").dir_key, S3Url("b", "a/b/").dir_key, S3Url("b").dir_key) == ("a/b/", "a/b/", "")


def test_client_config() -> None:
    """No network: building a client only reads its configuration."""
    local = s3_client("http://127.0.0.1:8333", "eu-west-1", retries=5, connect_timeout=3, checksums="when_required",
                      access_key_id="id", secret_access_key="secret")  # fmt: skip
    config = local.meta.config
    assert local.meta.endpoint_url == "http://127.0.0.1:8333" and local.meta.region_name == "eu-west-1"
    assert config.s3["addressing_style"] == "path"  # a self-hosted endpoint has no per-bucket host names
    assert config.retries == {"total_max_attempts": 6, "mode": "standard"}  # 5 retries after the first attempt
    assert (config.connect_timeout, config.read_timeout, config.signature_version) == (3, 60, "s3v4")
    assert config.request_checksum_calculation == "when_required"
    assert s3_client(region="us-east-1").meta.config.s3["addressing_style"] == "auto"
    assert s3_client("http://h:1", addressing_style="virtual").meta.config.s3["addressing_style"] == "virtual"
    with pytest.raises(ValueError, match="both"):
        s3_client(access_key_id="id")
