"""A render split into stages (prepare, segments chunk by chunk, join) makes the same video as one process.

The stages are what an Indexed Job's pods run (issue 20): the frames at every chunk boundary must be
the same frames, the soundtrack the same bytes, and a join before every segment exists must refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vibecraft_common.resource import (
    ENV_CHUNKS,
    ENV_COMPLETION_INDEX,
    ENV_PLAN_WAIT,
    ENV_STAGE,
    EXIT_INTERNAL,
    EXIT_USAGE,
)
from vibecraft_renderer import segments

from .helpers import RENDER, count_frames, run_render


def stream_md5(video: Path, stream: str) -> str:
    """md5 of every decoded frame of one stream (framemd5 lines), so container details do not count."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-map", f"0:{stream}", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return "\n".join(line.rsplit(",", 1)[-1].strip() for line in out.splitlines() if not line.startswith("#"))


def test_chunks_cover_every_segment_once_contiguously() -> None:
    plan = segments.plan_frames(1000, 90)
    for count in (1, 2, 3, 4, 11, 12, 20):
        parts = [segments.chunk(plan, k, count) for k in range(count)]
        assert [s for part in parts for s in part] == plan
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        segments.chunk(plan, 3, 3)


def test_split_render_equals_one_process_render(real_song: Path, tmp_path: Path) -> None:
    common = [str(real_song), "--width", "320", "--height", "180", "--fps", "24", "--segment-seconds", "3", "-q"]
    one, split = tmp_path / "one", tmp_path / "split"
    assert (res := run_render([*common, "-o", str(one)])).returncode == 0, res.stderr

    res = run_render([*common, "-o", str(split), "--stage", "prepare"])
    assert res.returncode == 0, res.stderr
    plan = json.loads((split / "segments" / "plan.json").read_text())
    assert plan["frames"] == 20 * 24 and plan["segments"] == 7 and not (split / "video.mp4").exists()
    key_dir = split / "segments" / plan["key"]
    assert {p.name for p in key_dir.iterdir()} == {"analysis-state.npz", "soundtrack.m4a", "manifest.json"}

    log = tmp_path / "termination"
    res = run_render([*common, "-o", str(split), "--stage", "join"], env={"VIBECRAFT_TERMINATION_LOG": str(log)})
    assert res.returncode == EXIT_INTERNAL
    assert log.read_text().strip() == "cannot join: 7 of 7 segments are not rendered (first missing: seg-00000.mp4)"

    # Chunks in any order; the last one from the env an Indexed Job's pod gets.
    for k in (2, 0):
        res = run_render([*common, "-o", str(split), "--stage", "segments", "--chunk", str(k), "--chunks", "3"])
        assert res.returncode == 0, res.stderr
    res = run_render([*common, "-o", str(split)], env={ENV_STAGE: "segments", ENV_CHUNKS: "3", ENV_COMPLETION_INDEX: "1"})
    assert res.returncode == 0, res.stderr
    assert "chunk 2/3" in res.stderr and "segments 3-4" in res.stderr
    assert sorted(p.name for p in key_dir.glob("seg-*.mp4")) == [f"seg-{i:05d}.mp4" for i in range(7)]

    # A chunk that prepared publishes the soundtrack after its segments and may die in between: the join
    # encodes it again from the song (the same bytes: the one-process render's audio below).
    (key_dir / "soundtrack.m4a").unlink()
    res = run_render([*common, "-o", str(split), "--stage", "join"])
    assert res.returncode == 0, res.stderr
    assert "encoding it from the song" in res.stderr
    assert count_frames(split / "video.mp4") == 20 * 24
    assert stream_md5(split / "video.mp4", "v") == stream_md5(one / "video.mp4", "v")
    assert stream_md5(split / "video.mp4", "a") == stream_md5(one / "video.mp4", "a")
    assert json.loads((split / "analysis.json").read_text()) == json.loads((one / "analysis.json").read_text())
    assert not (split / "segments").exists()  # checkpoints, state and plan go once the video is published

    # The CLI runs the same stages itself over local processes: the same video again.
    local = tmp_path / "local"
    res = run_render([*common, "-o", str(local), "--parallelism", "3"])
    assert res.returncode == 0, res.stderr
    assert "rendering 3 chunks in 3 processes" in res.stderr and "chunk 3/3 rendered" in res.stderr
    assert stream_md5(local / "video.mp4", "v") == stream_md5(one / "video.mp4", "v")
    assert stream_md5(local / "video.mp4", "a") == stream_md5(one / "video.mp4", "a")


def test_stages_refuse_a_missing_plan_prepare_over_another_specs_and_check_numbers(
    click100: tuple[Path, Any], tmp_path: Path
) -> None:
    audio = str(click100[0])
    out = tmp_path / "out"
    base = [audio, "-o", str(out), "--width", "160", "--height", "90", "-q"]
    log = tmp_path / "termination"
    env = {"VIBECRAFT_TERMINATION_LOG": str(log)}

    res = run_render([*base, "--stage", "join"], env=env)
    assert res.returncode == EXIT_INTERNAL
    assert log.read_text().strip() == (f"no render plan for this spec and song at {out}/segments/plan.json: "
                                       "the prepare stage has not run")  # fmt: skip

    assert run_render([*base, "--stage", "prepare"]).returncode == 0
    res = run_render([*base, "--seed", "5", "--stage", "join"], env=env)
    assert res.returncode == EXIT_INTERNAL and "no render plan for this spec and song" in log.read_text()
    # A plan left by another spec is not used: chunk 0 prepares again (and overwrites it).
    res = run_render([*base, "--seed", "5", "--stage", "segments"], env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "segments" / "plan.json").read_text())["inputs"]["spec"]["style"]["seed"] == 5

    for bad in (["--stage", "segments", "--chunk", "2", "--chunks", "2"], ["--chunk", "0"],
                ["--stage", "segments", "--chunks", "0"]):  # fmt: skip
        assert run_render([*base, *bad], env=env).returncode == EXIT_USAGE, bad
    assert run_render(base, env={**env, ENV_STAGE: "everything"}).returncode == EXIT_USAGE
    assert "must be one of all, prepare, segments, join" in log.read_text()
    assert run_render(base, env={**env, ENV_STAGE: "segments", ENV_CHUNKS: "0"}).returncode == EXIT_USAGE
    res = run_render([*base, "--stage", "segments", "--chunks", "2", "--chunk", "1", "--seed", "6"],
                     env={**env, ENV_PLAN_WAIT: "soon"})  # fmt: skip
    assert res.returncode == EXIT_USAGE and "must be seconds between 0 and 86400" in log.read_text()
    for bad in (["--parallelism", "0"], ["--parallelism", "17"], ["--parallelism", "many"],
                ["--parallelism", "2", "--stage", "join"]):
        res = run_render([*base, *bad], env=env)
        assert res.returncode == EXIT_USAGE and "parallelism" in res.stderr, (bad, res.stderr)


def test_chunks_started_together_analyse_the_song_once(click100: tuple[Path, Any], tmp_path: Path) -> None:
    """As in an Indexed Job: every chunk starts at once, without a prepare stage; chunk 0 prepares, the
    others wait for its plan. A chunk that waits in vain (chunk 0 never scheduled) prepares it itself."""
    out = tmp_path / "out"
    base = [*RENDER, str(click100[0]), "-o", str(out), "--width", "160", "--height", "90", "--segment-seconds", "1",
            "--stage", "segments", "--chunks", "3", "-v"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBECRAFT_")}
    procs = [subprocess.Popen([*base, "--chunk", str(k)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for k in (2, 1, 0)]  # fmt: skip
    logs = {k: p.communicate(timeout=300)[1] for k, p in zip((2, 1, 0), procs, strict=True)}
    assert all(p.returncode == 0 for p in procs), logs
    analysed = [k for k, text in logs.items() if "analysis: " in text]
    assert analysed == [0], analysed
    assert "waiting up to 180 s for chunk 1 to prepare it" in logs[2] + logs[1]
    assert run_render([str(click100[0]), "-o", str(out), "--width", "160", "--height", "90", "--segment-seconds", "1",
                       "--stage", "join", "-q"]).returncode == 0  # fmt: skip
    assert count_frames(out / "video.mp4") == 9 * 30

    alone = tmp_path / "alone"
    res = run_render([str(click100[0]), "-o", str(alone), "--width", "160", "--height", "90", "--stage", "segments",
                      "--chunks", "2", "--chunk", "1", "-v"], env={ENV_PLAN_WAIT: "1"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "analysis: " in res.stderr and (alone / "segments" / "plan.json").exists()


def test_analysis_state_round_trips_exactly(real_song: Path) -> None:
    from vibecraft_renderer import analysis

    an = analysis.analyze_file(real_song)
    back = analysis.load_state(analysis.dump_state(an))
    for name in analysis.STATE_ARRAYS:
        a, b = getattr(an, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert back.to_json() == an.to_json() and back.sections == an.sections and back.frame_rate == an.frame_rate
    with pytest.raises(ValueError, match="not an analysis state"):
        analysis.load_state(b"PK\x03\x04 not really")
