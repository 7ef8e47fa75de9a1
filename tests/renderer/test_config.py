"""The spec model: MusicVideo JSON and CLI flags give the same validated config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vibecraft_common.limits import BEAT_OFFSET_MAX_SECONDS, BPM_MAX, BPM_MIN
from vibecraft_common.resource import EXIT_USAGE
from vibecraft_renderer.cli import build_parser, main, spec_from_args
from vibecraft_renderer.config import RuntimeOptions, runtime_from_env, spec_from_dict, spec_from_json
from vibecraft_renderer.errors import UsageError


def base(**video: object) -> dict[str, object]:
    return {"audio": {"url": "s3://b/song.ogg"}, "output": {"url": "s3://b/out/"}, "video": video}


def test_defaults_match_the_crd_defaults() -> None:
    spec = spec_from_dict(base())
    assert (spec.video.width, spec.video.height, spec.video.fps) == (1280, 720, 30)
    assert spec.video.cut_every == "beat"
    assert spec.style.backend == "procedural"


@pytest.mark.parametrize(
    ("video", "size"),
    [
        ({"aspectRatio": "16:9", "height": 720}, (1280, 720)),
        ({"aspectRatio": "9:16", "height": 1920}, (1080, 1920)),
        ({"aspectRatio": "1:1", "height": 480}, (480, 480)),
        ({"width": 640, "height": 360}, (640, 360)),
        ({"height": 1080, "aspectRatio": "16:9"}, (1920, 1080)),
        ({"height": 720, "aspectRatio": "9:16"}, (406, 720)),  # 405 rounds up to even, as the operator sizes it
    ],
)
def test_sizes(video: dict[str, object], size: tuple[int, int]) -> None:
    spec = spec_from_dict(base(**video))
    assert (spec.video.width, spec.video.height) == size


@pytest.mark.parametrize(
    "video",
    [
        {"width": 641, "height": 360},
        {"width": 8, "height": 8},
        {"fps": 0},
        {"fps": "fast"},
        {"cutEvery": "bars"},
        {"preset": "warp"},
        {"crf": 60},
        {"aspectRatio": "wide", "height": 720},
        {"aspectRatio": "4:3", "height": 720},  # the renderer takes exactly the CRD's ratios
        {"width": 640, "height": 360, "aspectRatio": "16:9"},
        {"height": 720},  # the CRD's rule: a height needs a width or a ratio
        {"width": 640},
        {"fps": 61},
        {"height": 4322, "aspectRatio": "16:9"},
        {"resolution": "4k"},  # unknown video fields are refused, as by the CRD's schema
    ],
)
def test_invalid_video(video: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        spec_from_dict(base(**video))


def test_missing_urls_and_bad_style() -> None:
    with pytest.raises(UsageError, match=r"audio\.url"):
        spec_from_dict({"output": {"url": "s3://b/o/"}})
    with pytest.raises(UsageError, match=r"output\.url"):
        spec_from_dict({"audio": {"url": "s3://b/a.ogg"}})
    with pytest.raises(UsageError, match="backend"):
        spec_from_dict({**base(), "style": {"backend": "dalle"}})
    with pytest.raises(UsageError, match=r"spec\.style\.model: String should match pattern"):
        spec_from_dict({**base(), "style": {"model": "flux-schnell"}})


def test_json_accepts_whole_resource_and_ignores_unknown_fields() -> None:
    mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo",
          "spec": {**base(fps=24), "retries": 3, "resources": {"memory": "1Gi"},
                   "style": {"backend": "replicate", "prompt": "neon", "seed": 7}}}  # fmt: skip
    spec = spec_from_json(json.dumps(mv))
    assert spec.video.fps == 24 and spec.style.prompt == "neon" and spec.style.seed == 7
    with pytest.raises(UsageError):
        spec_from_json("{not json")


def test_cli_flags_build_the_same_spec() -> None:
    ns = build_parser().parse_args(
        ["song.mp3", "-o", "out.mp4", "--aspect-ratio", "9:16", "--height", "640", "--fps", "24",
         "--cut-every", "bar", "--backend", "replicate", "--prompt", "city", "--seed", "3"]
    )  # fmt: skip
    spec = spec_from_args(ns)
    assert spec == spec_from_dict(
        {"audio": {"url": "song.mp3"}, "output": {"url": "out.mp4"},
         "style": {"backend": "replicate", "prompt": "city", "seed": 3},
         "video": {"aspectRatio": "9:16", "height": 640, "fps": 24, "cutEvery": "bar"}}
    )  # fmt: skip
    assert (spec.video.width, spec.video.height) == (360, 640)


def test_fingerprint_changes_with_the_look() -> None:
    a = spec_from_dict(base())
    b = spec_from_dict(base(crf=30))
    assert a.fingerprint() != b.fingerprint()
    assert spec_from_dict(base()).fingerprint() == a.fingerprint()


def test_runtime_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBECRAFT_SEGMENT_SECONDS", "12")
    monkeypatch.setenv("VIBECRAFT_MEMORY_LIMIT_MB", "1024")
    opts = runtime_from_env()
    assert opts == RuntimeOptions(segment_seconds=12.0, memory_limit_mb=1024.0)
    assert runtime_from_env(segment_seconds=5.0).segment_seconds == 5.0
    with pytest.raises(UsageError):
        runtime_from_env(segment_seconds=0.1)


@pytest.mark.parametrize(
    ("audio", "bpm", "offset"),
    [
        ({}, None, None),
        ({"bpm": 97}, 97.0, None),
        ({"bpm": BPM_MIN, "beatOffsetSeconds": 0}, BPM_MIN, 0.0),
        ({"bpm": BPM_MAX, "beatOffsetSeconds": BEAT_OFFSET_MAX_SECONDS}, BPM_MAX, BEAT_OFFSET_MAX_SECONDS),
        ({"bpm": 128.5, "beatOffsetSeconds": 0.42}, 128.5, 0.42),
    ],
)
def test_given_tempo_within_the_shared_bounds(audio: dict[str, object], bpm: float | None, offset: float | None) -> None:
    spec = spec_from_dict({**base(), "audio": {"url": "s3://b/song.ogg", **audio}})
    assert (spec.bpm, spec.beat_offset) == (bpm, offset)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        ({"bpm": BPM_MIN - 0.01}, rf"spec\.audio\.bpm: Input should be greater than or equal to {BPM_MIN:g}"),
        ({"bpm": BPM_MAX + 0.01}, rf"spec\.audio\.bpm: Input should be less than or equal to {BPM_MAX:g}"),
        ({"bpm": 0}, r"spec\.audio\.bpm: Input should be greater than or equal"),
        ({"bpm": float("nan")}, r"spec\.audio\.bpm: Input should be"),
        ({"bpm": "fast"}, r"spec\.audio\.bpm: Input should be a valid number"),
        ({"bpm": True}, r"spec\.audio\.bpm: Input should be"),
        ({"bpm": 120, "beatOffsetSeconds": -0.01}, r"spec\.audio\.beatOffsetSeconds: Input should be greater than or"),
        ({"bpm": 120, "beatOffsetSeconds": BEAT_OFFSET_MAX_SECONDS + 1}, r"spec\.audio\.beatOffsetSeconds: Input should"),
        ({"beatOffsetSeconds": 0.5}, r"spec\.audio\.beatOffsetSeconds requires audio\.bpm"),
    ],
)
def test_given_tempo_out_of_bounds_or_offset_alone_is_a_usage_error(audio: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        spec_from_dict({**base(), "audio": {"url": "s3://b/song.ogg", **audio}})


def test_cli_tempo_flags_build_the_same_spec() -> None:
    ns = build_parser().parse_args(["song.mp3", "-o", "out.mp4", "--bpm", "97", "--beat-offset", "0.42"])
    spec = spec_from_args(ns)
    assert spec == spec_from_dict({"audio": {"url": "song.mp3", "bpm": 97, "beatOffsetSeconds": 0.42},
                                   "output": {"url": "out.mp4"}})
    assert (spec.bpm, spec.beat_offset) == (97.0, 0.42)
    with pytest.raises(UsageError, match="--beat-offset requires --bpm"):
        spec_from_args(build_parser().parse_args(["song.mp3", "-o", "out.mp4", "--beat-offset", "0.42"]))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bpm", "300.5"], "spec.audio.bpm: Input should be less than or equal to 300"),
        (["--bpm", "twelve"], "--bpm: invalid float value"),
        (["--beat-offset", "1"], "--beat-offset requires --bpm"),
        (["--bpm", "120", "--beat-offset", "-1"], "spec.audio.beatOffsetSeconds: Input should be greater than or"),
    ],
)
def test_cli_refuses_bad_tempo_flags_with_exit_2(
    flags: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIBECRAFT_TERMINATION_LOG", str(tmp_path / "log"))
    monkeypatch.delenv("VIBECRAFT_SPEC_JSON", raising=False)
    assert main([str(tmp_path / "song.ogg"), "-o", str(tmp_path / "out.mp4"), *flags]) == EXIT_USAGE
    assert message in (tmp_path / "log").read_text()
    assert not (tmp_path / "out.mp4").exists()


def test_fingerprint_changes_with_a_given_tempo() -> None:
    """The given grid moves the cuts, so checkpoints of another tempo must not be reused."""
    def fp(**audio: object) -> dict[str, object]:
        return spec_from_dict({**base(), "audio": {"url": "s3://b/song.ogg", **audio}}).fingerprint()

    prints = [fp(), fp(bpm=120), fp(bpm=121), fp(bpm=120, beatOffsetSeconds=0.1), fp(bpm=120, beatOffsetSeconds=0.2)]
    assert len({json.dumps(p, sort_keys=True) for p in prints}) == len(prints)
    assert fp(bpm=120) == fp(bpm=120.0)
