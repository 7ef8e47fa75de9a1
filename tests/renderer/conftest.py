"""Renderer test fixtures: synthetic songs with known beats, a trimmed real song."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from .helpers import REAL_SONGS, write_click_track


@pytest.fixture(scope="session")
def click120(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """10 s at 120 BPM, WAV."""
    path = tmp_path_factory.mktemp("audio") / "click120.wav"
    return path, write_click_track(path, 120.0, 10.0)


@pytest.fixture(scope="session")
def click100(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """9 s at 100 BPM, encoded to FLAC (a compressed format goes through the same ffmpeg path)."""
    d = tmp_path_factory.mktemp("audio")
    wav = d / "click100.wav"
    beats = write_click_track(wav, 100.0, 9.0, offset=0.4, seed=1)
    flac = d / "click100.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(flac)], check=True)
    return flac, beats


def _crossroads(tmp_path_factory: pytest.TempPathFactory, name: str, *cut: str) -> Path:
    """HyperRogue's "Crossroads" (48 s, Ogg Vorbis) cut with ffmpeg's input options `cut`."""
    src = REAL_SONGS / "hr3-crossroads.ogg"
    if not src.exists():
        pytest.skip(f"{src} not installed")
    out = tmp_path_factory.mktemp("audio") / name
    subprocess.run(["ffmpeg", "-v", "error", "-y", *cut, "-i", str(src), "-c:a", "libvorbis", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def real_song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s cut from a real song (Ogg Vorbis), skipping the intro."""
    return _crossroads(tmp_path_factory, "crossroads-20s.ogg", "-ss", "10", "-t", "20")


@pytest.fixture(scope="session")
def minute_song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of the same real song (played once and then again)."""
    return _crossroads(tmp_path_factory, "crossroads-60s.ogg", "-stream_loop", "1", "-t", "60")
