"""ffmpeg processes: encoding streamed frames into segments, joining them, muxing audio, thumbnails.

Frames go to ffmpeg through a stdin rawvideo pipe, one at a time: nothing is buffered beyond the
frame being drawn and the pipe. ffmpeg does the upscale and the RGB->YUV conversion in one
swscale pass, far cheaper than drawing output-resolution pixels in numpy.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import numpy as np
import numpy.typing as npt
from vibecraft_common import limits as L

from .audio import untrusted_input
from .errors import EncodeError

log = logging.getLogger(__name__)

AUDIO_BITRATE: Final = "192k"
PIPE_BYTES: Final = 1 << 20  # Linux's default limit for unprivileged pipe resizing
_F_SETPIPE_SZ: Final = 1031
NICE: Final = 10
LOW_RATE: Final = 32000  # below this, the soundtrack is resampled to AAC_RATE
AAC_RATE: Final = 44100
_BT709: Final = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]


def _stderr_tail(fh: IO[bytes]) -> str:
    fh.seek(0)
    lines = fh.read().decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-3:]) if lines else "no output"


def _finish(proc: subprocess.Popen[bytes], err: IO[bytes], what: str) -> None:
    """Wait for a streaming ffmpeg and close its stderr file; EncodeError with its tail on failure."""
    code = proc.wait()
    tail = _stderr_tail(err)
    err.close()
    if code != 0:
        raise EncodeError(f"ffmpeg failed encoding {what} (exit {code}): {tail}")


def run_ffmpeg(
    args: list[str], what: str, duration: float | None = None, on_progress: Callable[[float], None] | None = None
) -> None:
    """Run one ffmpeg command to completion; EncodeError with its last stderr lines on failure.

    With on_progress, ffmpeg's -progress output (out_time of the output) is turned into 0..1.
    """
    with tempfile.TemporaryFile() as err:
        progress = ["-progress", "pipe:1", "-nostats"] if on_progress and duration else []
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *progress, *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if progress else subprocess.DEVNULL, stderr=err)
        if progress and proc.stdout is not None and on_progress and duration:
            for line in proc.stdout:
                key, _, value = line.decode(errors="replace").strip().partition("=")
                if key == "out_time_us" and value.isdigit():
                    on_progress(min(1.0, int(value) / 1e6 / duration))
        if proc.wait() != 0:
            raise EncodeError(f"ffmpeg failed while {what}: {_stderr_tail(err)}")


def effective_cpus() -> int:
    """CPUs we may really use: affinity, capped by a cgroup CPU quota (a pod's limits.cpu).

    os.cpu_count() reports the node's cores; x264 would start threads for all of them and thrash
    under a 2-CPU quota.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def x264_threads() -> int:
    """x264's own rule (1.5 threads per core), applied to the CPUs we may really use.

    One extra frame thread keeps both cores busy while another waits on the frame pipe: measured
    15 % faster composing on 2 cores than one thread per core.
    """
    return max(1, effective_cpus() * 3 // 2)


def grow_pipe(fd: int, size: int = PIPE_BYTES) -> int:
    """Enlarge a pipe's buffer so the drawing thread and ffmpeg stop waiting on each other.

    The default 64 KiB holds a sixth of a 480x270 frame, so every frame was a lock-step hand-off;
    1 MiB holds ~2.7 frames. Returns the size in effect (unchanged where resizing is refused).
    """
    while size > 1 << 16:
        try:
            return int(fcntl.fcntl(fd, _F_SETPIPE_SZ, size))
        except OSError:
            size //= 2
    return 1 << 16


class SegmentEncoder:
    """One H.264 video-only segment fed with planar GBR frames at the internal resolution.

    Frames are written straight from the drawing thread into an enlarged pipe (grow_pipe), which
    decouples drawing from x264 as well as a writer thread did in measurements, without one.
    """

    def __init__(
        self,
        out: Path,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
        fps: int,
        preset: str,
        crf: int,
        pix_fmt: str = "gbrp",
        captions: Path | None = None,
        start_frame: int = 0,
    ) -> None:
        iw, ih = in_size
        ow, oh = out_size
        vf = f"scale={ow}:{oh}:flags=bicubic:out_color_matrix=bt709:out_range=tv,format=yuv420p"
        if captions is not None:
            # The script is in the song's time; this segment's frames start at 0: shifted to their place in the
            # song for libass, then back (ffmpeg runs in the script's directory: no path to escape in the graph).
            vf += (f",setpts=PTS+{start_frame}/({fps}*TB),ass=filename={captions.name},"
                   "setpts=PTS-STARTPTS")
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{iw}x{ih}", "-framerate", str(fps),
               "-i", "pipe:0", "-vf", vf,
               "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
               "-threads", str(x264_threads()),
               # A keyframe every 2 s keeps seeking snappy; segments always start with one.
               "-g", str(2 * fps), *_BT709,
               "-an", "-f", "mp4", os.path.abspath(out)]  # fmt: skip
        self.out = out
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the ffmpeg process
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err,
                                      cwd=captions.resolve().parent if captions is not None else None)
        assert self._proc.stdin is not None
        grow_pipe(self._proc.stdin.fileno())
        self.frames = 0

    @property
    def pid(self) -> int:
        """ffmpeg's pid (the memory guard counts its RSS too)."""
        return self._proc.pid

    def write(self, frame: npt.NDArray[np.uint8]) -> None:
        """Send one frame (blocks while x264 is behind: natural back-pressure)."""
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(np.ascontiguousarray(frame).data.cast("B"))
        except (BrokenPipeError, ValueError):
            self._proc.wait()
            raise EncodeError(f"ffmpeg stopped while encoding {self.out.name}: {_stderr_tail(self._err)}") from None
        self.frames += 1

    def close(self) -> None:
        """Finish the segment; raises EncodeError if ffmpeg failed."""
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        _finish(self._proc, self._err, self.out.name)

    def abort(self) -> None:
        """Kill ffmpeg on error paths."""
        self._proc.kill()
        self._proc.wait()
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._err.close()

    def __enter__(self) -> SegmentEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class AudioEncoder:
    """The AAC soundtrack, encoded in a background ffmpeg from the moment the audio is local.

    It runs niced on spare cycles during analysis and composing instead of being a serial step
    after the last frame (4.5 s of a 3-minute render); the final mux then only copies streams.
    With `normalize` (spec.audio.normalize) it is two passes in a background thread: ffmpeg's EBU R128
    meter measures the song's integrated loudness and true peak, then the encode applies the one gain
    that brings it to LOUDNESS_TARGET_LUFS (at most LOUDNESS_MAX_GAIN_DB up), with a limiter only when
    that gain would push the peaks above LOUDNESS_TRUE_PEAK_DBTP (a quiet song with loud transients).
    A silent song is left as it is.
    Not loudnorm: it resamples to 192 kHz, 3x the soundtrack's CPU (18.6 against 6.2 CPU-s for 3
    minutes); the meter and a gain cost 1.5 CPU-s more.
    """

    def __init__(self, audio: Path, out: Path, sample_rate: int = 0, normalize: bool = False,
                 window: tuple[float, float] | None = None) -> None:
        """`window` (start, seconds): only that stretch of the song (a preview), at the whole song's gain."""
        self.out = out
        self._window = window
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the ffmpeg process
        self._stopped = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if normalize:
            self._thread = threading.Thread(target=self._two_passes, args=(audio, out, sample_rate), daemon=True,
                                            name="soundtrack")  # fmt: skip
            self._thread.start()
        else:
            self._proc = self._start(self.command(audio, out, sample_rate, window=window), self._err)

    @staticmethod
    def _start(cmd: list[str], err: IO[bytes]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        with contextlib.suppress(OSError):  # it only has to be done by the end: analysis comes first
            os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
        return proc

    @staticmethod
    def command(audio: Path, out: Path, sample_rate: int = 0, gain: str | None = None,
                window: tuple[float, float] | None = None) -> list[str]:
        """The ffmpeg command: the user's audio (untrusted input) to a stereo AAC track in MP4 (`gain`: the
        normalising filters, gain_filters(); `window`: (start, seconds) of the song, cut after decoding, so
        exactly there)."""
        # 192k AAC at 22 kHz sends ffmpeg's rate loop searching for bits it cannot use: measured 2.4x
        # the CPU of the same audio resampled to 44.1 kHz (9 CPU-minutes for an hour).
        rate = ["-ar", str(AAC_RATE)] if 0 < sample_rate < LOW_RATE else []
        filters = ["-af", f"{STEREO},{gain}"] if gain is not None else []
        cut = ["-ss", f"{window[0]:.6f}", "-t", f"{window[1]:.6f}"] if window is not None else []
        return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *untrusted_input(audio),
                "-map", "0:a:0", "-vn", *filters, *cut, "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", "2", *rate,
                "-f", "mp4", str(out)]  # fmt: skip

    @staticmethod
    def measure_command(audio: Path) -> list[str]:
        """The first pass: EBU R128 integrated loudness and true peak, in the summary at the end of stderr."""
        return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "info", "-nostats", *untrusted_input(audio),
                "-map", "0:a:0", "-vn", "-af", f"{STEREO},ebur128=peak=true:framelog=verbose",
                "-f", "null", "-"]  # fmt: skip

    def _two_passes(self, audio: Path, out: Path, sample_rate: int) -> None:
        try:
            with tempfile.TemporaryFile() as log_fh:
                self._proc = self._start(self.measure_command(audio), log_fh)
                if self._proc.wait() != 0 or self._stopped:
                    log_fh.seek(0)
                    raise EncodeError(f"measuring the song's loudness failed: {_stderr_tail(log_fh)}")
                log_fh.seek(0)
                measured = loudness_measured(log_fh.read().decode(errors="replace"))
            gain = None
            if measured is None:
                log.info("soundtrack: silent or unmeasurable song, its level is kept")
            else:
                gain = gain_filters(*measured)
                log.info("soundtrack: %.1f LUFS, true peak %.1f dBTP measured: %s", *measured, gain)
            if not self._stopped:
                self._proc = self._start(self.command(audio, out, sample_rate, gain, self._window), self._err)
        except BaseException as exc:  # reported by result()
            self._failure = exc

    def result(self) -> Path:
        """Wait for the soundtrack; EncodeError if ffmpeg failed."""
        if self._thread is not None:
            self._thread.join()
            if self._failure is not None:
                raise self._failure
        assert self._proc is not None
        _finish(self._proc, self._err, "the soundtrack")
        return self.out

    def abort(self) -> None:
        """Stop the encoder (error paths, and after result() a harmless no-op)."""
        self._stopped = True
        if self._thread is not None:
            while self._thread.is_alive():
                proc = self._proc
                if proc is not None and proc.poll() is None:
                    proc.kill()
                self._thread.join(timeout=0.1)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._err.close()

    def __enter__(self) -> AudioEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()


# Both passes measure what is encoded: the song after the same downmix (5.1 folded into stereo).
STEREO: Final = "aformat=channel_layouts=stereo"
# The limiter works on samples, and AAC's own overshoot adds a little: half a dB of headroom below the
# true-peak ceiling keeps the encoded peaks near it (measured: -0.8 dBFS with the limiter at the ceiling).
LIMIT_HEADROOM_DB: Final = 0.5
SILENT_LUFS: Final = -69.0  # ebur128's absolute gate is -70 LUFS: at or below it there is nothing to measure


def loudness_measured(stderr: str) -> tuple[float, float] | None:
    """(integrated LUFS, true peak dBTP) from ebur128's summary; None for silence or no summary."""
    loudness = re.findall(r"I:\s+(-?[0-9.]+|-?inf) LUFS", stderr)
    peak = re.findall(r"Peak:\s+(-?[0-9.]+|-?inf) dBFS", stderr)
    if not loudness or not peak:
        return None
    values = float(loudness[-1]), float(peak[-1])
    return values if all(math.isfinite(v) for v in values) and values[0] > SILENT_LUFS else None


def gain_filters(lufs: float, true_peak: float) -> str:
    """The filters that bring a song measured at `lufs` to LOUDNESS_TARGET_LUFS: one gain, then, if that
    gain lifts the true peak above the ceiling, a limiter at the ceiling (its delay compensated, so the
    soundtrack stays aligned with the frames)."""
    gain = min(L.LOUDNESS_TARGET_LUFS - lufs, L.LOUDNESS_MAX_GAIN_DB)
    chain = f"volume={gain:.2f}dB"
    if true_peak + gain > L.LOUDNESS_TRUE_PEAK_DBTP:
        ceiling = 10 ** ((L.LOUDNESS_TRUE_PEAK_DBTP - LIMIT_HEADROOM_DB) / 20)
        chain += f",alimiter=limit={ceiling:.4f}:level=false:latency=true"
    return chain


def join_and_mux(
    segments: list[Path],
    soundtrack: Path,
    out: Path,
    work_dir: Path,
    duration: float | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> None:
    """Concatenate segments and add the encoded soundtrack, copying both (no re-encode)."""
    listing = work_dir / "concat.txt"
    listing.write_text("".join(f"file '{p.resolve().as_posix()}'\n" for p in segments))
    run_ffmpeg(
        ["-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(soundtrack),
         "-map", "0:v:0", "-map", "1:a:0", "-c", "copy",
         "-movflags", "+faststart", "-f", "mp4", str(out)],
        "joining segments and muxing audio",
        duration,
        on_progress,
    )  # fmt: skip


def thumbnail(video: Path, at_s: float, out: Path, max_width: int = 1280) -> None:
    """A JPEG still from the rendered video (seek is keyframe-accurate enough for a poster)."""
    run_ffmpeg(
        ["-ss", f"{max(0.0, at_s):.3f}", "-i", str(video), "-frames:v", "1",
         "-vf", f"scale='min({max_width},iw)':-2", "-q:v", "3", "-f", "image2", str(out)],
        "extracting the thumbnail",
    )  # fmt: skip
