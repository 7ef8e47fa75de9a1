"""Audio analysis against signals with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from vibecraft_renderer import analysis, audio, features
from vibecraft_renderer.errors import BadAudioError

from .helpers import near, write_click_track

FRAME_30FPS = 1.0 / 30.0


@pytest.mark.parametrize(("bpm", "offset"), [(120.0, 0.25), (100.0, 0.4)])
def test_click_track_tempo_beats_and_bars(tmp_path: Path, bpm: float, offset: float) -> None:
    path = tmp_path / "clicks.wav"
    truth = write_click_track(path, bpm, 12.0, offset=offset)
    an = analysis.analyze_file(path)

    assert an.tempo == pytest.approx(bpm, rel=0.02)
    assert an.duration == pytest.approx(12.0, abs=0.01)
    # Every detected beat is on a true beat (within one video frame), and almost no beat is missed.
    assert near(an.beats, truth, FRAME_30FPS).all(), an.beats
    assert near(truth, an.beats, FRAME_30FPS).mean() >= 0.9
    # Beat one is accented in the track: bars must start on it.
    bar_starts = truth[::4]
    assert len(an.downbeats) >= 2
    assert near(an.downbeats, bar_starts, FRAME_30FPS).all(), (an.downbeats, bar_starts)
    assert len(an.onsets) >= len(truth) * 0.9
    assert an.bands.shape == (3, an.energy.size)
    assert an.sections and an.sections[0].start == 0.0 and an.sections[-1].end == pytest.approx(12.0, abs=0.01)


def test_streaming_onset_envelope_matches_librosa(tmp_path: Path) -> None:
    """Block-wise STFT must give the same onset envelope as librosa on the whole signal."""
    import librosa

    path = tmp_path / "c.wav"
    write_click_track(path, 128.0, 20.0, sr=analysis.SR)
    y, _ = sf.read(path, dtype="float32")
    stream = analysis.FeatureStream()
    for i in range(0, y.size, 7919):  # odd block size: frames straddle block edges
        stream.push(y[i : i + 7919])
    env = stream.finish()["onset_env"]
    ref = librosa.onset.onset_strength(y=y, sr=analysis.SR)
    assert env.shape == ref.shape
    assert np.corrcoef(env, ref)[0, 1] > 0.999


def test_long_audio_keeps_features_small() -> None:
    """What the analysis keeps per second of audio is tiny compared with the PCM or an STFT."""
    stream = analysis.FeatureStream()
    block = analysis.synthetic_clicks(120.0, 30.0)
    for _ in range(6):  # 3 minutes
        stream.push(block)
    feats = stream.finish()
    kept = sum(a.nbytes for a in feats.values())
    pcm = 180 * analysis.SR * 4
    assert kept < pcm / 10
    assert stream._buf.size < features.N_FFT * 2 + features.BATCH_FRAMES * features.HOP


def test_silence_is_rejected() -> None:
    with pytest.raises(BadAudioError, match="silent"):
        analysis.analyze_blocks([np.zeros(analysis.SR * 3, dtype=np.float32)])


def test_too_short_is_rejected() -> None:
    with pytest.raises(BadAudioError, match="too short"):
        analysis.analyze_blocks([np.zeros(100, dtype=np.float32)])


def test_probe_rejects_non_audio(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a song\n" * 50)
    with pytest.raises(BadAudioError):
        audio.probe(junk)


def test_json_is_small_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "clicks.wav"
    write_click_track(path, 120.0, 8.0)
    data = analysis.analyze_file(path).to_json()
    assert set(data) >= {"tempo", "beats", "downbeats", "onsets", "sections", "duration"}
    assert {"start", "end", "label"} <= set(data["sections"][0])


def test_ported_rhythm_equals_librosa(real_song: Path) -> None:
    """rhythm.py re-implements librosa's beat tracker (at a given tempo) and onset picker (to avoid an
    uncached numba compile at import); on a real song it must give exactly librosa's answers."""
    import librosa
    from vibecraft_renderer import rhythm

    stream = features.FeatureStream()
    for block in audio.decode_blocks(real_song):
        stream.push(block)
    env = stream.finish()["onset_env"]
    sr, rate = features.SR, features.FRAME_RATE
    bpm = float(librosa.feature.tempo(onset_envelope=env, sr=sr)[0])
    _, expected = librosa.beat.beat_track(onset_envelope=env.astype(np.float64), sr=sr, bpm=bpm)
    assert np.array_equal(rhythm.beat_track(env, bpm, rate), expected)
    assert np.array_equal(rhythm.onset_frames(env, rate), librosa.onset.onset_detect(onset_envelope=env, sr=sr))


def test_an_envelope_moves_earlier_or_later_by_whole_frames_and_keeps_its_length() -> None:
    """analysis._earlier (the onset lead, and bench_react's "without the lead"): what moves out is dropped,
    what it leaves is zero."""
    from vibecraft_renderer.analysis import _earlier

    env = np.arange(1, 6, dtype=np.float32)
    assert _earlier(env, 1).tolist() == [2, 3, 4, 5, 0]
    assert _earlier(env, -2).tolist() == [0, 0, 1, 2, 3]
    assert _earlier(env, 0).tolist() == env.tolist()
    assert not _earlier(env, 9).any() and not _earlier(env, -9).any()
