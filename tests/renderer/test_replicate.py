"""The replicate backend against a local fake of Replicate's HTTP API, with the real client."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from vibecraft_common.resource import (
    ENV_EGRESS_ALLOW,
    ENV_REPLICATE_MAX_PREDICTIONS,
    EXIT_REPLICATE_BUDGET,
    EXIT_REPLICATE_FAILED,
)
from vibecraft_renderer import visuals_replicate
from vibecraft_renderer.errors import ReplicateBudgetError, ReplicateFailedError
from vibecraft_renderer.visuals_replicate import ImageRequest, ReplicateImages

from tests.fakes.replicate_server import FakeReplicate

from .helpers import count_frames, ffprobe, frame_signals, run_render

ARGS = ["--backend", "replicate", "--prompt", "neon city at night", "--width", "320", "--height", "180",
        "--fps", "24", "--cut-every", "beat", "-q"]  # fmt: skip


# The fake serves its images from loopback, which the renderer's egress guard refuses unless allow-listed.
LOOPBACK_ALLOWED = {ENV_EGRESS_ALLOW: "127.0.0.1/32"}


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the image downloads of the in-process tests (renders in a subprocess get env_for's env)."""
    monkeypatch.setenv(ENV_EGRESS_ALLOW, LOOPBACK_ALLOWED[ENV_EGRESS_ALLOW])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeReplicate]:
    with FakeReplicate(throttle_first=1, retry_after="1") as server:
        yield server


def env_for(fake: FakeReplicate, **extra: str) -> dict[str, str]:
    return {"REPLICATE_BASE_URL": fake.url, "REPLICATE_API_TOKEN": fake.token, "REPLICATE_POLL_INTERVAL": "0.05",
            **LOOPBACK_ALLOWED, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def first_render(fake: FakeReplicate, click120: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "out"
    res = run_render([str(click120[0]), "-o", str(out), *ARGS], env=env_for(fake))
    assert res.returncode == 0, res.stderr
    return out


def test_render_with_throttling_and_prefer_wait(fake: FakeReplicate, first_render: Path) -> None:
    assert fake.stats.throttled == 1  # first create got 429 + Retry-After, and was retried
    assert fake.stats.creates >= 2
    assert fake.stats.prefer_wait == fake.stats.creates
    assert fake.stats.unauthorized == 0
    assert fake.stats.files_served == fake.stats.creates
    cached = list((first_render / "cache" / "replicate").glob("*.img"))
    assert len(cached) == fake.stats.creates
    prompts = [i["prompt"] for i in fake.stats.inputs]
    assert all(p.startswith("neon city at night, ") for p in prompts)
    video = first_render / "video.mp4"
    streams = {s["codec_type"]: s for s in ffprobe(video)["streams"]}
    assert streams["video"]["width"] == 320 and streams["audio"]["codec_name"] == "aac"
    assert count_frames(video) == 240


def test_cuts_show_in_the_picture_on_beats(first_render: Path) -> None:
    """Each cut switches image: the big frame-to-frame changes are at planned cut frames."""
    analysis = json.loads((first_render / "analysis.json").read_text())
    cut_frames = np.round(np.array(analysis["cuts"]) * 24).astype(int)
    _, diff = frame_signals(first_render / "video.mp4")
    threshold = max(8.0, 4 * float(np.median(diff[1:])))
    jumps = np.flatnonzero(diff > threshold)
    assert len(jumps) >= len(cut_frames) // 2
    assert all(np.min(np.abs(cut_frames - j)) <= 1 for j in jumps), (jumps, cut_frames)


def test_retry_uses_the_cache(fake: FakeReplicate, first_render: Path, click120: tuple[Path, np.ndarray]) -> None:
    before = fake.stats.creates
    (first_render / "video.mp4").unlink()
    res = run_render([str(click120[0]), "-o", str(first_render), *ARGS], env=env_for(fake))
    assert res.returncode == 0, res.stderr
    assert fake.stats.creates == before
    assert (first_render / "video.mp4").exists()


def test_data_uri_outputs(fake: FakeReplicate, click100: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    served = fake.stats.files_served
    res = run_render([str(click100[0]), "-o", str(tmp_path / "v.mp4"), *ARGS, "--model", "fake/datauri-model"],
                     env=env_for(fake))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert fake.stats.files_served == served  # images came inline
    assert count_frames(tmp_path / "v.mp4") == round(9.0 * 24)


def test_failing_model(fake: FakeReplicate, click100: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), *ARGS, "--model", "fake/fail-model"],
                     env=env_for(fake, VIBECRAFT_TERMINATION_LOG=str(log)))  # fmt: skip
    assert res.returncode == EXIT_REPLICATE_FAILED
    assert "CUDA out of memory" in log.read_text()
    assert "fake/fail-model" in res.stderr
    assert not (tmp_path / "out" / "video.mp4").exists()


def test_missing_token(click100: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), *ARGS],
                     env={"REPLICATE_API_TOKEN": "", "VIBECRAFT_TERMINATION_LOG": str(log)})  # fmt: skip
    assert res.returncode == EXIT_REPLICATE_FAILED
    assert "REPLICATE_API_TOKEN" in log.read_text()


def test_wrong_token_is_a_clear_failure(fake: FakeReplicate, tmp_path: Path) -> None:
    images = ReplicateImages(str(tmp_path / "cache"), tmp_path, token="r8_wrong", base_url=fake.url)
    req = ImageRequest(0, 0, "a prompt", 1, "16:9", "fake/model")
    with pytest.raises(ReplicateFailedError, match="401"):
        images.generate([req])


def test_create_retry_honours_retry_after(tmp_path: Path) -> None:
    """The client does not retry POST /predictions on 429; we do, sleeping what Retry-After says."""
    slept: list[float] = []
    with FakeReplicate(throttle_first=2, retry_after="7") as server:
        images = ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                                 sleep=slept.append)  # fmt: skip
        req = ImageRequest(0, 0, "a prompt", 1, "16:9", "fake/model")
        files = images.generate([req, req])  # duplicate requests are generated once
        assert server.stats.throttled == 2 and server.stats.creates == 1
    assert slept[:2] == [7.0, 7.0]
    assert files[req.key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cache" / "replicate" / f"{req.key}.img").exists()


def test_version_reference_uses_the_predictions_endpoint(tmp_path: Path) -> None:
    with FakeReplicate(throttle_first=0) as server:
        images = ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                                 sleep=lambda s: None)  # fmt: skip
        req = ImageRequest(1, 0, "p", 2, "1:1", "owner/model:abcdef123456")
        images.generate([req])
        assert server.stats.creates == 1
        pred = next(iter(server.predictions.values()))
        assert pred["version"] == "abcdef123456"


def test_a_prediction_that_does_not_finish_is_canceled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past PREDICTION_TIMEOUT_S the render fails, and the prediction is canceled: left alone it would
    run (and bill) until Replicate's own limit."""
    monkeypatch.setattr(visuals_replicate, "PREDICTION_TIMEOUT_S", 0.3)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    with FakeReplicate(throttle_first=0) as server:
        images = ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                                 sleep=time.sleep)  # fmt: skip
        req = ImageRequest(0, 0, "a prompt", 1, "16:9", "fake/hang-forever")
        with pytest.raises(ReplicateFailedError, match=r"did not finish in 0 s \(canceled\)"):
            images.generate([req])
        assert server.stats.creates == 1 and server.stats.cancels == 1
        assert [p["status"] for p in server.predictions.values()] == ["canceled"]


def test_a_huge_output_image_fails_the_render_without_being_read(tmp_path: Path) -> None:
    """A model (the tenant's pick) answering with 1 GiB: the download stops at MAX_IMAGE_BYTES while
    streaming, the render fails as ReplicateFailed, and memory stays bounded: a child process running the
    Replicate backend peaks under 200 MB (measured 85 MB; the server had sent ~55 MiB of the 1 GiB)."""
    with FakeReplicate(throttle_first=0) as server:
        script = (
            "import sys\n"
            "from pathlib import Path\n"
            "from vibecraft_renderer.errors import ReplicateBudgetError, ReplicateFailedError\n"
            "from vibecraft_renderer.visuals_replicate import ImageRequest, ReplicateImages\n"
            f"images = ReplicateImages({str(tmp_path / 'cache')!r}, Path({str(tmp_path)!r}), token={server.token!r},"
            f" base_url={server.url!r}, sleep=lambda s: None)\n"
            "try:\n"
            "    images.generate([ImageRequest(0, 0, 'p', 1, '16:9', 'fake/huge-model')])\n"
            "except ReplicateFailedError as exc:\n"
            "    print('FAILED', exc)\n"
            # VmHWM, this process's own peak: ru_maxrss would carry the forking parent's (pytest's) over exec.
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
            "print('PEAK_MB', int(hwm.split()[1]) // 1024)\n")
        env = {**os.environ, ENV_EGRESS_ALLOW: "127.0.0.1/32"}
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
        sent = server.stats.huge_bytes_sent
    assert "FAILED" in res.stdout and "larger than 50 MiB" in res.stdout, res.stdout + res.stderr
    peak = int(res.stdout.split("PEAK_MB")[1])
    assert peak < 200, f"peak RSS {peak} MB"
    assert sent < 200 * 1024**2, f"the server streamed {sent >> 20} MiB before the renderer hung up"


def _requests(n: int) -> list[ImageRequest]:
    return [ImageRequest(i, 0, f"prompt {i}", i, "16:9", "fake/model") for i in range(n)]


def test_a_budget_too_small_for_the_new_images_fails_before_any_prediction(tmp_path: Path) -> None:
    """The namespace's budget (VIBECRAFT_REPLICATE_MAX_PREDICTIONS) counts new predictions only: images in
    the cache are free, and a render whose new images do not fit fails at once, spending nothing."""
    with FakeReplicate(throttle_first=0) as server:
        def images(budget: int | None, seen: list[int] | None = None) -> ReplicateImages:
            return ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                                   sleep=lambda s: None, max_predictions=budget,
                                   on_prediction=None if seen is None else seen.append)
        with pytest.raises(ReplicateBudgetError, match=r"needs 3 new Replicate images, .* allows 2 more"):
            images(2).generate(_requests(3))
        assert server.stats.creates == 0
        seen: list[int] = []
        images(3, seen).generate(_requests(3))  # exactly enough, concurrently (3 workers)
        assert server.stats.creates == 3 and sorted(seen) == [1, 2, 3]
        done = images(1)  # two of these three are cached now: one new prediction fits a budget of 1
        done.generate([*_requests(2)[1:], ImageRequest(9, 0, "new", 9, "16:9", "fake/model")])
        assert (server.stats.creates, done.created, done.cache_hits) == (4, 1, 1)
        images(0).generate(_requests(3))  # all cached: a used-up budget costs nothing here


def test_the_budget_bounds_predictions_even_when_the_cache_lies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """The up-front count can be wrong (cached images deleted meanwhile): creating stays bounded anyway."""
    calls = itertools.count()
    monkeypatch.setattr(visuals_replicate.storage, "exists", lambda url: next(calls) < 5)  # cached, then gone
    with FakeReplicate(throttle_first=0) as server:
        images = ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                                 sleep=lambda s: None, max_predictions=2)
        with pytest.raises(ReplicateBudgetError):
            images.generate(_requests(5))
        assert server.stats.creates == 2 == images.created


def test_the_renderer_reads_its_budget_from_the_job_env(fake: FakeReplicate, click100: tuple[Path, np.ndarray],
                                                        tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    before = fake.stats.creates
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), *ARGS, "--prompt", "a budget of one"],
                     env=env_for(fake, VIBECRAFT_TERMINATION_LOG=str(log), **{ENV_REPLICATE_MAX_PREDICTIONS: "1"}))
    assert res.returncode == EXIT_REPLICATE_BUDGET, res.stderr
    assert "monthly prediction budget allows 1 more" in log.read_text() and fake.stats.creates == before
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), *ARGS],
                     env=env_for(fake, **{ENV_REPLICATE_MAX_PREDICTIONS: "-1"}))
    assert res.returncode != 0 and "must be a whole number" in res.stderr
