"""A preview (spec.preview, issue 21 part 3) of a 3-minute song against its full render, in the same run.

The preview is what a user waits for before choosing a style: `vibecraft-render --preview`, a new process
as a Job's pod runs it (interpreter, imports and the numba cache load included), on real music at the
default spec (1280x720 30 fps, so the preview is 640x360 30 fps). Targets (issue 21): wall <= 10 s, 360p,
15 s +- 1 frame. The baseline is the full render of the same song and spec; the second preview shows what
the analysis cache saves (the full render after a preview starts the same way), and the full render after
the preview has its analysis from it.

    python bench/bench_preview.py [--minutes 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_renderer import FPS, HEIGHT, WIDTH, make_song

TARGET_WALL_S = 10.0
PREVIEW_HEIGHT, PREVIEW_SECONDS = 360, 15.0


def run(song: Path, out: Path, *extra: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "vibecraft_renderer", str(song), "-o", str(out), "--width", str(WIDTH),
           "--height", str(HEIGHT), "--fps", str(FPS), "-q", *extra]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBECRAFT_")}
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"render failed: {res.stderr[-2000:]}")
    return time.perf_counter() - start, res.stderr


def probe(video: Path) -> dict[str, tuple[int, int, float, int]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height,duration,nb_frames",
                          "-of", "json", str(video)], capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {s["codec_type"]: (int(s.get("width", 0)), int(s.get("height", 0)), float(s["duration"]),
                              int(s.get("nb_frames", 0))) for s in json.loads(out)["streams"]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    try:
        song = make_song(work / "song.ogg", args.minutes * 60)
        cold, _ = run(song, work / "preview", "--preview")
        warm, _ = run(song, work / "preview", "--preview")
        full, log = run(song, work / "preview")  # the same output: the full render after the preview
        reused = "the song's analysis from an earlier render" in log
        cold_again, _ = run(song, work / "check", "--preview")
        streams = probe(work / "check" / "video.mp4")
        report = json.loads((work / "check" / "analysis.json").read_text())["preview"]
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    w, h, vdur, frames = streams["video"]
    adur = streams["audio"][2]
    frame = 1.0 / FPS
    print(f"song {args.minutes:g} min, spec {WIDTH}x{HEIGHT} {FPS} fps")
    print(f"preview (new output, cold):  {cold:5.1f} s wall   (again, another new output: {cold_again:.1f} s)")
    print(f"preview (analysis cached):   {warm:5.1f} s wall")
    print(f"full render after it:        {full:5.1f} s wall   (analysis from the preview: {reused})")
    print(f"preview / full render:       {cold / full:5.3f}")
    print(f"preview: {w}x{h}, {frames} frames, video {vdur:.3f} s, audio {adur:.3f} s, from {report['startSeconds']} s")
    misses = []
    if max(cold, cold_again) > TARGET_WALL_S:
        misses.append(f"preview wall {max(cold, cold_again):.1f} s > {TARGET_WALL_S:g} s")
    if h != PREVIEW_HEIGHT:
        misses.append(f"preview height {h} != {PREVIEW_HEIGHT}")
    if abs(vdur - PREVIEW_SECONDS) > frame + 1e-6 or abs(adur - PREVIEW_SECONDS) > frame + 1e-6:
        misses.append(f"preview lasts {vdur:.3f} s (video) / {adur:.3f} s (audio), not 15 s +- 1 frame")
    if not reused:
        misses.append("the full render analysed the song again")
    for miss in misses:
        print(f"MISSED: {miss}")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
