"""spec.style.reactivity (issue 21 part 2): the user's own couplings from the music to the picture change it
where they should, and only those: unset keeps the built-in look (bit for bit: checked when it was added)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from vibecraft_common import limits as L
from vibecraft_common.spec import Style
from vibecraft_renderer import analysis as analysis_mod
from vibecraft_renderer.compose import KenBurnsVisuals
from vibecraft_renderer.config import Coupling, spec_from_dict
from vibecraft_renderer.timeline import Timeline
from vibecraft_renderer.visuals_procedural import ProceduralVisuals

from tests.fakes.replicate_server import make_image, png_bytes

from .helpers import run_render, write_kick_song

FPS = 20


@pytest.fixture(scope="module")
def kick_song(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("audio") / "kicks.wav"
    return path, write_kick_song(path)


def mean_luma(video: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
                         capture_output=True, check=True).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, 180 * 320).astype(np.float64).mean(axis=1)


def render(song: Path, out: Path, reactivity: list[dict[str, Any]] | None) -> np.ndarray:
    spec = {"audio": {"url": str(song)}, "output": {"url": str(out)},
            "video": {"width": 320, "height": 180, "fps": FPS, "cutEvery": "phrase"}, "style": {"reactivity": reactivity}}
    (out.parent / f"{out.name}.json").write_text(json.dumps(spec))
    res = run_render(["--spec", str(out.parent / f"{out.name}.json"), "-q"])
    assert res.returncode == 0, res.stderr
    return mean_luma(out / "video.mp4")


def test_kick_to_brightness_makes_the_picture_flash_with_the_kicks(kick_song: tuple[Path, np.ndarray],
                                                                  tmp_path: Path) -> None:
    """Kicks off the beat grid (hats keep the beat): with kick -> brightness the frames' mean brightness follows
    the kick envelope (r >= 0.6, the issue's bar); with the mapping removed it does not."""
    song, kicks = kick_song
    mapped = render(song, tmp_path / "mapped", [{"source": "kick", "target": "brightness", "amount": 3}])
    removed = render(song, tmp_path / "removed", [])
    t = np.arange(mapped.size) / FPS
    envelope = np.zeros(mapped.size)
    for k in kicks:  # the truth: each kick, decaying over 0.15 s
        envelope = np.maximum(envelope, np.where(t >= k, np.exp(-(t - k) / 0.15), 0.0))
    r_mapped, r_removed = np.corrcoef(mapped, envelope)[0, 1], np.corrcoef(removed, envelope)[0, 1]
    print(f"brightness against the kick envelope: r = {r_mapped:.3f} mapped, {r_removed:.3f} removed")
    assert r_mapped >= 0.6 and r_removed < 0.3, (r_mapped, r_removed)


@pytest.fixture(scope="module")
def timeline(kick_song: tuple[Path, np.ndarray]) -> Timeline:
    return Timeline(analysis_mod.analyze_file(kick_song[0]), FPS, "phrase")


@pytest.mark.parametrize("target", [t for t in L.REACT_TARGETS if t != "brightness"])
def test_every_target_moves_the_picture_with_its_source(timeline: Timeline, target: str) -> None:
    """beat -> target against no couplings: the frames differ on the beats' pulses (where the source is high)
    and not where the source is silent (beat pulses decay to nothing between beats at 0 smoothing)."""
    coupled = ProceduralVisuals(timeline, (96, 54), 1, (Coupling("beat", target, 2.0, 0.0),))
    plain = ProceduralVisuals(timeline, (96, 54), 1, ())
    pulse = timeline.source("beat", 0.0)
    on = [i for i in range(timeline.n_frames) if pulse[i] > 0.99][:8]
    diff = [float(np.abs(coupled.render(i).astype(int) - plain.render(i).astype(int)).mean()) for i in on]
    if target == "cut":  # one more shot per beat, for good (a scene has 4 framings: every 4th looks the same)
        assert sum(d > 1.0 for d in diff) >= 6, diff
        assert coupled.react is not None and coupled.react.cut[-1] >= len(timeline.beat_frames) - 2
        return
    assert min(diff) > 1.0, (target, diff)
    # zoom, rotation, hue and warp come back with their source
    off = [i for i in range(timeline.n_frames) if pulse[i] < 1e-6][:8]
    same = [float(np.abs(coupled.render(i).astype(int) - plain.render(i).astype(int)).mean()) for i in off]
    assert max(same) < 0.5, (target, same)


@pytest.mark.parametrize("target", [t for t in L.REACT_TARGETS if t != "brightness"])
def test_every_target_moves_the_ken_burns_shots_with_its_source(timeline: Timeline, target: str,
                                                                tmp_path: Path) -> None:
    """The same for the Replicate backend's compositor: zoom, warp (a pan along the shot's path), rotation
    (the view turns), hue and cut move the shots on the beats and leave the frames between them alone."""
    images: dict[int, list[Path]] = {}
    for group in {s.group for s in timeline.sections}:
        for v in range(2):
            path = tmp_path / f"g{group}-{v}.png"
            path.write_bytes(make_image(f"group {group}", v, "16:9"))
            images.setdefault(group, []).append(path)
    coupled = KenBurnsVisuals(timeline, (96, 54), images, 1, (Coupling("beat", target, 2.0, 0.0),))
    plain = KenBurnsVisuals(timeline, (96, 54), images, 1, ())
    pulse = timeline.source("beat", 0.0)
    on = [i for i in range(timeline.n_frames) if pulse[i] > 0.99][:8]
    diff = [float(np.abs(coupled.render(i).astype(int) - plain.render(i).astype(int)).mean()) for i in on]
    if target == "cut":
        assert sum(d > 1.0 for d in diff) >= 6, diff
        return
    assert min(diff) > 1.0, (target, diff)
    off = [i for i in range(timeline.n_frames) if pulse[i] < 1e-6][:8]
    same = [float(np.abs(coupled.render(i).astype(int) - plain.render(i).astype(int)).mean()) for i in off]
    assert max(same) < 0.5, (target, same)


def test_a_turned_ken_burns_view_never_shows_past_the_image(timeline: Timeline, tmp_path: Path) -> None:
    """Rotation turns the view up to 2 rad here (amount 4 on the beat): the view moves closer and inward so its
    corners stay on the image. Each image has a red frame at its border: smeared corners (the canvas edge
    clamped into them) would paint red triangles; only the thin frame itself may touch the view."""
    rgb = np.full((225, 400, 3), 90, np.uint8)
    rgb[:, :, 1] = np.linspace(40, 200, 400, dtype=np.uint8)[None, :]
    rgb[:8], rgb[-8:], rgb[:, :8], rgb[:, -8:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
    path = tmp_path / "framed.png"
    path.write_bytes(png_bytes(rgb))
    images = {group: [path] for group in {s.group for s in timeline.sections}}
    turned = KenBurnsVisuals(timeline, (96, 54), images, 1, (Coupling("beat", "rotation", 4.0, 0.3),))
    pulse = timeline.source("beat", 0.3)
    frames = [i for i in range(timeline.n_frames) if pulse[i] > 0.5][:24]
    assert max(abs(0.5 * float(turned.react.rotation[i])) for i in frames) > 1.5  # type: ignore[union-attr]
    for i in frames:
        g, b, r = turned.render(i).astype(int)  # planar GBR
        red = (r > 200) & (g < 60) & (b < 60)
        assert red.mean() < 0.03, (i, red.mean())


def test_sources_are_about_zero_to_one_and_follow_their_part(timeline: Timeline,
                                                             kick_song: tuple[Path, np.ndarray]) -> None:
    for name in L.REACT_SOURCES:
        x = timeline.source(name, 0.1)
        assert x.shape == (timeline.n_frames,) and x.min() >= 0.0 and x.max() <= 1.5, name
    kick = timeline.source("kick", 0.0)
    kicks = kick_song[1]
    at_kicks = kick[np.round(kicks * FPS).astype(int) + 1]
    assert np.median(at_kicks) > 4 * np.median(kick), "the kick source peaks on the kicks"


def test_the_contract_bounds_reactivity_and_keys_change_only_with_it() -> None:
    for bad in ({"source": "cowbell", "target": "zoom"}, {"source": "kick", "target": "tilt"},
                {"source": "kick", "target": "zoom", "amount": L.REACT_AMOUNT_MAX + 1},
                {"source": "kick", "target": "zoom", "smoothing": -0.1}):
        with pytest.raises(ValidationError):
            Style.model_validate({"reactivity": [bad]})
    with pytest.raises(ValidationError):
        Style.model_validate({"reactivity": [{"source": "kick", "target": "zoom"}] * (L.REACTIVITY_MAX + 1)})
    base = {"audio": {"url": "a.ogg"}, "output": {"url": "out/"}}
    plain = spec_from_dict(base).fingerprint()
    assert "reactivity" not in plain["style"]  # renders from before the field keep their keys
    empty = spec_from_dict({**base, "style": {"reactivity": []}}).fingerprint()
    kick = spec_from_dict({**base, "style": {"reactivity": [{"source": "kick", "target": "zoom"}]}}).fingerprint()
    assert len({json.dumps(f, sort_keys=True) for f in (plain, empty, kick)}) == 3


def test_smoothing_holds_a_hit_for_its_seconds_and_every_frame_rate_sees_every_kick(
        kick_song: tuple[Path, np.ndarray]) -> None:
    """A source falls back over `smoothing` seconds after a hit (1/e at that time), longer smoothing holding it
    longer; a hit one analysis frame long is seen whole at 24 and at 60 fps (so kick -> cut counts the kicks
    whatever the frame rate)."""
    an = analysis_mod.analyze_file(kick_song[0])
    kicks = kick_song[1]
    for fps in (24, 60):
        tl = Timeline(an, fps, "phrase")
        seen = [float(tl.source("kick", 0.0)[round(k * fps) - 1: round(k * fps) + 3].max()) for k in kicks]
        assert min(seen) > 0.5, (fps, seen)
        cuts = tl.reactions((Coupling("kick", "cut", 1.0, 0.0),)).cut[-1]
        assert abs(int(cuts) - kicks.size) <= 1, (fps, cuts, kicks.size)
    tl = Timeline(an, 60, "phrase")
    k = round(kicks[3] * 60)
    peak = max(range(k - 2, k + 4), key=lambda i: tl.source("kick", 0.5)[i])
    for smoothing in (0.2, 0.5):
        x = tl.source("kick", smoothing)
        after = x[peak + round(smoothing * 60)] / x[peak]  # one time constant later
        assert 0.25 < after < 0.5, (smoothing, after)


def test_a_song_without_beats_pulses_nothing(tmp_path: Path) -> None:
    """A given beat past the end of a short song: no beat or bar grid. The couplings on them rest at 0 (the
    built-in look renders such songs too)."""
    song = tmp_path / "short.wav"
    write_kick_song(song, seconds=1.2)
    spec = spec_from_dict({"audio": {"url": str(song), "bpm": 30, "beatOffsetSeconds": 1.9}, "output": {"url": "x/"}})
    an = analysis_mod.analyze_file(song, bpm=spec.bpm, beat_offset=spec.beat_offset)
    tl = Timeline(an, FPS, "beat")
    tl.beat_frames, tl.bar_frames = tl.beat_frames[:0], tl.bar_frames[:0]
    react = tl.reactions((Coupling("bar", "zoom"), Coupling("beat", "cut")))
    assert not react.zoom.any() and not react.cut.any()
    ProceduralVisuals(tl, (32, 18), 1, (Coupling("bar", "zoom"),)).render(tl.n_frames - 1)


def test_unset_reactivity_draws_the_look_from_before_the_field() -> None:
    """The frames the procedural backend drew before spec.style.reactivity existed (commit 995f797^: the hash of
    every third frame of 12 s of clicks at 64x36, 12 fps, seed 5), drawn again with reactivity unset."""
    import hashlib

    y = analysis_mod.synthetic_clicks(100.0, 12.0)
    an = analysis_mod.analyze_blocks(y[i:i + 4096] for i in range(0, y.size, 4096))
    tl = Timeline(an, 12, "beat")
    vis = ProceduralVisuals(tl, (64, 36), 5)
    digest = hashlib.sha256()
    for i in range(0, tl.n_frames, 3):
        digest.update(vis.render(i).tobytes())
    assert (tl.n_frames, digest.hexdigest()[:16]) == (144, "1536c84670b3becb")
