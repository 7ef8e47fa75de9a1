"""spec.preview (issue 21 part 3): 15 s from the most energetic section at 360p, its sound the song's own at
that place, and the full render that follows takes the preview's analysis. Its speed is a benchmark
(bench/bench_preview.py: a 3-minute song in <= 10 s), not a test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from vibecraft_common import limits as L
from vibecraft_common.resource import EXIT_USAGE

from .helpers import ffprobe, run_render

FPS = 10


def pcm(media: Path, start: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """Mono 8 kHz float samples of `media` from `start` (for `seconds`)."""
    cut = ["-t", f"{seconds:.6f}"] if seconds is not None else []
    raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{start:.6f}", "-i", str(media), *cut, "-ac", "1", "-ar",
                          "8000", "-f", "f32le", "pipe:1"], capture_output=True, check=True).stdout  # fmt: skip
    return np.frombuffer(raw, np.float32)


def envelope(samples: np.ndarray) -> np.ndarray:
    """RMS per 50 ms."""
    n = samples.size // 400 * 400
    return np.sqrt((samples[:n].reshape(-1, 400) ** 2).mean(axis=1))


def test_a_preview_is_15_s_of_the_most_energetic_section_at_360p(minute_song: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_render([str(minute_song), "-o", str(out), "--height", "720", "--fps", str(FPS), "--preview", "-q"])
    assert res.returncode == 0, res.stderr
    streams = {s["codec_type"]: s for s in ffprobe(out / "video.mp4")["streams"]}
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, L.PREVIEW_HEIGHT)
    assert int(streams["video"]["nb_frames"]) == L.PREVIEW_SECONDS * FPS
    assert abs(float(streams["audio"]["duration"]) - L.PREVIEW_SECONDS) <= 1 / FPS
    report = json.loads((out / "analysis.json").read_text())
    loudest = max(report["sections"], key=lambda s: s["energy"])
    start = report["preview"]["startSeconds"]
    assert start == pytest.approx(min(round(loudest["start"] * FPS), 60 * FPS - 150) / FPS, abs=1e-3), report["preview"]
    assert report["video"]["frames"] == 150 and all(0 < c < 15 for c in report["cuts"]), report["cuts"]
    # The sound is the song's own at that place (the envelope of the song cut there, not another stretch).
    heard, there = envelope(pcm(out / "video.mp4")), envelope(pcm(minute_song, start, L.PREVIEW_SECONDS))
    n = min(heard.size, there.size)
    assert np.corrcoef(heard[:n], there[:n])[0, 1] > 0.95
    elsewhere = envelope(pcm(minute_song, (start + 20) % 40, L.PREVIEW_SECONDS))
    assert np.corrcoef(heard[:n], elsewhere[:n])[0, 1] < 0.8
    assert (out / "thumbnail.jpg").stat().st_size > 0 and not (out / "segments").exists()

    # The whole video next, to the same output: the preview's analysis is reused, the frame is the spec's.
    res = run_render([str(minute_song), "-o", str(out), "--height", "180", "--fps", str(FPS), "-q"])
    assert res.returncode == 0, res.stderr
    assert "the song's analysis from an earlier render" in res.stderr
    assert int(ffprobe(out / "video.mp4")["streams"][0]["nb_frames"]) == 60 * FPS
    # The cache is only a cache: a damaged entry means analysing again, not a failed render.
    (cached,) = (out / "cache" / "analysis").iterdir()
    cached.write_bytes(b"PK\x03\x04 not an analysis")
    res = run_render([str(minute_song), "-o", str(out), "--height", "180", "--fps", str(FPS), "--preview", "-q"])
    assert res.returncode == 0 and "no usable cached analysis" in res.stderr, res.stderr


def test_a_song_shorter_than_a_preview_is_previewed_whole_and_a_preview_is_one_stage(
        click100: tuple[Path, object], tmp_path: Path) -> None:
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), "--fps", str(FPS), "--preview",
                      "--parallelism", "3", "-q"])  # fmt: skip
    assert res.returncode == 0, res.stderr  # parallelism does not split a preview: one process
    assert int(ffprobe(tmp_path / "out" / "video.mp4")["streams"][0]["nb_frames"]) == 9 * FPS
    res = run_render([str(click100[0]), "-o", str(tmp_path / "x"), "--preview", "--stage", "prepare", "-q"])
    assert res.returncode == EXIT_USAGE and "a preview (spec.preview) renders in one pod" in res.stderr
