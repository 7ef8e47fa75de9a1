"""Segment plans, the per-frame timeline and the procedural visuals, without ffmpeg."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from vibecraft_renderer import analysis, segments
from vibecraft_renderer.compose import _bilinear
from vibecraft_renderer.layout import layout_for
from vibecraft_renderer.timeline import Timeline, cut_times, frame_count
from vibecraft_renderer.visuals_procedural import ProceduralVisuals, _wave, internal_size

from .helpers import write_click_track


@pytest.fixture(scope="module")
def clicks_analysis(tmp_path_factory: pytest.TempPathFactory) -> analysis.Analysis:
    path = tmp_path_factory.mktemp("a") / "c.wav"
    write_click_track(path, 120.0, 12.0)
    return analysis.analyze_file(path)


@pytest.mark.parametrize(("total", "fps", "seconds"), [(300, 30, 4.0), (1, 30, 30.0), (9001, 24, 30.0), (61, 60, 1.0)])
def test_plan_partitions_frames_exactly(total: int, fps: int, seconds: float) -> None:
    plan = segments.plan(total, fps, seconds)
    assert plan[0].start == 0 and plan[-1].end == total
    assert all(a.end == b.start for a, b in itertools.pairwise(plan))
    assert all(s.frames == round(seconds * fps) for s in plan[:-1])
    assert sum(s.frames for s in plan) == total


def test_frame_count_is_rounded_duration() -> None:
    assert frame_count(10.0, 30) == 300
    assert frame_count(10.02, 30) == 301
    assert frame_count(10.015, 24) == 240


def test_render_key_depends_on_audio_spec_and_segmenting() -> None:
    k = segments.render_key("a" * 64, {"x": 1}, 900)
    assert k == segments.render_key("a" * 64, {"x": 1}, 900)
    assert k != segments.render_key("b" * 64, {"x": 1}, 900)
    assert k != segments.render_key("a" * 64, {"x": 2}, 900)
    assert k != segments.render_key("a" * 64, {"x": 1}, 600)


def test_cut_grids_are_on_beats(clicks_analysis: analysis.Analysis) -> None:
    beats = clicks_analysis.beats
    for grid, step in (("beat", 1), ("2beats", 2), ("bar", 4), ("phrase", 16)):
        cuts = cut_times(clicks_analysis, grid)  # type: ignore[arg-type]
        assert len(cuts) >= 1
        # every cut is a (possibly extrapolated) beat; spacing is `step` beats
        if len(cuts) > 1:
            assert np.median(np.diff(cuts)) == pytest.approx(step * 0.5, rel=0.03)
        inside = cuts[(cuts >= beats[0]) & (cuts <= beats[-1])]
        assert all(np.min(np.abs(beats - c)) < 1e-6 for c in inside)


def test_timeline_pulses_on_beat_frames(clicks_analysis: analysis.Analysis) -> None:
    tl = Timeline(clicks_analysis, 30, "beat")
    assert tl.n_frames == 360
    for b in clicks_analysis.beats:
        i = round(b * 30)
        assert tl.at(i).beat_pulse == pytest.approx(1.0)
        if i > 0:
            assert tl.at(i - 1).beat_pulse < 0.6
    cuts = [tl.at(i).cut for i in range(tl.n_frames)]
    assert cuts == sorted(cuts) and cuts[-1] >= len(clicks_analysis.beats) - 1


def test_procedural_frames_depend_only_on_frame_index(clicks_analysis: analysis.Analysis) -> None:
    """Resumed segments must be pixel-identical: no hidden state between frames."""
    tl = Timeline(clicks_analysis, 30, "bar")
    size = internal_size(320, 180)
    a = ProceduralVisuals(tl, size, seed=5)
    b = ProceduralVisuals(tl, size, seed=5)
    forward = [a.render(i) for i in range(100, 110)]
    backward = [b.render(i) for i in reversed(range(100, 110))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert np.array_equal(x, y)
    assert forward[0].shape == (3, size[1], size[0]) and forward[0].dtype == np.uint8
    other = ProceduralVisuals(tl, size, seed=6).render(100)
    assert not np.array_equal(other, forward[0])


def test_procedural_frames_are_not_flat(clicks_analysis: analysis.Analysis) -> None:
    tl = Timeline(clicks_analysis, 30, "beat")
    vis = ProceduralVisuals(tl, internal_size(640, 360), seed=0)
    for i in (15, 100, 250):
        f = vis.render(i).astype(np.float32)
        assert f.std() > 12  # gradients and shapes, not a flat fill
        assert 20 < f.mean() < 235
    moving = np.abs(vis.render(200).astype(int) - vis.render(201).astype(int)).mean()
    assert moving > 0.5


def test_bilinear_matches_identity_and_shift() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, 40, 60), dtype=np.uint8)
    same = _bilinear(img, np.arange(40, dtype=np.float32), np.arange(60, dtype=np.float32))
    assert np.allclose(same, img, atol=0.01)
    half = _bilinear(img, np.arange(39, dtype=np.float32) + 0.5, np.arange(10, dtype=np.float32))
    expected = (img[:, :-1, :10].astype(np.float32) + img[:, 1:, :10]) / 2
    assert np.allclose(half, expected, atol=0.01)


@pytest.mark.parametrize(
    ("url", "video", "thumb", "analysis_url"),
    [
        ("s3://b/videos/x/", "s3://b/videos/x/video.mp4", "s3://b/videos/x/thumbnail.jpg", "s3://b/videos/x/analysis.json"),
        ("s3://b/videos/x", "s3://b/videos/x/video.mp4", "s3://b/videos/x/thumbnail.jpg", "s3://b/videos/x/analysis.json"),
        ("s3://b/v/clip.mp4", "s3://b/v/clip.mp4", "s3://b/v/clip.jpg", "s3://b/v/clip.analysis.json"),
        ("out/song.mp4", "out/song.mp4", "out/song.jpg", "out/song.analysis.json"),
        ("file:///tmp/o", "/tmp/o/video.mp4", "/tmp/o/thumbnail.jpg", "/tmp/o/analysis.json"),
    ],
)
def test_output_layout(url: str, video: str, thumb: str, analysis_url: str) -> None:
    lay = layout_for(url)
    assert (lay.video, lay.thumbnail, lay.analysis) == (video, thumb, analysis_url)
    assert lay.segments.endswith("segments")


def test_layout_root_for_file_output(tmp_path: Path) -> None:
    assert layout_for(str(tmp_path / "a" / "b.mp4")).root == str(tmp_path / "a")
    assert layout_for("s3://bucket/v/clip.mp4").root == "s3://bucket/v/"


def test_separable_wave_equals_the_full_frame_sine() -> None:
    rows = np.linspace(-3.0, 3.0, 27, dtype=np.float32)
    cols = np.linspace(-5.0, 4.0, 48, dtype=np.float32)
    np.testing.assert_allclose(_wave(rows, cols), np.sin(rows[:, None] + cols[None, :]), atol=2e-6)
