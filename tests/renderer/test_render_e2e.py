"""End-to-end renders through the CLI: streams, timing, frame counts, beat sync, outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .helpers import audio_duration, beat_frames, count_frames, ffprobe, frame_signals, near, rise_on_beats, run_render


@dataclass
class Rendered:
    audio: Path
    beats: np.ndarray
    video: Path
    thumbnail: Path
    analysis: dict[str, Any]
    fps: int
    size: tuple[int, int]
    stderr: str


@pytest.fixture(scope="module")
def r120(click120: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """120 BPM, 320x180@30, 4 s segments (three joins to get right), output directory."""
    audio, beats = click120
    out = tmp_path_factory.mktemp("r120") / "out"
    res = run_render([str(audio), "-o", str(out), "--width", "320", "--height", "180", "--fps", "30",
                      "--segment-seconds", "4", "--cut-every", "beat", "--seed", "3", "-q"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    return Rendered(audio, beats, out / "video.mp4", out / "thumbnail.jpg",
                    json.loads((out / "analysis.json").read_text()), 30, (320, 180), res.stderr)  # fmt: skip


@pytest.fixture(scope="module")
def r100(click100: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """100 BPM FLAC, vertical 9:16 at 24 fps, cut every 2 beats, `-o file.mp4` layout."""
    audio, beats = click100
    d = tmp_path_factory.mktemp("r100")
    res = run_render([str(audio), "-o", str(d / "clip.mp4"), "--aspect-ratio", "9:16", "--height", "256",
                      "--fps", "24", "--cut-every", "2beats", "--segment-seconds", "3", "-q"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    return Rendered(audio, beats, d / "clip.mp4", d / "clip.jpg",
                    json.loads((d / "clip.analysis.json").read_text()), 24, (144, 256), res.stderr)  # fmt: skip


@pytest.fixture(params=["r120", "r100"])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    r: Rendered = request.getfixturevalue(request.param)
    return r


def test_streams_geometry_and_timing(rendered: Rendered) -> None:
    info = ffprobe(rendered.video)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    sound = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(sound) == 1
    v, a = video[0], sound[0]
    assert (v["codec_name"], v["pix_fmt"]) == ("h264", "yuv420p")
    assert (v["width"], v["height"]) == rendered.size
    assert Fraction(v["r_frame_rate"]) == rendered.fps
    assert a["codec_name"] == "aac"
    song = audio_duration(rendered.audio)
    assert float(info["format"]["duration"]) == pytest.approx(song, abs=0.1)
    assert float(v["duration"]) == pytest.approx(song, abs=0.1)
    frame = 1.0 / rendered.fps
    assert abs(float(v["start_time"]) - float(a["start_time"])) <= frame
    assert count_frames(rendered.video) == round(song * rendered.fps)


def test_faststart(rendered: Rendered) -> None:
    head = rendered.video.read_bytes()[:65536]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 1 << 30)


def test_analysis_tempo_and_cuts_on_beats(rendered: Rendered) -> None:
    bpm = 60.0 / float(np.median(np.diff(rendered.beats)))
    assert rendered.analysis["tempo"] == pytest.approx(bpm, rel=0.02)
    assert rendered.analysis["tempoSource"] == "detected" and 0.0 <= rendered.analysis["confidence"] <= 1.0
    frame = 1.0 / rendered.fps
    detected = np.array(rendered.analysis["beats"])
    cuts = np.array(rendered.analysis["cuts"])
    assert len(cuts) >= 4
    assert near(cuts, detected, frame).mean() >= 0.9
    # and on the beats that were really in the audio
    assert near(cuts, rendered.beats, frame).mean() >= 0.9


def test_picture_pulses_on_the_beat_across_segment_joins(r120: Rendered) -> None:
    """Brightness jumps up on the frame of each beat, including beats after a segment join."""
    luma, _ = frame_signals(r120.video)
    rise = np.diff(luma, prepend=luma[0])
    on_beat = rise_on_beats(luma, r120.beats, r120.fps)
    assert (on_beat > 0).mean() >= 0.8
    after, before = beat_frames(r120.beats, r120.fps, len(luma))
    off = np.setdiff1d(np.arange(1, len(luma)), np.concatenate([before - 1, after, after + 1]))
    assert np.median(on_beat) > 2 * np.median(np.abs(rise[off]))
    joins = [120, 240]  # 4 s segments at 30 fps
    assert any(abs(b - j) <= 15 for b in after for j in joins)


def test_thumbnail_is_a_jpeg(rendered: Rendered) -> None:
    data = rendered.thumbnail.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) > 1000


def test_checkpoints_removed_after_success(r120: Rendered) -> None:
    seg_root = r120.video.parent / "segments"
    assert not any(p.is_file() for p in seg_root.rglob("*")) if seg_root.exists() else True
    assert not list(r120.video.parent.glob(".*tmp*"))


def test_real_song_end_to_end(real_song: Path, tmp_path: Path) -> None:
    out = tmp_path / "song.mp4"
    res = run_render([str(real_song), "-o", str(out), "--width", "256", "--height", "144", "--fps", "20", "-q"])
    assert res.returncode == 0, res.stderr
    song = audio_duration(real_song)
    info = ffprobe(out)
    assert float(info["format"]["duration"]) == pytest.approx(song, abs=0.1)
    assert count_frames(out) == round(song * 20)
    analysis = json.loads((tmp_path / "song.analysis.json").read_text())
    assert 60 < analysis["tempo"] < 200 and len(analysis["beats"]) > 10
    luma, diff = frame_signals(out)
    assert luma.std() > 1.0 and np.median(diff[1:]) > 0.1  # it moves
