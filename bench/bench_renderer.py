"""Renderer benchmark: a 60 s and a 3-minute song at 720p30 (and, with --long, a 60-minute one).

Prints analysis time, render wall time as a multiple of the song's length, peak RSS, and the render
against two yardsticks measured in the same run on the same machine (issue 20):

  x264-alone floor  our own output decoded to raw yuv420p beforehand (not timed), then encoded by
                    ffmpeg/x264 with the renderer's preset, CRF and thread count: what x264 needs
                    for *these* frames, with no drawing, scaling or analysis
  showcqt peer      ffmpeg's own audio visualizer (showcqt=s=1280x720:r=30) + libx264 with the
                    same preset and CRF + AAC: what a user could run instead

and a quality figure: SSIM (ffmpeg's ssim filter, "All") of the 60 s render against a lossless
render of the same frames (--crf 0), so speed does not come from worse pictures.

    python bench/bench_renderer.py [--preset ultrafast] [--long] [--keep DIR]

Exit status 1 when a target is missed (figures are printed either way).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SONGS = Path("/usr/share/hyperrogue/music")
PIECES = ["hr3-hell.ogg", "hr3-graveyard.ogg", "hr3-rlyeh.ogg"]
WIDTH, HEIGHT, FPS = 1280, 720, 30
TARGETS = {"analysis_s": 5.0, "render_x": 0.5, "x264_ratio": 1.25, "peer_ratio": 1.0, "rss_mb": 600.0,
           "long_rss_ratio": 1.5, "ssim_drop": 0.0}
# The 60 s render against its lossless reference, measured before issue 20 (2026-11-30, ultrafast crf 23;
# x264 is deterministic with frame threads, so the figure repeats exactly on the same frames).
SSIM_BASELINE = 0.9875


def children_cpu() -> float:
    """CPU seconds (user+sys) of all waited-for descendants so far: insensitive to other load."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Run:
    wall: float
    cpu: float
    peak_rss_py: float  # MB, the renderer process (its own getrusage high-water mark)
    peak_rss_tree: float  # MB, renderer + ffmpeg children, sampled
    report: dict[str, object]


def make_song(dest: Path, seconds: float) -> Path:
    """Real music cut to length if available (concatenated pieces), else a synthetic groove."""
    available = [SONGS / p for p in PIECES if (SONGS / p).exists()] * 3  # ~19 min: cut to length below
    if available:
        inputs: list[str] = []
        for p in available:
            inputs += ["-i", str(p)]
        chain = "".join(f"[{i}:a]" for i in range(len(available)))
        subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex",
                        f"{chain}concat=n={len(available)}:v=0:a=1[a]", "-map", "[a]", "-t", str(seconds),
                        "-c:a", "libvorbis", "-q:a", "4", str(dest)], check=True)  # fmt: skip
        return dest
    return synth_song(dest, seconds)


def synth_song(dest: Path, seconds: float, sr: int = 22050) -> Path:
    """A synthetic groove of any length, written in chunks (an hour never sits in memory)."""
    rng = np.random.default_rng(0)
    bpm = 124.0
    period = 60.0 / bpm
    chunk = 30.0
    with sf.SoundFile(dest, "w", samplerate=sr, channels=1, subtype="PCM_16", format="WAV") as fh:
        t0 = 0.0
        while t0 < seconds:
            n = int(min(chunk, seconds - t0) * sr)
            t = t0 + np.arange(n) / sr
            section = int(t0 // 60) % 4  # a new "section" every minute
            y = 0.08 * np.sin(2 * np.pi * (110 + 27.5 * section) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 8))
            phase = np.mod(t, period)
            y += 0.6 * np.sin(2 * np.pi * 55 * phase) * np.exp(-phase * 18)  # kick
            off = np.mod(t + period / 2, period)
            y += 0.05 * rng.standard_normal(n) * np.exp(-off * 60)  # hats
            fh.write((0.7 * y / 1.2).astype(np.float32))
            t0 += chunk
    return dest


def sample_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    """Peak summed RSS (MB) of a process and its children, sampled at 10 Hz."""
    peak = 0.0
    while not stop.is_set():
        total = 0
        pids = [pid]
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
        for p in pids:
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        peak = max(peak, total / 1024)
        stop.wait(0.1)
    out.append(peak)


def render(song: Path, out: Path, preset: str, work: Path, crf: int = 23) -> Run:
    report = work / f"report-{out.name}.json"
    cmd = [sys.executable, "-m", "vibecraft_renderer", str(song), "-o", str(out), "--width", str(WIDTH),
           "--height", str(HEIGHT), "--fps", str(FPS), "--preset", preset, "--crf", str(crf), "--report", str(report),
           "--work-dir", str(work), "-q"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBECRAFT_")}
    cpu0 = children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop, peaks = threading.Event(), list[float]()
    sampler = threading.Thread(target=sample_rss, args=(proc.pid, stop, peaks))
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"render failed ({proc.returncode}):\n{err[-3000:]}")
    data = json.loads(report.read_text())
    return Run(wall, children_cpu() - cpu0, float(data["peakRssMb"]), peaks[0] if peaks else 0.0, data)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one command run to completion (CPU: user+sys of it and its children)."""
    cpu0 = children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - cpu0


def encode_cpus() -> int:
    """The CPUs the renderer may use (its own rule: affinity and cgroup quota)."""
    from vibecraft_renderer.encode import effective_cpus

    return int(effective_cpus())


def x264_floor(video: Path, preset: str, crf: int, work: Path) -> tuple[float, float]:
    """(wall, CPU) for x264 alone to encode the frames of `video`, decoded to raw yuv420p beforehand.

    Same preset, CRF, GOP, colour tags and thread count as the renderer's segment encoder; the raw file
    is read from the page cache (an hour of 720p would not fit; a few minutes do on this machine).
    """
    from vibecraft_renderer.encode import x264_threads

    raw = work / "floor.yuv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                    str(raw)], check=True)  # fmt: skip
    subprocess.run(["cat", str(raw)], check=True, stdout=subprocess.DEVNULL)  # into the page cache
    try:
        return timed(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p",
                      "-s", f"{WIDTH}x{HEIGHT}", "-framerate", str(FPS), "-i", str(raw),
                      "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                      "-threads", str(x264_threads()), "-g", str(2 * FPS), "-an", str(work / "floor.mp4")])  # fmt: skip
    finally:
        raw.unlink()


def showcqt_peer(song: Path, preset: str, crf: int, work: Path) -> tuple[float, float]:
    """(wall, CPU) for ffmpeg's own visualizer to make a 720p30 video of the song, same x264 settings."""
    return timed(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(song),
                  "-filter_complex", f"[0:a]showcqt=s={WIDTH}x{HEIGHT}:r={FPS},format=yuv420p[v]",
                  "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                  "-c:a", "aac", "-b:a", "192k", str(work / "peer.mp4")])  # fmt: skip


def ssim(video: Path, reference: Path) -> float:
    """ffmpeg's SSIM (all planes) of video against reference, frame by frame."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(video), "-i", str(reference),
                          "-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stderr.splitlines() if "SSIM" in ln and "All:" in ln][-1]
    return float(line.split("All:")[1].split()[0])


def warm_analysis(song: Path) -> tuple[float, float]:
    """In-process analysis time: first call (imports included) and a second, warm one."""
    code = (
        "import time,sys; from pathlib import Path; t=time.perf_counter();"
        "from vibecraft_renderer.analysis import analyze_file; analyze_file(Path(sys.argv[1]));"
        "a=time.perf_counter()-t; t=time.perf_counter(); analyze_file(Path(sys.argv[1]));"
        "print(a, time.perf_counter()-t)"
    )  # fmt: skip  (decoding runs in ffmpeg, in parallel)
    out = subprocess.run([sys.executable, "-c", code, str(song)], capture_output=True, text=True, check=True).stdout
    cold, warm = (float(x) for x in out.split())
    return cold, warm


def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"  {name:<44} {value:>14}  {target:>10}  {mark}")


def song_round(seconds: float, args: argparse.Namespace, work: Path, quality: bool) -> tuple[bool, Run]:
    """Render one song and its two yardsticks; print the rows; whether every target was met."""
    tag = f"{seconds:.0f}s"
    song = make_song(work / f"song-{tag}.ogg", seconds)
    run = render(song, work / f"out-{tag}", args.preset, work, crf=args.crf)
    video = work / f"out-{tag}" / "video.mp4"
    frames = int(run.report["frames"])  # type: ignore[call-overload]
    duration = float(run.report["duration"])  # type: ignore[arg-type]
    stages: dict[str, float] = run.report["stageSeconds"]  # type: ignore[assignment]
    floor_wall, floor_cpu = x264_floor(video, args.preset, args.crf, work)
    peer_wall, peer_cpu = showcqt_peer(song, args.preset, args.crf, work)

    print(f"\n{duration:.0f} s song ({frames} frames, {WIDTH}x{HEIGHT}@{FPS}, {args.preset} crf {args.crf})")
    row("metric", "measured", "target")
    a_ok = stages.get("analyzing", 0) <= TARGETS["analysis_s"]
    row("analysis in the render (incl. imports)", f"{stages.get('analyzing', 0):.2f} s", "<= 5 s", a_ok)
    x = run.wall / duration
    row("render wall time", f"{run.wall:.1f} s")
    row("render time / song length", f"{x:.2f}x", "<= 0.5x", x <= TARGETS["render_x"])
    row("render CPU time (renderer + ffmpeg)", f"{run.cpu:.1f} s")
    row("x264 alone, same frames (wall; CPU)", f"{floor_wall:.1f} s; {floor_cpu:.1f} s")
    fr = run.wall / floor_wall
    row("render / x264-alone floor (wall)", f"{fr:.2f}x", "<= 1.25x", fr <= TARGETS["x264_ratio"])
    row("render / x264-alone floor (CPU)", f"{run.cpu / floor_cpu:.2f}x")
    cores = encode_cpus()
    row(f"render CPU / {cores} cores / floor (best possible)", f"{run.cpu / cores / floor_wall:.2f}x")
    row("showcqt peer (wall; CPU)", f"{peer_wall:.1f} s; {peer_cpu:.1f} s")
    pr = run.wall / peer_wall
    row("render / showcqt peer (wall)", f"{pr:.2f}x", "<= 1.0x", pr <= TARGETS["peer_ratio"])
    row("peak RSS, renderer process", f"{run.peak_rss_py:.0f} MB", "<= 600 MB", run.peak_rss_py <= TARGETS["rss_mb"])
    row("peak RSS, renderer + ffmpeg (sampled)", f"{run.peak_rss_tree:.0f} MB")
    row("stage seconds", " ".join(f"{k[:4]}={v:.1f}" for k, v in stages.items()))
    ok = a_ok and x <= TARGETS["render_x"] and fr <= TARGETS["x264_ratio"] and pr <= TARGETS["peer_ratio"]
    ok = ok and run.peak_rss_py <= TARGETS["rss_mb"]
    if quality:
        render(song, work / f"ref-{tag}", args.preset, work, crf=0)  # lossless: the frames as drawn
        ref_video = work / f"ref-{tag}" / "video.mp4"
        value = ssim(video, ref_video)
        ref_video.unlink()
        q_ok = value >= SSIM_BASELINE - TARGETS["ssim_drop"]
        row("SSIM vs lossless render of the same frames", f"{value:.4f}", f">= {SSIM_BASELINE:.4f}", q_ok)
        ok = ok and q_ok
    return ok, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ultrafast", help="x264 preset for render and yardsticks (renderer default)")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--long", action="store_true", help="also render a 60-minute song (takes a while)")
    ap.add_argument("--keep", help="keep outputs in this directory")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="vibecraft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"machine: {os.cpu_count()} CPUs; preset {args.preset}, crf {args.crf}, {WIDTH}x{HEIGHT}@{FPS}")
        subprocess.run([sys.executable, "-m", "vibecraft_renderer", "--warmup"], check=True, capture_output=True)
        cold, warm = warm_analysis(make_song(work / "song-analysis.ogg", 180.0))
        print(f"analysis of a 3-minute song in-process, first call (imports included) / warm: {cold:.2f} / {warm:.2f} s")
        ok60, _ = song_round(60.0, args, work, quality=True)
        ok180, run = song_round(180.0, args, work, quality=False)
        ok = ok60 and ok180
        print(f"  load average at the end ({os.cpu_count()} CPUs): {os.getloadavg()[0]:.1f}")

        if args.long:
            long_song = synth_song(work / "song-60min.wav", 3600.0)
            long_run = render(long_song, work / "out-60min", args.preset, work, crf=args.crf)
            ratio = long_run.peak_rss_py / run.peak_rss_py
            print("\n60-minute song")
            row("render wall time", f"{long_run.wall:.0f} s")
            row("render CPU time", f"{long_run.cpu:.0f} s")
            row("render time / song length", f"{long_run.wall / 3600.0:.2f}x")
            row("peak RSS, renderer process", f"{long_run.peak_rss_py:.0f} MB")
            row("peak RSS, renderer + ffmpeg (sampled)", f"{long_run.peak_rss_tree:.0f} MB")
            row("peak RSS 60 min / 3 min", f"{ratio:.2f}x", "<= 1.5x", ratio <= TARGETS["long_rss_ratio"])
            ok = ok and ratio <= TARGETS["long_rss_ratio"]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
