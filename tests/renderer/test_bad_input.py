"""Bad inputs fail fast with a clear reason, a distinct exit code, and nothing at the final key."""

from __future__ import annotations

import http.server
import json
import threading
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from vibecraft_common.resource import (
    ENV_EGRESS_ALLOW,
    EXIT_BAD_AUDIO,
    EXIT_DOWNLOAD_FAILED,
    EXIT_INPUT_NOT_FOUND,
    EXIT_UPLOAD_FAILED,
    EXIT_USAGE,
    PERMANENT_EXIT_CODES,
)

from .helpers import run_render, write_click_track


def _wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def not_audio(d: Path) -> Path:
    p = d / "notes.mp3"
    p.write_text("definitely not audio\n" * 100)
    return p


def empty(d: Path) -> Path:
    p = d / "empty.mp3"
    p.write_bytes(b"")
    return p


def zero_length(d: Path) -> Path:
    return _wav(d / "zero.wav", np.zeros(0, dtype=np.int16), 44100)


def silent(d: Path) -> Path:
    return _wav(d / "silent.wav", np.zeros(44100 * 3, dtype=np.int16), 44100)


def too_long(d: Path) -> Path:
    # 2 h 02 min at 1 kHz, 8-bit: 7 MB on disk, decodes like any other WAV.
    n = 7320 * 1000
    tone = (128 + 60 * np.sin(np.arange(n) * 0.3)).astype(np.uint8)
    return _wav(d / "long.wav", tone, 1000, width=1)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (not_audio, "not decodable audio"),
        (empty, "empty"),
        (zero_length, "too short"),
        (silent, "silent"),
        (too_long, "limit is 2h00m"),
    ],
)
def test_bad_audio(tmp_path: Path, make: Callable[[Path], Path], needle: str) -> None:
    src = make(tmp_path)
    log = tmp_path / "termination-log"
    out = tmp_path / "out"
    res = run_render([str(src), "-o", str(out), "-q"], env={"VIBECRAFT_TERMINATION_LOG": str(log)})
    assert res.returncode == EXIT_BAD_AUDIO, res.stderr
    reason = log.read_text()
    assert needle in reason and reason.count("\n") == 1
    assert not (out / "video.mp4").exists()


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    # The server is on loopback, which the egress guard refuses unless allow-listed; run_render passes
    # this env on to the renderer process.
    monkeypatch.setenv(ENV_EGRESS_ALLOW, "127.0.0.1/32")
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_http_input(http_root: tuple[str, Path], tmp_path: Path) -> None:
    url, root = http_root
    write_click_track(root / "song.wav", 120.0, 4.0)
    out = tmp_path / "v.mp4"
    res = run_render([f"{url}/song.wav", "-o", str(out), "--width", "160", "--height", "90", "-q"])
    assert res.returncode == 0, res.stderr
    assert out.exists() and (tmp_path / "v.analysis.json").exists()


def test_undecodable_input_is_named_by_its_url_not_a_scratch_path(http_root: tuple[str, Path], tmp_path: Path) -> None:
    """The reason a user reads (termination log → status.lastFailure) names their URL, redacted."""
    url, root = http_root
    (root / "song.ogg").write_text("definitely not audio\n" * 100)
    log, work = tmp_path / "termination-log", tmp_path / "scratch"
    work.mkdir()
    res = run_render([f"{url}/song.ogg?X-Amz-Signature=secret", "-o", str(tmp_path / "out"), "-q",
                      "--work-dir", str(work)], env={"VIBECRAFT_TERMINATION_LOG": str(log)})  # fmt: skip
    assert res.returncode == EXIT_BAD_AUDIO, res.stderr
    reason = log.read_text().strip()
    assert reason.startswith(f"{url}/song.ogg is not decodable audio: "), reason
    for said in (reason, res.stderr):
        assert "secret" not in said and str(work) not in said and "input-" not in said, said


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("{url}/missing.wav", EXIT_INPUT_NOT_FOUND),  # 404: the server says it is not there
        ("http://127.0.0.1:9/song.wav", EXIT_DOWNLOAD_FAILED),  # nobody answers: may work later
        ("file:///nonexistent/song.wav", EXIT_INPUT_NOT_FOUND),
        ("/nonexistent/song.ogg", EXIT_INPUT_NOT_FOUND),
    ],
)
def test_unreachable_input(http_root: tuple[str, Path], tmp_path: Path, source: str, code: int) -> None:
    log = tmp_path / "termination-log"
    res = run_render([source.format(url=http_root[0]), "-o", str(tmp_path / "out"), "-q"],
                     env={"VIBECRAFT_TERMINATION_LOG": str(log)})  # fmt: skip
    assert res.returncode == code, res.stderr
    assert log.read_text().strip()
    assert (code in PERMANENT_EXIT_CODES) == (code == EXIT_INPUT_NOT_FOUND)


def test_unwritable_output_fails_before_rendering(tmp_path: Path, click120: tuple[Path, np.ndarray]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_render([str(click120[0]), "-o", str(blocker / "sub" / "v.mp4"), "-q"])
    assert res.returncode == EXIT_UPLOAD_FAILED
    assert "cannot write" in res.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["song.wav"], {}),
        (["song.wav", "-o", "x.mp4", "--width", "641", "--height", "360"], {}),
        (["song.wav", "-o", "x.mp4", "--cut-every", "sometimes"], {}),
        (["--from-env"], {"VIBECRAFT_SPEC_JSON": json.dumps({"audio": {"url": "s3://b/a.ogg"}})}),
        (["--from-env"], {"VIBECRAFT_SPEC_JSON": "{broken"}),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    log = tmp_path / "termination-log"
    res = run_render(args, env={**env, "VIBECRAFT_TERMINATION_LOG": str(log)})
    assert res.returncode == EXIT_USAGE, res.stderr
    assert log.read_text().strip()
