"""ffmpeg plumbing: the frame pipe, x264's thread count, the background soundtrack encoder."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from vibecraft_renderer import encode
from vibecraft_renderer.errors import EncodeError

from .helpers import ffprobe, write_click_track

F_GETPIPE_SZ = 1032


def test_grow_pipe_holds_whole_frames() -> None:
    r, w = os.pipe()
    try:
        got = encode.grow_pipe(w)
        assert got == fcntl.fcntl(w, F_GETPIPE_SZ)
        # The point: more than one 480x270 planar frame fits, so drawing and x264 overlap.
        assert got >= 2 * 3 * 480 * 270
    finally:
        os.close(r)
        os.close(w)


def test_grow_pipe_falls_back_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fcntl.fcntl

    def capped(fd: int, cmd: int, arg: int = 0) -> int:  # an unprivileged user over pipe-max-size
        if cmd == encode._F_SETPIPE_SZ and arg > 256 * 1024:
            raise PermissionError(1, "Operation not permitted")
        return int(real(fd, cmd, arg))

    monkeypatch.setattr(fcntl, "fcntl", capped)
    r, w = os.pipe()
    try:
        assert encode.grow_pipe(w) == 256 * 1024 == real(w, F_GETPIPE_SZ)
    finally:
        os.close(r)
        os.close(w)


def test_x264_threads_follow_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, threads in ((1, 1), (2, 3), (4, 6)):
        monkeypatch.setattr(encode, "effective_cpus", lambda c=cpus: c)
        assert encode.x264_threads() == threads


def test_soundtrack_encodes_in_the_background(tmp_path: Path) -> None:
    song = tmp_path / "clicks.wav"
    write_click_track(song, 120.0, 6.0)
    with encode.AudioEncoder(song, tmp_path / "a.m4a") as enc:
        assert os.getpriority(os.PRIO_PROCESS, enc._proc.pid) >= encode.NICE or enc._proc.poll() is not None
        out = enc.result()
    info = ffprobe(out)
    (stream,) = info["streams"]
    assert stream["codec_name"] == "aac" and stream["channels"] == 2
    assert abs(float(info["format"]["duration"]) - 6.0) < 0.1


def test_soundtrack_failure_is_an_encode_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF....WAVEfmt " + os.urandom(2000))
    with encode.AudioEncoder(bad, tmp_path / "a.m4a") as enc, pytest.raises(EncodeError, match="soundtrack"):
        enc.result()


def test_soundtrack_encoder_is_stopped_on_error_paths(tmp_path: Path) -> None:
    song = tmp_path / "clicks.wav"
    write_click_track(song, 120.0, 120.0)
    with pytest.raises(RuntimeError), encode.AudioEncoder(song, tmp_path / "a.m4a") as enc:
        proc = enc._proc
        time.sleep(0.2)
        raise RuntimeError("analysis failed")
    assert proc.returncode is not None  # killed and reaped, not left running


@pytest.mark.parametrize(("rate", "expected"), [(22050, 44100), (48000, 48000)])
def test_low_rate_soundtracks_are_resampled(tmp_path: Path, rate: int, expected: int) -> None:
    song = tmp_path / "clicks.wav"
    write_click_track(song, 120.0, 3.0, sr=rate)
    with encode.AudioEncoder(song, tmp_path / "a.m4a", rate) as enc:
        out = enc.result()
    (stream,) = ffprobe(out)["streams"]
    assert int(stream["sample_rate"]) == expected
