"""A render killed mid-way resumes from its checkpoints instead of starting over."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .helpers import RENDER, count_frames, frame_signals, kill_when, rise_on_beats, run_render, write_click_track


def test_killed_render_resumes_from_finished_segments(tmp_path: Path) -> None:
    audio = tmp_path / "song.wav"
    beats = write_click_track(audio, 120.0, 14.0)
    out = tmp_path / "out"
    args = [str(audio), "-o", str(out), "--width", "320", "--height", "180", "--fps", "30",
            "--segment-seconds", "2", "--work-dir", str(tmp_path / "work"), "-q"]  # fmt: skip
    (tmp_path / "work").mkdir()

    proc = subprocess.Popen([*RENDER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = kill_when(proc, lambda: min(out.glob("segments/*/seg-00000.mp4"), default=None),
                      what="a first checkpoint", timeout=120, interval=0.01)

    assert not (out / "video.mp4").exists()  # nothing at the final key after a crash
    done_before = {p.name: p.stat().st_mtime_ns for p in first.parent.glob("seg-*.mp4")}
    assert "seg-00000.mp4" in done_before and len(done_before) < 7

    res = run_render([*args, "--keep-segments"])
    assert res.returncode == 0, res.stderr
    for name, mtime in done_before.items():
        assert f"reusing {name}" in res.stderr
        assert (first.parent / name).stat().st_mtime_ns == mtime  # not re-rendered
    assert f"{len(done_before)} reused" in res.stderr
    assert len(list(first.parent.glob("seg-*.mp4"))) == 7

    video = out / "video.mp4"
    assert count_frames(video) == 14 * 30
    # Beats stay on the picture's pulses after joining old and new segments.
    luma, _ = frame_signals(video)
    assert (rise_on_beats(luma, beats, 30) > 0).mean() >= 0.8


def test_changed_spec_does_not_reuse_checkpoints(tmp_path: Path) -> None:
    audio = tmp_path / "song.wav"
    write_click_track(audio, 100.0, 5.0)
    out = tmp_path / "out"
    base = [str(audio), "-o", str(out), "--width", "160", "--height", "90", "--segment-seconds", "2",
            "--keep-segments", "-q"]  # fmt: skip
    assert run_render(base).returncode == 0
    res = run_render([*base, "--seed", "9"])
    assert res.returncode == 0, res.stderr
    assert "reusing" not in res.stderr
    assert len([p for p in (out / "segments").iterdir() if p.is_dir()]) == 2


def test_success_drops_the_checkpoints_of_earlier_specs_too(tmp_path: Path) -> None:
    """An edited spec renders under a new key; once its video is published nothing of the old one stays."""
    audio = tmp_path / "song.wav"
    write_click_track(audio, 100.0, 5.0)
    out = tmp_path / "out"
    base = [str(audio), "-o", str(out), "--width", "160", "--height", "90", "--segment-seconds", "2", "-q"]
    assert run_render([*base, "--keep-segments"]).returncode == 0  # an earlier spec's checkpoints, left behind
    assert any((out / "segments").rglob("manifest.json"))
    res = run_render([*base, "--seed", "9"])
    assert res.returncode == 0, res.stderr
    assert not (out / "segments").exists()
    assert (out / "video.mp4").exists()
