"""Test helpers: synthetic songs with known beats, running the CLI, probing the results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

from tests.harness import wait_for

RENDER = [sys.executable, "-m", "vibecraft_renderer"]
REAL_SONGS = Path("/usr/share/hyperrogue/music")


def write_click_track(
    path: Path, bpm: float, seconds: float, sr: int = 44100, offset: float = 0.25, seed: int = 0
) -> np.ndarray:
    """A drum-machine-like track: kick+click on every beat (accented on beat one), hats on the
    off-beats (the classic trap for trackers) and a quiet pad. Returns the true beat times."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = 0.04 * np.sin(2 * np.pi * 110.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t))
    period = 60.0 / bpm
    beats = np.arange(offset, seconds - 0.05, period)
    k = np.arange(int(0.12 * sr)) / sr
    kick = np.sin(2 * np.pi * (55.0 + 60.0 * np.exp(-k * 40.0)) * k) * np.exp(-k * 25.0)
    c = np.arange(int(0.02 * sr)) / sr
    click = np.sin(2 * np.pi * 2000.0 * c) * np.exp(-c * 300.0)
    # A hi-hat is noise above ~5 kHz; white noise would also thump the bass band, unlike any cymbal.
    noise = np.fft.rfft(rng.standard_normal(int(0.03 * sr)))
    noise[: int(5000 * noise.size / (sr / 2))] = 0.0
    hat = np.fft.irfft(noise, n=int(0.03 * sr)) * np.exp(-np.arange(int(0.03 * sr)) / (0.005 * sr))
    hat *= 3.0 / max(float(np.abs(hat).max()), 1e-9)
    for i, b in enumerate(beats):
        s = round(b * sr)
        accent = 1.0 if i % 4 == 0 else 0.6
        for sound, gain, at in ((kick, 0.7 * accent, s), (click, 0.3 * accent, s), (hat, 0.08, s + int(period * sr / 2))):
            end = min(n, at + sound.size)
            if at < n:
                y[at:end] += gain * sound[: end - at]
    sf.write(path, (0.8 * y / np.max(np.abs(y))).astype(np.float32), sr, subtype="PCM_16")
    return beats


def run_render(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI as the Job would (a separate process), capturing output."""
    full_env = dict(os.environ)
    full_env.pop("VIBECRAFT_SPEC_JSON", None)
    full_env.pop("VIBECRAFT_MUSICVIDEO_NAME", None)
    full_env.update(env or {})
    return subprocess.run([*RENDER, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


T = TypeVar("T")


def kill_when(proc: subprocess.Popen[Any], found: Callable[[], T], what: str, timeout: float = 120,
              interval: float = 0.01) -> T:
    """Wait, while the render `proc` runs, for `found()` to return something (say, its first checkpoint);
    then kill it (SIGKILL: a crash) and return that. A render that exits first, or a timeout, fails."""

    def check() -> T:
        value = found()
        if not value and proc.poll() is not None:
            raise AssertionError(f"the render exited ({proc.returncode}) before {what}")
        return value

    try:
        return wait_for(check, timeout=timeout, interval=interval, what=what)
    finally:
        proc.kill()
        proc.wait()


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    data: dict[str, Any] = json.loads(out)
    return data


def count_frames(path: Path) -> int:
    """Decode and count (not the header's nb_frames)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.strip())


def audio_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.strip())


def frame_signals(path: Path, size: tuple[int, int] = (32, 18)) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean luma, and mean absolute RGB difference to the previous frame (decoded tiny)."""
    w, h = size
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"scale={w}:{h}:flags=area", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, h, w, 3).astype(np.float32)
    luma = frames.mean(axis=(1, 2, 3))
    diff = np.zeros(len(frames), dtype=np.float32)
    diff[1:] = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    return luma, diff


def near(times: np.ndarray, targets: np.ndarray, tol: float) -> np.ndarray:
    """For each time, whether some target lies within tol."""
    if len(targets) == 0:
        return np.zeros(len(times), dtype=bool)
    idx = np.clip(np.searchsorted(targets, times), 1, len(targets) - 1)
    dist = np.minimum(np.abs(times - targets[idx - 1]), np.abs(times - targets[idx]))
    return np.asarray(dist <= tol)


def beat_frames(beats: np.ndarray, fps: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The frames nearest each beat, as (at_or_after, at_or_before). A click track's beat can fall
    exactly between two frames (0.25 s + k/2 at 30 fps): either frame is then the nearest one."""
    pos = np.asarray(beats) * fps
    after = np.floor(pos + 0.5 + 1e-6).astype(int)
    before = np.ceil(pos - 0.5 - 1e-6).astype(int)
    keep = (before > 0) & (after < n_frames)
    return after[keep], before[keep]


def rise_on_beats(luma: np.ndarray, beats: np.ndarray, fps: float) -> np.ndarray:
    """How much brighter the picture gets on the frame nearest each beat (the larger of the two
    when a beat falls between frames)."""
    rise = np.diff(luma, prepend=luma[0])
    after, before = beat_frames(beats, fps, len(luma))
    out: np.ndarray = np.maximum(rise[after], rise[before])
    return out



def video_frame(video: Path, at: float, size: tuple[int, int], gray: bool = False) -> np.ndarray:
    """The frame shown at `at` s, as (height, width, 3) RGB or (height, width) gray."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{at:.3f}", "-i", str(video), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "gray" if gray else "rgb24", "pipe:1"],
                         capture_output=True, check=True).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], *(() if gray else (3,)))


def caption_inks(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The captions' white fill and their sung-gold fill (captions.KARAOKE_COLOUR) in an RGB image; the
    picture's bright but coloured edges and the black outline are neither."""
    c = rgb.astype(np.int16)
    hi, lo = c.max(axis=2), c.min(axis=2)
    white = (lo > 200) & (hi - lo < 40)
    gold = (c[..., 0] > 220) & (c[..., 1] > 170) & (c[..., 1] < 235) & (c[..., 2] < 70)
    return white, gold


def caption_text(video: Path, at: float, size: tuple[int, int], top: float = 0.65) -> str:
    """OCR (tesseract) of the captions below `top` (a fraction of the height) in the frame shown at `at` s:
    their white and gold fill kept as black ink on white, everything else blanked."""
    white, gold = caption_inks(video_frame(video, at, size)[int(size[1] * top):])
    ink = np.where(white | gold, 0, 255).astype(np.uint8)
    pgm = b"P5 %d %d 255\n" % (ink.shape[1], ink.shape[0]) + ink.tobytes()
    out = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "6"], input=pgm, capture_output=True, check=True)
    return out.stdout.decode(errors="replace")


def write_kick_song(path: Path, seconds: float = 20.0, sr: int = 22050, seed: int = 3) -> np.ndarray:
    """A pad, hi-hats on a steady 120 BPM eighth-note grid, and kicks at irregular times (0.35..1.6 s apart, off
    the grid): a song whose kick envelope is not its beat. Returns the kick times."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    y = 0.05 * np.sin(2 * np.pi * 220 * t) + 0.04 * np.sin(2 * np.pi * 277 * t)
    spectrum = np.fft.rfft(rng.standard_normal(660))
    spectrum[:81] = 0.0  # a hi-hat is noise above ~2.7 kHz
    hat = np.fft.irfft(spectrum, n=660) * np.exp(-np.arange(660) / (0.004 * sr))
    hat *= 0.25 / np.abs(hat).max()
    k = np.arange(int(0.15 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-k * 35)) * k) * np.exp(-k * 20)
    kicks, at = [], 0.3
    while at < seconds - 0.3:
        kicks.append(at)
        at += rng.uniform(0.35, 1.6)
    for sound, gain, times in ((hat, 1.0, np.arange(0.1, seconds, 0.25)), (kick, 0.9, kicks)):
        for start in times:
            s = int(start * sr)
            y[s:s + sound.size] += gain * sound[: max(0, min(sound.size, n - s))]
    sf.write(path, (0.8 * y / np.abs(y).max()).astype(np.float32), sr)
    return np.array(kicks)
