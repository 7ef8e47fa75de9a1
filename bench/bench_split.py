"""A render split over several processes, as an Indexed Job splits it over pods (issue 20, part 2).

One 10-minute song (real music, 1280x720 30 fps ultrafast) rendered three ways on this machine:

  parallelism 1   `vibecraft-render` in one process (the STAGE_ALL path, today's one-pod Job)
  parallelism p   p chunk processes started together (`--stage segments --chunks p`, chunk 0 prepares
                  the plan, the others wait for it), then `--stage join`: what the pods of an Indexed
                  Job and the join Job run, minus Kubernetes

Chunk k is pinned to core k mod cores (taskset): with 2 cores, parallelism 2 gives each chunk a core
and 4 gives each half of one, as a pod's CPU limit would (the renderer sizes x264's threads from its
affinity). On 2 cores the wall time cannot fall much; what this measures is the work: CPU-seconds of
the split render against the one-process render (target <= 1.15: splitting must not waste work). From the measured stages it
projects the wall time of a 60-minute song on N 2-core nodes with one pod each:

  wall(N) = plan + max(ceil(S / N) * segment, soundtrack) + join

where `plan` is the prepare stage's time until it publishes the plan (the chunks start then),
`soundtrack` the rest of it (the AAC encode, published after the plan; only the join needs it),
`segment` the wall time of one 30 s segment in a pod that has a 2-core node to itself (the
one-process render's composing time per segment), S = 120 segments; plan, soundtrack and join scale
linearly with the song from the 10-minute measurement. Pod start-up and scheduling are not in it.

    python bench/bench_split.py [--minutes 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_renderer import FPS, HEIGHT, WIDTH, children_cpu, make_song

TARGET_WORK_RATIO = 1.15
SEGMENT_SECONDS = 30.0


def cli(song: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vibecraft_renderer", str(song), "-o", str(out), "--width", str(WIDTH),
            "--height", str(HEIGHT), "--fps", str(FPS), "--segment-seconds", str(SEGMENT_SECONDS), "-q", *extra]  # fmt: skip


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VIBECRAFT_") and k != "JOB_COMPLETION_INDEX"}


def one_process(song: Path, work: Path) -> tuple[float, float, dict[str, float], float]:
    """(wall, CPU, stage seconds, song seconds) of the one-process render."""
    report = work / "report-1.json"
    cpu0, start = children_cpu(), time.perf_counter()
    subprocess.run(cli(song, work / "out-1", "--report", str(report)), env=env(), check=True)
    wall = time.perf_counter() - start
    data = json.loads(report.read_text())
    return wall, children_cpu() - cpu0, data["stageSeconds"], float(data["duration"])


def split(song: Path, work: Path, p: int) -> tuple[float, float, float, float]:
    """(wall, CPU, chunks wall, join wall) of the render split into p chunks."""
    out = work / f"out-{p}"
    cpu0, start = children_cpu(), time.perf_counter()
    cores = sorted(os.sched_getaffinity(0))
    # Chunk k runs on core k mod cores, as if its pod had been given 1/ceil(p/cores) of a node core (the
    # renderer sizes x264's threads from its affinity, as it would from a pod's CPU limit); unpinned,
    # p renderers each starting x264 threads for the whole machine cost ~20-30 % more CPU in switching.
    procs = [subprocess.Popen(["taskset", "-c", str(cores[k % len(cores)]),
                               *cli(song, out, "--stage", "segments", "--chunks", str(p), "--chunk", str(k))], env=env())
             for k in range(p)]  # fmt: skip
    if any(proc.wait() != 0 for proc in procs):
        raise SystemExit(f"a chunk failed at parallelism {p}")
    chunks = time.perf_counter() - start
    subprocess.run(cli(song, out, "--stage", "join"), env=env(), check=True)
    wall = time.perf_counter() - start
    return wall, children_cpu() - cpu0, chunks, wall - chunks


def prepare_seconds(song: Path, work: Path) -> tuple[float, float]:
    """Wall time of the prepare stage alone until its plan is published (the chunks may start) and until
    it exits (the soundtrack, encoded beside the analysis, published after the plan)."""
    out = work / "out-prepare"
    start = time.perf_counter()
    proc = subprocess.Popen(cli(song, out, "--stage", "prepare"), env=env())
    plan = out / "segments" / "plan.json"
    while not plan.exists() and proc.poll() is None:
        time.sleep(0.05)
    planned = time.perf_counter() - start
    if proc.wait() != 0:
        raise SystemExit("the prepare stage failed")
    return planned, time.perf_counter() - start


def song_args(doc: str | None, prefix: str, keep: str) -> tuple[argparse.Namespace, Path, float]:
    """The split benches' command line (--minutes, --keep DIR): (args, work dir, song seconds)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--keep", help=keep)
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return args, work, args.minutes * 60.0


def main() -> int:
    args, work, seconds = song_args(__doc__, "vibecraft-bench-split-", "keep outputs in this directory")
    try:
        song = make_song(work / "song.ogg", seconds)
        subprocess.run([sys.executable, "-m", "vibecraft_renderer", "--warmup"], check=True, capture_output=True)
        wall1, cpu1, stages, seconds = one_process(song, work)
        rows = [(1, wall1, cpu1, stages.get("composing", 0.0), stages.get("encoding", 0.0))]
        for p in (2, 4):
            wall, cpu, chunks, join = split(song, work, p)
            rows.append((p, wall, cpu, chunks, join))
        prep, prep_all = prepare_seconds(song, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    cores = len(os.sched_getaffinity(0))
    print(f"\n{seconds / 60:.1f}-minute song, {WIDTH}x{HEIGHT}@{FPS} ultrafast, {SEGMENT_SECONDS:g} s segments; "
          f"{cores} cores; chunk k pinned to core k mod {cores}")
    print(f"  {'parallelism':>11}  {'wall':>8}  {'CPU':>8}  {'CPU / one process':>17}  {'chunks | join':>15}")
    ok = True
    for p, wall, cpu, chunks, join in rows:
        ratio = cpu / cpu1
        mark = "" if p == 1 else ("ok" if ratio <= TARGET_WORK_RATIO else "MISSED")
        ok = ok and (p == 1 or ratio <= TARGET_WORK_RATIO)
        what = f"{chunks:6.1f} | {join:4.1f}" if p > 1 else f"compose {chunks:.1f}"
        print(f"  {p:>11}  {wall:7.1f}s  {cpu:7.1f}s  {ratio:16.2f}x  {what:>15}  {mark}")
    n_segments = math.ceil(seconds / SEGMENT_SECONDS)
    per_segment = rows[0][3] / n_segments  # composing wall per segment with the whole machine
    join_s = rows[1][4]
    scale = 3600.0 / seconds
    print(f"  work ratio target <= {TARGET_WORK_RATIO} (CPU-seconds of the split render / the one-process render)")
    long_segments = math.ceil(3600.0 / SEGMENT_SECONDS)
    print("\nprojection, 60-minute song on N 2-core nodes, one pod each:")
    print(f"  wall(N) = plan + max(ceil({long_segments} / N) x segment, soundtrack after the plan) + join")
    print(f"  measured here for {seconds / 60:.1f} min (x{scale:.2f} for 60 min): plan published after {prep:.1f} s, "
          f"soundtrack {prep_all - prep:.1f} s later, join {join_s:.1f} s; segment {per_segment:.1f} s (30 s of video)")
    for n in (1, 2, 4, 8, 16):
        chunks = max(math.ceil(long_segments / n) * per_segment, (prep_all - prep) * scale)
        total = prep * scale + chunks + join_s * scale
        print(f"  N = {n:>2}: {total:7.0f} s  ({total / 3600.0:.2f}x the song)")
    print(json.dumps({"bench": "split", **{f"p{p} work ratio": round(cpu / cpu1, 3) for p, _, cpu, _, _ in rows}}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
