"""style.motion clips (issue 21 part 4): an image-to-video model animates each section group's image; the clip
is time-stretched to the beat grid. Against the local fake of Replicate, with the real client."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from vibecraft_common.limits import CLIP_FPS, CLIP_MAX_FRAMES
from vibecraft_common.resource import ENV_SPEC_JSON
from vibecraft_renderer import compose
from vibecraft_renderer.config import spec_from_dict
from vibecraft_renderer.errors import ReplicateBudgetError, ReplicateFailedError, UsageError
from vibecraft_renderer.structure import Section
from vibecraft_renderer.visuals_replicate import ClipRequest, ImageRequest, ReplicateImages, plan_clips, plan_requests

from tests.fakes.replicate_server import CLIP_BAR, CLIP_RATE, CLIP_SECONDS, FakeReplicate

from .helpers import run_render
from .test_replicate import LOOPBACK_ALLOWED, env_for

SIZE = (320, 180)
FPS = 24
ARGS = ["--backend", "replicate", "--prompt", "neon city at night", "--width", str(SIZE[0]), "--height",
        str(SIZE[1]), "--fps", str(FPS), "--cut-every", "bar", "--motion", "clips", "--max-clips", "1", "-q"]  # fmt: skip


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake serves its outputs from loopback, refused by the egress guard unless allow-listed."""
    for name, value in LOOPBACK_ALLOWED.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("bpm", [60.0, 97.0, 120.0, 135.0, 174.0, 240.0])
@pytest.mark.parametrize("n_frames", [16, 32, 48])
def test_a_clip_turns_on_beats_at_a_speed_near_its_own(bpm: float, n_frames: int) -> None:
    """One pass lasts a whole number of beats: at beat 0 the clip is at its start, after one pass at its end,
    after two at its start again (ping-pong, no jump); in between it moves one way at constant speed, within
    3/4x..1.5x of the clip's own (for clips at least a beat long)."""
    beat = 60.0 / bpm
    per_pass = max(1, round(n_frames / CLIP_FPS / beat))
    end = n_frames - 1
    for k in range(5):
        assert compose.clip_position(float(k * per_pass), n_frames, beat) == pytest.approx(0.0 if k % 2 == 0 else end)
    steps = np.linspace(0.0, per_pass, 41)
    path = np.array([compose.clip_position(float(b), n_frames, beat) for b in steps])
    assert np.all(np.diff(path) > 0) and np.allclose(np.diff(path), np.diff(path)[0])
    speed = n_frames / CLIP_FPS / (per_pass * beat)  # clip seconds per song second
    if n_frames / CLIP_FPS >= beat:
        assert 0.75 - 1e-9 <= speed <= 1.5 + 1e-9


def test_clips_need_the_replicate_backend_and_stay_within_the_cap() -> None:
    base = {"audio": {"url": "s3://b/a.ogg"}, "output": {"url": "s3://b/out/"}}
    with pytest.raises(UsageError, match=r"style\.motion clips needs style\.backend replicate"):
        spec_from_dict(base | {"style": {"motion": "clips"}})
    with pytest.raises(UsageError, match="maxClips"):
        spec_from_dict(base | {"style": {"backend": "replicate", "prompt": "x", "motion": "clips", "maxClips": 9}})
    spec = spec_from_dict(base | {"style": {"backend": "replicate", "prompt": "x", "motion": "clips", "maxClips": 2}})
    sections = [Section(i * 10.0, i * 10.0 + 10.0, "A", group, 0.5, "calm") for i, group in enumerate([0, 1, 0, 2, 3])]
    requests = plan_requests(spec, sections, 2)
    clips = plan_clips(spec, requests)
    assert [c.group for c in clips] == [0, 1]  # song order, capped
    assert {c.image_key for c in clips} <= {r.key for r in requests if r.variant == 0}
    assert spec.fingerprint() != spec_from_dict(base | {"style": {"backend": "replicate", "prompt": "x"}}).fingerprint()
    stills = spec_from_dict(base | {"style": {"backend": "replicate", "prompt": "x", "motion": "stills"}})
    assert plan_clips(stills, requests) == []
    assert stills.fingerprint() == spec_from_dict(base | {"style": {"backend": "replicate", "prompt": "x"}}).fingerprint()


def test_a_budget_that_covers_the_images_but_not_the_clips_spends_nothing(tmp_path: Path) -> None:
    with FakeReplicate(throttle_first=0) as server:
        images = ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                                 sleep=lambda s: None, max_predictions=2)
        reqs = [ImageRequest(i, 0, f"p{i}", i, "16:9", "fake/model") for i in range(2)]
        clips = [ClipRequest(0, reqs[0].key, "p0, motion", 0, "fake/i2v")]
        with pytest.raises(ReplicateBudgetError, match="images and clips"):
            images.preflight(reqs, clips)
        assert server.stats.creates == 0


def test_an_answer_that_is_not_a_video_is_a_clear_failure(tmp_path: Path) -> None:
    png = tmp_path / "clip.clip"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ReplicateFailedError, match="not an MP4, WebM or GIF video"):
        compose.load_clip(png, 64, 36)
    broken = tmp_path / "broken.clip"
    broken.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(200))
    with pytest.raises(ReplicateFailedError, match="not a decodable video"):
        compose.load_clip(broken, 64, 36)


def test_a_clip_that_is_not_a_video_fails_the_render_and_is_not_cached(tmp_path: Path) -> None:
    with FakeReplicate(throttle_first=0) as server:
        gen = ReplicateImages(str(tmp_path / "cache"), tmp_path, token=server.token, base_url=server.url,
                              sleep=lambda s: None)
        req = ImageRequest(0, 0, "p", 1, "16:9", "fake/model")
        images = gen.generate([req])
        with pytest.raises(ReplicateFailedError, match="not an MP4, WebM or GIF video"):
            gen.generate_clips([ClipRequest(0, req.key, "p, motion", 1, "fake/badclip-i2v")], images)
        assert list((tmp_path / "cache" / "replicate").glob("*.clip")) == []
        assert server.stats.uploads == 1 and server.stats.clips == 1


def _bar_centre(frame: np.ndarray) -> float | None:
    """Centre (0..1 of the width) of the white vertical bar the fake draws into its clips, if it is there."""
    white = (frame.min(axis=2) > 225).mean(axis=0) > 0.9
    cols = np.flatnonzero(white)
    if cols.size == 0 or cols.size > 0.15 * frame.shape[1]:
        return None
    return float(cols.mean() / (frame.shape[1] - 1))


def _frames(video: Path) -> np.ndarray:
    w, h = SIZE
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, h, w, 3)


def test_clips_play_in_time_with_the_beat_and_are_paid_for_once(minute_song: Path, tmp_path: Path) -> None:
    """A 60 s song with two section groups and maxClips 1: one clip is asked for (from an uploaded image), and
    it plays in group 0's sections only; there the fake's sweeping bar stands where the beat grid says (the
    pass turning on beats), in group 1's section there is no bar. A second render, from the spec as the
    operator passes it, pays for nothing and draws the same video; so does one split over two processes
    (into a new output, so paying once more, not once per chunk)."""
    out = tmp_path / "out"
    with FakeReplicate(throttle_first=0) as fake:
        res = run_render([str(minute_song), "-o", str(out), *ARGS], env=env_for(fake))
        assert res.returncode == 0, res.stderr
        assert (fake.stats.clips, fake.stats.uploads) == (1, 1)
        assert all("/files/upload-" in url for url in fake.stats.clip_images)
        creates = fake.stats.creates
        first = hashlib.md5((out / "video.mp4").read_bytes()).hexdigest()
        (out / "video.mp4").unlink()
        # Again as the operator asks for it: the MusicVideo's spec (camelCase) in the Job's env.
        spec = {"audio": {"url": str(minute_song)}, "output": {"url": str(out)},
                "style": {"backend": "replicate", "prompt": "neon city at night", "motion": "clips", "maxClips": 1},
                "video": {"width": SIZE[0], "height": SIZE[1], "fps": FPS, "cutEvery": "bar"}}
        res = run_render(["--from-env", "-q"], env=env_for(fake, **{ENV_SPEC_JSON: json.dumps(spec)}))
        assert res.returncode == 0, res.stderr
        assert (fake.stats.creates, fake.stats.clips, fake.stats.uploads) == (creates, 1, 1)
        assert hashlib.md5((out / "video.mp4").read_bytes()).hexdigest() == first
        # Split over two processes into a new output (a new cache): the prepare stage pays, the chunks load.
        split = tmp_path / "split"
        res = run_render([str(minute_song), "-o", str(split), *ARGS, "--parallelism", "2"],
                         env=env_for(fake))
        assert res.returncode == 0, res.stderr
        assert (fake.stats.creates - creates, fake.stats.clips) == (creates, 2)  # the same images and clip, once
        assert hashlib.md5((split / "video.mp4").read_bytes()).hexdigest() == first
    an = json.loads((out / "analysis.json").read_text())
    groups = {s["group"] for s in an["sections"]}
    assert len(groups) >= 2, an["sections"]
    beats = np.array(an["beats"], dtype=np.float64)
    beat = 60.0 / an["tempo"]
    cut_frames = np.unique(np.concatenate([[0], np.round(np.array(an["cuts"]) * FPS).astype(int)]))
    frames = _frames(out / "video.mp4")
    n_clip = round(CLIP_SECONDS * CLIP_RATE)
    clipped, errors, stills_with_bar, stills = 0, [], 0, 0
    for i in range(0, len(frames), 2):
        t = i / FPS
        sec = next(s for s in reversed(an["sections"]) if s["start"] <= t + 1e-6)
        inner = sec["start"] + 0.6 < t < sec["end"] - 0.6  # away from the crossfades
        if not inner:
            continue
        found = _bar_centre(frames[i])
        if sec["group"] != 0:
            stills += 1
            stills_with_bar += found is not None
            continue
        b = np.interp(t, beats, np.arange(beats.size)) + min(0.0, t - beats[0]) / beat
        b0 = np.ceil(np.interp(sec["start"], beats, np.arange(beats.size)) + min(0.0, sec["start"] - beats[0]) / beat
                     - 1e-6)
        pos = compose.clip_position(max(0.0, float(b - b0)), n_clip, beat) / (n_clip - 1)
        # The bar's centre in the clip (192 px wide); odd shots (cuts counted from the first frame) mirror it and
        # frame it at 1.08x, even ones at 1x; the beat pulse zooms up to 1.5 % more, all about the centre.
        x = (pos * (192 - CLIP_BAR) + CLIP_BAR / 2) / 192
        shot = int(np.searchsorted(cut_frames, i, side="right")) - 1
        z = 1.08 if shot % 2 else 1.0
        signed = 0.5 + ((1 - x) - 0.5 if shot % 2 else x - 0.5) * np.array([z, z + 0.015])
        if found is None:
            continue  # zoomed out of view near an edge
        clipped += 1
        errors.append(max(0.0, float(signed.min() - found), float(found - signed.max())))
    assert clipped > 150, clipped
    errors_a = np.array(errors)
    assert float(np.median(errors_a)) < 0.01 and float(np.mean(errors_a < 0.03)) > 0.9, np.percentile(errors_a, [50, 90, 99])
    assert stills > 100 and stills_with_bar == 0


def test_clip_answers_are_bounded_while_reading(tmp_path: Path) -> None:
    """Too much of a clip is refused: a data: URI answer over the cap fails before it is written; a long
    video is decoded to CLIP_MAX_FRAMES at most (3 s), however long it runs."""
    gen = ReplicateImages(str(tmp_path / "cache"), tmp_path, token="r8_x", base_url="http://127.0.0.1:9",
                          sleep=lambda s: None)  # fmt: skip
    uri = "data:video/mp4;base64," + base64.b64encode(bytes(4096)).decode()
    with pytest.raises(ReplicateFailedError, match=r"generated clip is larger than 1 KiB$"):
        gen._fetch_output([uri], 1024, "generated clip")
    long = tmp_path / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x36:rate=25:duration=12",
                    "-c:v", "libx264", "-preset", "ultrafast", str(long)], check=True)  # fmt: skip
    frames = compose.load_clip(long, 32, 18)
    assert frames.shape == (CLIP_MAX_FRAMES, 3, 18, 32)
