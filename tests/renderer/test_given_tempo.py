"""A tempo the user gives (spec.audio.bpm / --bpm, beatOffsetSeconds / --beat-offset) overrides detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vibecraft_common.status import summary_of
from vibecraft_renderer.analysis import analyze_file

from .helpers import audio_duration, run_render

TINY = ["--width", "96", "--height", "64", "--fps", "30", "--preset", "ultrafast", "-q"]


def test_bpm_and_offset_give_exactly_that_grid_and_the_cuts_follow_it(
    click100: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """The click track is 100 BPM from 0.4 s; the user says 90 BPM with a beat at 7.9 s: 90 BPM it is."""
    audio, _ = click100
    bpm, offset, fps = 90.0, 7.9, 30
    res = run_render([str(audio), "-o", str(tmp_path / "v.mp4"), "--bpm", str(bpm), "--beat-offset", str(offset),
                      "--cut-every", "beat", *TINY])  # fmt: skip
    assert res.returncode == 0, res.stderr
    analysis = json.loads((tmp_path / "v.analysis.json").read_text())
    assert (analysis["tempo"], analysis["tempoSource"], analysis["confidence"]) == (bpm, "given", 1.0)

    period = 60.0 / bpm
    first = offset - np.floor(offset / period) * period  # the earliest beat of the grid through `offset`
    want = np.arange(first, audio_duration(audio), period)
    beats = np.array(analysis["beats"])
    assert beats.size == want.size and np.abs(beats - want).max() <= 0.001, (beats, want)
    assert np.abs(beats - offset).min() <= 0.001  # the given beat itself is on the grid

    cut_frames = {round(c * fps) for c in analysis["cuts"]}
    n_frames = analysis["video"]["frames"]
    beat_frames = {round(b * fps) for b in want} & set(range(1, n_frames))
    assert beat_frames <= cut_frames, sorted(beat_frames - cut_frames)  # a cut on every given beat
    # and nowhere else but at section starts
    assert len(cut_frames - beat_frames) <= len(analysis["sections"]), sorted(cut_frames - beat_frames)

    # The operator's status.analysis reads these keys as the renderer writes them.
    summary, _ = summary_of(analysis)
    assert {k: summary[k] for k in ("tempo", "tempoSource", "confidence")} == {
        "tempo": bpm, "tempoSource": "given", "confidence": 1.0}


@pytest.mark.parametrize("bpm", [120.0, 97.0], ids=["true-tempo", "other-tempo"])
def test_bpm_alone_is_the_tempo_and_only_the_phase_is_tracked(click120: tuple[Path, np.ndarray], bpm: float) -> None:
    """In-process (the render above covers analysis.json); 97 is far from the detected 120."""
    audio, true_beats = click120
    an = analyze_file(audio, bpm=bpm)
    assert (an.tempo, an.tempo_source) == (bpm, "given")
    assert (an.to_json()["tempo"], an.to_json()["tempoSource"]) == (bpm, "given")
    assert 0.0 <= an.confidence <= 1.0
    if bpm == 120.0:  # the right tempo: the tracked phase puts the beats on the clicks
        dist = np.abs(an.beats[:, None] - true_beats[None, :]).min(axis=1)
        assert (dist <= 1 / 30).mean() >= 0.9, (an.beats, true_beats)
