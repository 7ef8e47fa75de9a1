"""Platform-ready output (issue 21, part 5): the soundtrack at -14 LUFS, and frames sized for a platform.

Loudness is read back from the rendered MP4 with ffmpeg's EBU R128 meter (`ebur128`), the way a platform
measures it, for a real song made quiet (-20 dB) and loud (+12 dB into a limiter), and with normalisation off.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from vibecraft_common.limits import LOUDNESS_TARGET_LUFS, PLATFORM_SIZES
from vibecraft_renderer.encode import AudioEncoder, gain_filters, loudness_measured

from .helpers import run_render


def integrated_lufs(media: Path) -> float:
    """Integrated loudness of the first audio stream (EBU R128, ffmpeg's ebur128 summary)."""
    err = subprocess.run(["ffmpeg", "-nostats", "-hide_banner", "-i", str(media), "-map", "0:a:0",
                          "-af", "ebur128=framelog=verbose", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr  # fmt: skip
    return float(re.findall(r"I:\s+(-?[0-9.]+) LUFS", err)[-1])


@pytest.fixture(scope="module")
def levels(real_song: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("levels")
    out = {}
    # Loud as a loudness-war master: 12 dB up into a brickwall limiter (no samples beyond full scale, which a
    # float Vorbis stream could carry and an AAC encode would then clip).
    for name, chain in (("quiet", "volume=-20dB"), ("loud", "volume=12dB,alimiter=limit=0.9:level=false")):
        out[name] = d / f"{name}.ogg"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(real_song), "-af", chain,
                        "-c:a", "libvorbis", str(out[name])], check=True)  # fmt: skip
    return out


@pytest.mark.parametrize("level", ["quiet", "loud"])
def test_the_soundtrack_is_normalised_to_the_platform_loudness(levels: dict[str, Path], level: str,
                                                               tmp_path: Path) -> None:
    song = levels[level]
    before = integrated_lufs(song)
    assert abs(before - LOUDNESS_TARGET_LUFS) > 5, before  # the input is really off target
    out = tmp_path / "v.mp4"
    res = run_render([str(song), "-o", str(out), "--width", "160", "--height", "90", "--fps", "10", "-q"])
    assert res.returncode == 0, res.stderr
    assert abs(integrated_lufs(out) - LOUDNESS_TARGET_LUFS) <= 1.0, (before, integrated_lufs(out))
    kept = tmp_path / "kept.mp4"
    res = run_render([str(song), "-o", str(kept), "--width", "160", "--height", "90", "--fps", "10", "-q",
                      "--no-normalize"])
    assert res.returncode == 0, res.stderr
    assert abs(integrated_lufs(kept) - before) <= 1.0  # the song's own level (AAC and stereo aside)


def test_silence_is_left_silent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The meter reads no loudness in silence: no gain to compute, the song is encoded as it is (the renderer
    refuses a silent song before it matters; the soundtrack encoder must not fail on one anyway)."""
    song = tmp_path / "silence.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", "4",
                    str(song)], check=True)  # fmt: skip
    caplog.set_level("INFO")
    with AudioEncoder(song, tmp_path / "s.m4a", 22050, normalize=True) as encoder:
        assert encoder.result().stat().st_size > 0
    assert "silent or unmeasurable song, its level is kept" in caplog.text
    silent = "  Integrated loudness:\n    I:         -70.0 LUFS\n  True peak:\n    Peak:       -inf dBFS"
    assert loudness_measured(silent) is None
    assert loudness_measured("    I:         -20.5 LUFS\n    Peak:       -3.1 dBFS") == (-20.5, -3.1)


def test_the_gain_is_one_number_and_the_limiter_comes_only_when_peaks_would_pass_the_ceiling() -> None:
    assert gain_filters(-8.0, -0.1) == "volume=-6.00dB"  # a loud master: turned down, nothing else
    assert gain_filters(-20.0, -10.0) == "volume=6.00dB"  # quiet, with room above its peaks
    assert gain_filters(-20.0, -3.0).startswith("volume=6.00dB,alimiter=limit=0.8414")  # +6 dB would reach +3 dBTP
    assert gain_filters(-60.0, -40.0) == "volume=30.00dB"  # near silence: not turned into loud noise


@pytest.mark.parametrize("platform", ["shorts", "square"])
def test_a_platform_sets_the_frame(click100: tuple[Path, object], platform: str, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    res = run_render([str(click100[0]), "-o", str(out), "--platform", platform, "--fps", "5", "-q"])
    assert res.returncode == 0, res.stderr
    size = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                           "-of", "csv=p=0", str(out)], capture_output=True, text=True, check=True).stdout.strip()
    assert tuple(int(v) for v in size.split(",")) == PLATFORM_SIZES[platform]
    res = run_render([str(click100[0]), "-o", str(out), "--platform", platform, "--width", "640", "--height", "360"])
    assert res.returncode != 0 and "video.platform sets the frame size" in res.stderr
