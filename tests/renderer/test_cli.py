"""CLI behaviour as the Job uses it: spec from env, termination log, warm-up, numba cache seeding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from vibecraft_renderer import cli

from .helpers import count_frames, run_render


def test_from_env_renders_the_spec(click100: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "prefix"
    spec = {"audio": {"url": f"file://{click100[0]}"}, "output": {"url": f"file://{out}/"},
            "style": {"backend": "procedural", "seed": 4}, "retries": 2,
            "video": {"aspectRatio": "1:1", "height": 128, "fps": 12, "cutEvery": "bar", "preset": "ultrafast"}}  # fmt: skip
    log = tmp_path / "termination-log"
    # No arguments at all: the Job's env is enough.
    res = run_render([], env={"VIBECRAFT_SPEC_JSON": json.dumps(spec), "VIBECRAFT_TERMINATION_LOG": str(log)})
    assert res.returncode == 0, res.stderr
    assert count_frames(out / "video.mp4") == round(9.0 * 12)
    assert {p.name for p in out.iterdir()} >= {"video.mp4", "thumbnail.jpg", "analysis.json"}
    assert log.read_text().startswith("ok: ")


def test_spec_file(click100: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    spec_file = tmp_path / "mv.json"
    spec_file.write_text(json.dumps({"spec": {"audio": {"url": str(click100[0])},
                                              "output": {"url": str(tmp_path / "o.mp4")},
                                              "video": {"width": 96, "height": 64, "fps": 10}}}))  # fmt: skip
    res = run_render(["--spec", str(spec_file)])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o.mp4").exists()


def test_warmup(tmp_path: Path) -> None:
    res = run_render(["--warmup", "-v"])
    assert res.returncode == 0, res.stderr
    assert "warmup done" in res.stderr


def test_termination_log_is_optional(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIBECRAFT_TERMINATION_LOG", str(tmp_path / "missing-dir" / "log"))
    cli.write_termination_log("nothing breaks")  # unwritable: ignored
    monkeypatch.setenv("VIBECRAFT_TERMINATION_LOG", str(tmp_path / "log"))
    cli.write_termination_log("line one\nline two")
    assert (tmp_path / "log").read_text() == "line one line two\n"


def test_numba_cache_seeded_from_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seed = tmp_path / "baked"
    (seed / "librosa").mkdir(parents=True)
    (seed / "librosa" / "x.nbi").write_text("index")
    scratch = tmp_path / "scratch" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(scratch))
    monkeypatch.setenv("VIBECRAFT_NUMBA_CACHE_SEED", str(seed))
    cli.ensure_numba_cache()
    assert (scratch / "librosa" / "x.nbi").read_text() == "index"
    assert os.environ["NUMBA_CACHE_DIR"] == str(scratch)


def test_usage_error_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBECRAFT_TERMINATION_LOG", str(tmp_path / "log"))
    monkeypatch.delenv("VIBECRAFT_SPEC_JSON", raising=False)
    assert cli.main(["--fps", "30"]) == 2
    assert "AUDIO" in (tmp_path / "log").read_text()


def test_parallelism_hands_its_chunks_the_command_line_without_itself() -> None:
    from vibecraft_renderer.cli import _child_argv

    argv = ["song.ogg", "-o", "out.mp4", "--parallelism", "3", "--report=r.json", "--fps", "10", "--report", "x"]
    assert _child_argv(argv, None) == ["song.ogg", "-o", "out.mp4", "--fps", "10"]
    assert _child_argv(["--spec", "-", "--parallelism=auto"], Path("/tmp/s.json")) == ["--spec", "/tmp/s.json"]
    assert _child_argv(["--spec=-"], Path("/tmp/s.json")) == ["--spec=/tmp/s.json"]
    assert _child_argv(["-o", "-", "x"], Path("/tmp/s.json")) == ["-o", "-", "x"]  # only --spec's dash
