"""Renderer benchmark: a 3-minute song at 720p30 (and, with --long, a 60-minute one).

Prints analysis time, render wall time as a multiple of the song's length, frames/s, peak RSS,
and the ratio of the whole render to a floor measured in the same run on the same machine:
ffmpeg encoding the same number of 720p frames from a trivial source (lavfi color) with the
same x264 preset and CRF. A second reference, lavfi testsrc2 (moving pattern), shows how much of
the gap is x264 having real motion to encode rather than our overhead.

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
TARGETS = {"analysis_s": 5.0, "render_x": 0.5, "floor_ratio": 1.5, "rss_mb": 600.0, "long_rss_ratio": 1.5}


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
    available = [SONGS / p for p in PIECES if (SONGS / p).exists()]
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


def render(song: Path, out: Path, preset: str, work: Path) -> Run:
    report = work / f"report-{out.name}.json"
    cmd = [sys.executable, "-m", "vibecraft_renderer", str(song), "-o", str(out), "--width", str(WIDTH),
           "--height", str(HEIGHT), "--fps", str(FPS), "--preset", preset, "--report", str(report),
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


def floor(frames: int, preset: str, crf: int, source: str, work: Path) -> tuple[float, float]:
    """(wall, CPU) seconds for ffmpeg to encode `frames` 720p frames of a lavfi source, same settings."""
    cpu0 = children_cpu()
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}:s={WIDTH}x{HEIGHT}:r={FPS}",
                    "-frames:v", str(frames), "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                    "-pix_fmt", "yuv420p", str(work / f"floor-{source.split('=')[0]}.mp4")], check=True)  # fmt: skip
    return time.perf_counter() - start, children_cpu() - cpu0


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ultrafast", help="x264 preset for render and floor (renderer default)")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--long", action="store_true", help="also render a 60-minute song (takes a while)")
    ap.add_argument("--keep", help="keep outputs in this directory")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="vibecraft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    try:
        print(f"machine: {os.cpu_count()} CPUs; preset {args.preset}, crf {args.crf}, {WIDTH}x{HEIGHT}@{FPS}")
        song = make_song(work / "song-3min.ogg", 180.0)
        subprocess.run([sys.executable, "-m", "vibecraft_renderer", "--warmup"], check=True, capture_output=True)
        cold, warm = warm_analysis(song)
        run = render(song, work / "out-3min", args.preset, work)
        frames = int(run.report["frames"])  # type: ignore[call-overload]
        duration = float(run.report["duration"])  # type: ignore[arg-type]
        stages: dict[str, float] = run.report["stageSeconds"]  # type: ignore[assignment]
        t_color = floor(frames, args.preset, args.crf, "color=c=0x336699", work)
        t_moving = floor(frames, args.preset, args.crf, "testsrc2=alpha=0", work)

        print(f"\n3-minute song ({duration:.0f} s, {frames} frames)")
        row("metric", "measured", "target")
        a_ok = stages.get("analyzing", 0) <= TARGETS["analysis_s"]
        row("analysis in the render (incl. imports)", f"{stages.get('analyzing', 0):.2f} s", "<= 5 s", a_ok)
        row("analysis in-process, first call / warm", f"{cold:.2f} / {warm:.2f} s")
        x = run.wall / duration
        row("render wall time", f"{run.wall:.1f} s")
        row("render CPU time (renderer + ffmpeg)", f"{run.cpu:.1f} s")
        row("render time / song length", f"{x:.2f}x", "<= 0.5x", x <= TARGETS["render_x"])
        row("frames/s (whole render)", f"{frames / run.wall:.1f}")
        row("frames/s (composing+encoding stage)", f"{frames / max(stages.get('composing', 1e-9), 1e-9):.1f}")
        row("floor: ffmpeg lavfi color, same frames", f"{t_color[0]:.1f} s")
        fr = run.wall / t_color[0]
        row("render / floor (wall)", f"{fr:.2f}x", "<= 1.5x", fr <= TARGETS["floor_ratio"])
        row("render / floor (CPU seconds)", f"{run.cpu:.0f} / {t_color[1]:.0f} = {run.cpu / t_color[1]:.2f}x")
        row("reference: ffmpeg lavfi testsrc2 (motion)", f"{t_moving[0]:.1f} s")
        row("render / testsrc2 (wall; CPU)", f"{run.wall / t_moving[0]:.2f}x; {run.cpu / t_moving[1]:.2f}x")
        load = os.getloadavg()[0]
        row("load average at the end (2 CPUs)", f"{load:.1f}")
        row("peak RSS, renderer process", f"{run.peak_rss_py:.0f} MB", "<= 600 MB", run.peak_rss_py <= TARGETS["rss_mb"])
        row("peak RSS, renderer + ffmpeg (sampled)", f"{run.peak_rss_tree:.0f} MB")
        row("stage seconds", " ".join(f"{k[:4]}={v:.1f}" for k, v in stages.items()))
        ok = ok and a_ok and x <= TARGETS["render_x"] and fr <= TARGETS["floor_ratio"]
        ok = ok and run.peak_rss_py <= TARGETS["rss_mb"]

        if args.long:
            long_song = synth_song(work / "song-60min.wav", 3600.0)
            long_run = render(long_song, work / "out-60min", args.preset, work)
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
