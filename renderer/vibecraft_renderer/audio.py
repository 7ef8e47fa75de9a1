"""Probing and decoding input audio with ffmpeg, so any format ffmpeg reads is accepted.

Decoding is streamed as mono float32 at a reduced rate in fixed-size blocks: a 2 h song never sits
in memory as PCM (it would be 600+ MB at 22 kHz).
"""

from __future__ import annotations

import json
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import numpy as np
import numpy.typing as npt
from vibecraft_common.limits import AUDIO_DEMUXERS

from .errors import BadAudioError

SAMPLE_RATE: Final = 22050
MAX_DURATION_S: Final = 2 * 3600.0
MIN_DURATION_S: Final = 1.0
SILENCE_PEAK: Final = 1e-4  # -80 dBFS: nothing a viewer could hear
BLOCK_SAMPLES: Final = SAMPLE_RATE * 8
QUEUE_BLOCKS: Final = 3  # decoded-ahead blocks: ~2 MB
# What ffmpeg/ffprobe may open for an input whose contents a tenant chose (their audio, a model's image):
# local files and pipes only. An HLS playlist, a concat script or another reference format in disguise
# names further URLs, which ffmpeg would otherwise open itself, from inside the cluster and past the
# egress guard (egress.py); "crypto" and "data", in ffmpeg's default list for files, are not needed either.
UNTRUSTED_INPUT_OPTIONS: Final = ("-protocol_whitelist", "file,pipe")


def untrusted_input(path: Path) -> list[str]:
    """ffmpeg/ffprobe arguments opening `path`, a file whose contents a tenant chose, as an input."""
    return [*UNTRUSTED_INPUT_OPTIONS, "-i", str(path)]


@dataclass(frozen=True)
class AudioInfo:
    """What ffprobe says about the input before we spend time decoding it."""

    duration: float | None
    codec: str
    sample_rate: int
    channels: int


def _fmt_duration(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m{rem % 60:02d}s"


def _ffmpeg_reason(stderr: str, path: Path, fallback: str) -> str:
    """ffmpeg's last error line, without the local file's path (`/scratch/.../input-1a2b-song.ogg: `):
    a downloaded input's scratch copy means nothing to the user, who gave a URL."""
    line = (stderr.strip().splitlines() or [fallback])[-1]
    return line.replace(f"{path}: ", "").replace(str(path), "the input").strip() or fallback


def probe_command(path: Path) -> list[str]:
    """The ffprobe command probe() runs: stream and format facts as JSON, headers only."""
    return ["ffprobe", "-v", "error", "-show_entries",
            "stream=codec_type,codec_name,sample_rate,channels,duration:format=duration,format_name",
            "-of", "json", *untrusted_input(path)]  # fmt: skip


def probe(path: Path, name: str | None = None) -> AudioInfo:
    """Reject non-audio, empty and over-long inputs cheaply (ffprobe reads only headers).

    `name` is what the messages call the input: the user's URL, redacted (storage.redact), when
    `path` is the scratch copy of a download; the path itself by default.
    """
    shown = name or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadAudioError(f"cannot read {shown}: {exc.strerror}") from None
    if size == 0:
        raise BadAudioError(f"{shown} is empty (0 bytes)")
    proc = subprocess.run(probe_command(path), capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise BadAudioError(f"{shown} is not decodable audio: {_ffmpeg_reason(proc.stderr, path, 'unknown format')}")
    data = json.loads(proc.stdout or "{}")
    demuxer = str(data.get("format", {}).get("format_name") or "")
    if not AUDIO_DEMUXERS.intersection(demuxer.split(",")):
        raise BadAudioError(f"{shown} is not an audio file this renderer reads (ffmpeg sees {demuxer or 'nothing'}; "
                            f"accepted: {', '.join(sorted(AUDIO_DEMUXERS))})")
    audio = [s for s in data.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio:
        raise BadAudioError(f"{shown} has no audio stream (not an audio file?)")
    stream = audio[0]
    duration: float | None = None
    for raw in (stream.get("duration"), data.get("format", {}).get("duration")):
        try:
            duration = float(raw)
            break
        except (TypeError, ValueError):
            continue
    if duration is not None and duration > MAX_DURATION_S:
        raise BadAudioError(f"{shown} is {_fmt_duration(duration)} long; the limit is {_fmt_duration(MAX_DURATION_S)}")
    return AudioInfo(
        duration=duration,
        codec=str(stream.get("codec_name", "?")),
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
    )


def _pump(stdout: IO[bytes], out: queue.Queue[bytes | BaseException], nbytes: int, stop: threading.Event) -> None:
    """Read ffmpeg's PCM on a thread, so decoding (ffmpeg, another core) overlaps our FFTs."""
    item: bytes | BaseException
    while not stop.is_set():
        try:
            item = stdout.read(nbytes)
        except BaseException as exc:  # reported by the consumer
            item = exc
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if not isinstance(item, bytes) or not item:
            return


def decode_command(path: Path) -> list[str]:
    """The ffmpeg command decode_blocks() runs: the first audio stream as mono float32 PCM on stdout."""
    return ["ffmpeg", "-nostdin", "-v", "error", *untrusted_input(path), "-map", "0:a:0", "-vn",
            "-ac", "1", "-ar", str(SAMPLE_RATE), "-t", str(MAX_DURATION_S + 1.0),
            "-f", "f32le", "pipe:1"]  # fmt: skip


def decode_blocks(path: Path, block: int = BLOCK_SAMPLES, name: str | None = None) -> Iterator[npt.NDArray[np.float32]]:
    """Yield mono float32 PCM at SAMPLE_RATE in blocks; enforces the duration limit while streaming.

    `name`: what errors call the input (as in probe()).
    """
    shown = name or str(path)
    cmd = decode_command(path)
    # stderr goes to a file: a pipe nobody reads would stall ffmpeg on a very broken input.
    errfile = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the generator's finally
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile)
    assert proc.stdout is not None
    blocks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=QUEUE_BLOCKS)
    stop = threading.Event()
    reader = threading.Thread(target=_pump, args=(proc.stdout, blocks, block * 4, stop), daemon=True)
    reader.start()
    total = 0
    limit = int(MAX_DURATION_S * SAMPLE_RATE)
    try:
        while True:
            raw = blocks.get()
            if isinstance(raw, BaseException):
                raise BadAudioError(f"reading decoded audio failed: {raw}")
            if not raw:
                break
            usable = len(raw) - len(raw) % 4
            samples = np.frombuffer(raw[:usable], dtype=np.float32)
            total += samples.size
            if total > limit:
                raise BadAudioError(f"{shown} is longer than the {_fmt_duration(MAX_DURATION_S)} limit")
            yield samples
        code = proc.wait()
        errfile.seek(0)
        err = errfile.read(64 * 1024).decode(errors="replace").strip()
        if code != 0 and total == 0:
            raise BadAudioError(f"{shown} is not decodable audio: {_ffmpeg_reason(err, path, 'decoder failed')}")
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()
        errfile.close()


def check_decoded(n_samples: int, peak: float) -> float:
    """Turn decode totals into a duration, rejecting zero-length and silent audio."""
    duration = n_samples / SAMPLE_RATE
    if duration < MIN_DURATION_S:
        raise BadAudioError(f"audio is too short ({duration:.2f} s); need at least {MIN_DURATION_S:g} s")
    if peak < SILENCE_PEAK:
        raise BadAudioError(f"audio is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)")
    return duration
