"""One render, stage by stage: download, analyse, generate, compose+encode segments, join, upload.

Order matters for failure semantics: the output location is checked before any work, the video
is published last (after thumbnail and analysis.json), and checkpoints are only dropped after
the video is in place, so a crash at any point leaves either nothing or resumable checkpoints
at the final keys, never a partial video.

The same work splits into stages for several pods (issue 20): `prepare` (analysis state, plan,
soundtrack), `render_chunk` for each chunk of the segments, and `join`; run in that order they make
the one-process render's video, frame for frame (docs/renderer.md, "A render split into stages").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

from vibecraft_common import limits as L
from vibecraft_common.resource import ENV_PLAN_WAIT
from vibecraft_common.status import ANALYSIS_NAME, THUMBNAIL_NAME, VIDEO_NAME

from . import analysis as analysis_mod
from . import audio, captions, encode, segments, storage
from .compose import KenBurnsVisuals, working_size
from .config import RenderSpec, RuntimeOptions
from .errors import EncodeError, RenderError, StageError, UsageError
from .frames import FrameSource
from .layout import OutputLayout, layout_for
from .memguard import MemoryGuard
from .progress import Progress
from .timeline import Timeline
from .visuals_procedural import ProceduralVisuals, internal_size
from .visuals_replicate import ReplicateImages, plan_clips, plan_requests

log = logging.getLogger(__name__)

PROGRESS_EVERY_FRAMES = 8
PLAN_NAME: Final = "plan.json"  # under the segments prefix: the prepared render's key, for its chunks and join
ANALYSIS_CACHE: Final = "analysis"  # under the output's cache prefix: one analysis state per song (_analysis_key)
STATE_NAME: Final = "analysis-state.npz"  # under the render key's prefix: the exact analysis (dump_state)
SOUNDTRACK_NAME: Final = "soundtrack.m4a"  # under the render key's prefix: the encoded soundtrack
PLAN_WAIT: Final = 180.0  # seconds a chunk waits for another's plan (_plan_for_chunk); env ENV_PLAN_WAIT


def plan_wait() -> float:
    """PLAN_WAIT, or the ENV_PLAN_WAIT override (tests); UsageError when that is not a number of seconds."""
    raw = os.environ.get(ENV_PLAN_WAIT, "").strip()
    if not raw:
        return PLAN_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise UsageError(f"${ENV_PLAN_WAIT} must be seconds between 0 and 86400, not {raw[:40]!r}")
    return value


@dataclass(frozen=True)
class RenderResult:
    """What was produced, for the CLI summary and tests."""

    layout: OutputLayout
    frames: int
    duration: float
    tempo: float
    segments_rendered: int
    segments_reused: int
    render_key: str
    stage_seconds: dict[str, float]


def render(spec: RenderSpec, opts: RuntimeOptions, progress: Progress) -> RenderResult:
    """Render spec end to end in this process (STAGE_ALL); raises a RenderError subclass on any expected failure."""
    if spec.preview:
        return render_preview(spec, opts, progress)
    with _session(spec, opts, progress) as (layout, work, stop, generator, guard):
        audio_path, _, soundtrack, an, caps = _analyse(spec, work, stop, progress, guard, layout.cache)
        assert soundtrack is not None
        job = _context(spec, opts, layout, an, _key(spec, opts, audio_path, caps), work, caps=caps)
        todo = [s for s in job.plan if not job.store.is_done(s)]

        progress.stage("generating", f"tempo {an.tempo:.1f} BPM ({an.tempo_source})")
        source = _frame_source(spec, opts, an, job.timeline, generator, progress) if todo else None
        if todo:
            job.store.write_manifest(_manifest(spec, job))

        progress.stage("composing", f"{len(job.plan) - len(todo)}/{len(job.plan)} segments already done")
        _render_segments(spec, job.plan, job.store, source, progress, guard, job.timeline.n_frames, len(job.plan),
                         job.captions)
        _publish(spec, opts, layout, job, soundtrack.result(), work, progress)
        return _result(layout, job, len(todo), progress)


@contextlib.contextmanager
def _session(
    spec: RenderSpec, opts: RuntimeOptions, progress: Progress
) -> Iterator[tuple[OutputLayout, Path, contextlib.ExitStack, ReplicateImages | None, MemoryGuard]]:
    """What a render in this process works with: its outputs' layout (checked writable before any work), a
    scratch dir, the exit stack of its background encoders, the image generator and the memory guard."""
    layout = layout_for(spec.output_url)
    analysis_mod.preload()
    storage.check_writable(layout.root)
    with tempfile.TemporaryDirectory(prefix="vibecraft-", dir=opts.work_dir) as tmp, contextlib.ExitStack() as stop:
        work = Path(tmp)
        yield layout, work, stop, _generator(spec, opts, layout, work, progress), MemoryGuard(opts.memory_limit_mb)


def preview_window(an: analysis_mod.Analysis, fps: int, n_frames: int) -> tuple[int, int]:
    """A preview's frames [first, first + count): PREVIEW_SECONDS from the start of the most energetic section
    (sections start on the music's own boundaries), moved earlier when the song ends sooner."""
    count = min(round(L.PREVIEW_SECONDS * fps), n_frames)
    best = _loudest_section(an)
    first = max(0, min(round(best.start * fps), n_frames - count))
    return first, count


def render_preview(spec: RenderSpec, opts: RuntimeOptions, progress: Progress) -> RenderResult:
    """spec.preview: PREVIEW_SECONDS from the most energetic section at PREVIEW_HEIGHT, to the same outputs.

    One segment, no checkpoints. The analysis is stored in the output's cache (as every render does), so
    the full render that follows (the spec's preview set back to false) does not analyse again, and with
    the Replicate backend the images generated here are the cached ones the full render uses.
    """
    with _session(spec, opts, progress) as (layout, work, stop, generator, guard):
        audio_path, info, _, an, caps = _analyse(spec, work, stop, progress, guard, layout.cache, soundtrack=False)
        size = _frame(spec)
        small = replace(spec, video=replace(spec.video, width=size[0], height=size[1]))
        timeline = Timeline(an, spec.video.fps, spec.video.cut_every)
        first, count = preview_window(an, spec.video.fps, timeline.n_frames)
        fps = spec.video.fps
        soundtrack = stop.enter_context(encode.AudioEncoder(audio_path, work / "soundtrack.m4a", info.sample_rate,
                                                            spec.normalize, window=(first / fps, count / fps)))
        progress.stage("generating", f"preview of {count / fps:.1f} s from {first / fps:.1f} s")
        source = _frame_source(spec, opts, an, timeline, generator, progress, size)  # the full spec's images
        progress.stage("composing", f"preview {size[0]}x{size[1]}")
        progress.update(frames_done=0, frames_total=count)
        segment = work / "preview.mp4"
        with encode.SegmentEncoder(segment, (source.width, source.height), size, fps, spec.video.preset,
                                   spec.video.crf, captions=caps.path if caps is not None else None,
                                   start_frame=first) as enc:  # fmt: skip
            for done, i in enumerate(range(first, first + count), 1):
                enc.write(source.render(i))
                if done % PROGRESS_EVERY_FRAMES == 0:
                    progress.update(frames_done=done, message="preview")
                    guard.check([enc.pid])
        progress.update(frames_done=count)
        progress.stage("encoding", "muxing the preview")
        video = work / VIDEO_NAME
        encode.join_and_mux([segment], soundtrack.result(), video, work, count / fps,
                            lambda f: progress.update(fraction=0.9 * f))  # fmt: skip
        _check_frames(video, count)
        thumb = work / THUMBNAIL_NAME
        encode.thumbnail(video, count / fps / 2, thumb)
        report = work / ANALYSIS_NAME
        data = _analysis_json(an, timeline, small)  # the song's analysis; video and cuts: the preview's
        data["video"] = _video_json(small, count)
        data["cuts"] = [round(int(f) / fps - first / fps, 4) for f in timeline.cut_frames if first < f < first + count]
        data["preview"] = {"startSeconds": round(first / fps, 4), "seconds": round(count / fps, 4), "frames": count}
        report.write_text(json.dumps(data, indent=1))
        progress.stage("uploading")
        _upload_outputs(layout, thumb, report, video)
        storage.sweep_temporaries(layout.video, layout.thumbnail, layout.analysis)
        progress.finish(f"rendered a {count / fps:.1f} s preview to {layout.video}")
        return RenderResult(layout=layout, frames=count, duration=count / fps, tempo=an.tempo, segments_rendered=1,
                            segments_reused=0, render_key="preview", stage_seconds=dict(progress.stage_seconds))


def prepare(spec: RenderSpec, opts: RuntimeOptions, progress: Progress) -> RenderResult:
    """STAGE_PREPARE of a split render: everything the chunks and the join need, published once.

    Download, analyse and (Replicate backend) generate the images into the cache, then publish under
    the render key's checkpoint prefix the exact analysis state, and the render plan (PLAN_NAME under
    the segments prefix), whose presence says the state is complete: chunks can start. The soundtrack,
    encoded beside the analysis, is published after the plan (for an hour of audio its AAC encode takes
    longer than the analysis: the chunks do not wait for it, only the join does). Segments already
    rendered under the same key (an earlier attempt) stay.
    """
    layout = layout_for(spec.output_url)
    with tempfile.TemporaryDirectory(prefix="vibecraft-", dir=opts.work_dir) as tmp, contextlib.ExitStack() as stop:
        job, publish_soundtrack = _prepare(spec, opts, layout, Path(tmp), progress, stop)
        publish_soundtrack()
        progress.finish(f"prepared {len(job.plan)} segments of {job.timeline.n_frames} frames (key {job.key})")
        return _result(layout, job, 0, progress)


def _prepare(
    spec: RenderSpec, opts: RuntimeOptions, layout: OutputLayout, work: Path, progress: Progress,
    stop: contextlib.ExitStack,
) -> tuple[_Job, Callable[[], None]]:
    """Analyse and publish state and plan; returns the job and what publishes the soundtrack (its
    encoder lives in `stop`, so a chunk that prepared can render first and publish it afterwards)."""
    analysis_mod.preload()
    storage.check_writable(layout.root)
    generator = _generator(spec, opts, layout, work, progress)
    guard = MemoryGuard(opts.memory_limit_mb)
    audio_path, _, soundtrack, an, caps = _analyse(spec, work, stop, progress, guard, layout.cache)
    assert soundtrack is not None
    job = _context(spec, opts, layout, an, _key(spec, opts, audio_path, caps), work, caps=caps)
    if generator is not None:
        progress.stage("generating", f"tempo {an.tempo:.1f} BPM ({an.tempo_source})")
        _frame_source(spec, opts, an, job.timeline, generator, progress)  # fills the image cache
    progress.stage("uploading", "analysis state and render plan for the chunks")
    storage.put_bytes(analysis_mod.dump_state(an), storage.join(job.store.prefix, STATE_NAME), work,
                      "application/octet-stream")  # fmt: skip
    if caps is not None:
        storage.put_file(caps.path, storage.join(job.store.prefix, captions.CAPTIONS_NAME), "text/x-ssa")
    job.store.write_manifest(_manifest(spec, job))
    progress.update(frames_total=job.timeline.n_frames)  # the operator sizes `auto` parallelism from it
    plan_doc = {"key": job.key, "inputs": _plan_inputs(spec, opts), "frames": job.timeline.n_frames,
                "framesPerSegment": job.per, "segments": len(job.plan),
                "captions": caps.digest if caps is not None else None}  # fmt: skip
    storage.put_bytes(json.dumps(plan_doc, indent=1).encode(), storage.join(layout.segments, PLAN_NAME), work,
                      "application/json")  # fmt: skip

    def publish_soundtrack() -> None:
        storage.put_file(soundtrack.result(), storage.join(job.store.prefix, SOUNDTRACK_NAME), "audio/mp4", move=True)

    return job, publish_soundtrack


def render_chunk(spec: RenderSpec, opts: RuntimeOptions, progress: Progress, index: int, count: int) -> RenderResult:
    """STAGE_SEGMENTS: chunk `index` of `count` of the prepared render's segments (segments.chunk).

    Reads the published plan and analysis state instead of the audio, so a chunk's pod neither
    downloads nor analyses the song; segments another attempt or index already finished are reused.
    """
    layout = layout_for(spec.output_url)
    with tempfile.TemporaryDirectory(prefix="vibecraft-", dir=opts.work_dir) as tmp, contextlib.ExitStack() as stop:
        work = Path(tmp)
        generator = _generator(spec, opts, layout, work, progress)
        guard = MemoryGuard(opts.memory_limit_mb)
        job, publish_soundtrack = _plan_for_chunk(spec, opts, layout, work, progress, index, stop)
        mine = segments.chunk(job.plan, index, count)
        todo = [s for s in mine if not job.store.is_done(s)]
        progress.render_frames = job.timeline.n_frames
        progress.stage("generating", f"chunk {index + 1}/{count}: segments {_span(mine)}")
        source = _frame_source(spec, opts, job.an, job.timeline, generator, progress) if todo else None
        progress.stage("composing", f"{len(mine) - len(todo)}/{len(mine)} segments already done")
        _render_segments(spec, mine, job.store, source, progress, guard, sum(s.frames for s in mine), len(job.plan),
                         job.captions)
        if publish_soundtrack is not None:  # this chunk prepared: its soundtrack was encoded beside the frames
            progress.stage("uploading", "soundtrack")
            publish_soundtrack()
        progress.finish(f"chunk {index + 1}/{count} rendered: segments {_span(mine)}")
        return _result(layout, job, len(todo), progress, reused=len(mine) - len(todo))


def join(spec: RenderSpec, opts: RuntimeOptions, progress: Progress) -> RenderResult:
    """STAGE_JOIN: every segment of the prepared render concatenated, the soundtrack muxed, outputs published."""
    layout = layout_for(spec.output_url)
    with tempfile.TemporaryDirectory(prefix="vibecraft-", dir=opts.work_dir) as tmp:
        work = Path(tmp)
        progress.stage("downloading", "render plan")
        job = _load_plan(spec, opts, layout, work)
        if job is None:
            raise StageError(f"no render plan for this spec and song at "
                             f"{storage.redact(storage.join(layout.segments, PLAN_NAME))}: the prepare stage has not run")
        missing = [s for s in job.plan if not job.store.is_done(s)]
        if missing:
            raise StageError(f"cannot join: {len(missing)} of {len(job.plan)} segments are not rendered "
                             f"(first missing: {missing[0].name})")  # fmt: skip
        frames = job.timeline.n_frames
        progress.update(frames_done=frames, frames_total=frames)  # every frame is rendered: the totals stay
        _publish(spec, opts, layout, job, _soundtrack(spec, opts, job, work), work, progress)
        return _result(layout, job, 0, progress)


def _soundtrack(spec: RenderSpec, opts: RuntimeOptions, job: _Job, work: Path) -> Path:
    """The published soundtrack, or one encoded here when there is none yet: a chunk that prepared
    publishes it after its segments and may have died in between, and a prepare stage may still be
    encoding it. The song must still be the one the plan was prepared from (its hash is in the key)."""
    where = storage.join(job.store.prefix, SOUNDTRACK_NAME)
    local = work / SOUNDTRACK_NAME
    if storage.exists(where):
        storage.get_file(where, local)
        return local
    log.info("no soundtrack published for render %s: encoding it from the song", job.key)
    audio_path = storage.fetch(spec.audio_url, work)
    if _key(spec, opts, audio_path, job.captions) != job.key:
        raise StageError(f"the song at {storage.redact(spec.audio_url)} changed since render plan {job.key} was prepared")
    info = audio.probe(audio_path, storage.redact(spec.audio_url))
    with encode.AudioEncoder(audio_path, local, info.sample_rate, spec.normalize) as encoder:
        return encoder.result()


@dataclass
class _Job:
    """What every stage of one render shares once the analysis is known."""

    an: analysis_mod.Analysis
    timeline: Timeline
    plan: list[segments.Segment]
    per: int  # frames per segment
    key: str
    store: segments.CheckpointStore
    captions: captions.Captions | None = None  # the lyrics and title card, burned into every segment


def _generator(
    spec: RenderSpec, opts: RuntimeOptions, layout: OutputLayout, work: Path, progress: Progress
) -> ReplicateImages | None:
    if spec.style.backend != "replicate":
        return None
    return ReplicateImages(layout.cache, work, opts.replicate_concurrency,  # fails fast w/o token
                           max_predictions=opts.max_predictions, on_prediction=progress.predictions_created)  # fmt: skip


def _analyse(
    spec: RenderSpec, work: Path, stop: contextlib.ExitStack, progress: Progress, guard: MemoryGuard, cache: str,
    soundtrack: bool = True,
) -> _Analysed:
    """Download, start the soundtrack encoder beside the analysis (unless `soundtrack` is false: a preview's
    starts once it knows its window), analyse (or take the analysis an earlier render of the same song stored
    under `cache`: a preview's, a retry's), write the captions (bad lyrics are found before the analysis,
    against the duration the container states)."""
    song = storage.redact(spec.audio_url)  # what messages call the input, not its scratch copy
    progress.stage("downloading", song)
    audio_path = storage.fetch(spec.audio_url, work)
    info = audio.probe(audio_path, song)
    lyrics = captions.read_lyrics(spec.text)
    if lyrics is not None:
        captions.parse(lyrics, spec.text.lyrics_format, info.duration or math.inf)
    encoder = None
    if soundtrack:
        encoder = stop.enter_context(encode.AudioEncoder(audio_path, work / "soundtrack.m4a", info.sample_rate,
                                                         spec.normalize))
    cached = storage.join(storage.join(cache, ANALYSIS_CACHE), _analysis_key(spec, audio_path))
    state = _cached_state(cached)
    if state is not None:
        progress.stage("analyzing", "the song's analysis from an earlier render")
        an = state
    else:
        progress.stage("analyzing")
        an = analysis_mod.analyze_blocks(
            audio.decode_blocks(audio_path, name=song), lambda f: progress.update(fraction=f), info.duration,
            bpm=spec.bpm, beat_offset=spec.beat_offset,
        )  # fmt: skip
        try:
            storage.put_bytes(analysis_mod.dump_state(an), cached, work, "application/octet-stream")
        except RenderError as exc:  # a cache: the render goes on without it
            log.warning("could not store the analysis for later renders: %s", exc)
    guard.check(force=True)
    width, height = _frame(spec)
    caps = captions.prepare(spec.text, lyrics, work, an.duration, width, height)
    return _Analysed(audio_path, info, encoder, an, caps)


class _Analysed(NamedTuple):
    """What `_analyse` found: the local song, ffprobe's facts, its soundtrack encoder (if started), the analysis
    and the captions."""

    audio_path: Path
    info: audio.AudioInfo
    soundtrack: encode.AudioEncoder | None
    an: analysis_mod.Analysis
    caps: captions.Captions | None


def _analysis_key(spec: RenderSpec, audio_path: Path) -> str:
    """The analysis's identity: the song's bytes, what the musician said about its beat, and the analysis code
    itself (analysis_mod.code_version: a renderer with another beat tracker never takes an older analysis)."""
    blob = json.dumps({"audio": segments.sha256_file(audio_path), "bpm": spec.bpm, "beatOffset": spec.beat_offset,
                       "code": analysis_mod.code_version()}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:32] + ".npz"


def _cached_state(url: str) -> analysis_mod.Analysis | None:
    """The cached analysis, or None: it is only a cache, so whatever goes wrong reading it (a store that does
    not answer, bytes that are not a state of this version) means analysing again."""
    try:
        raw = storage.get_bytes(url)
        return analysis_mod.load_state(raw) if raw is not None else None
    except Exception as exc:
        log.info("no usable cached analysis at %s: %s", storage.redact(url), exc)
        return None


def _frame(spec: RenderSpec) -> tuple[int, int]:
    """The frame this render makes: the spec's, or a preview's (limits.preview_size)."""
    if spec.preview:
        return L.preview_size(spec.video.width, spec.video.height)
    return spec.video.width, spec.video.height


def _per(spec: RenderSpec, opts: RuntimeOptions) -> int:
    """Frames per segment."""
    return max(1, round(opts.segment_seconds * spec.video.fps))


def _key(spec: RenderSpec, opts: RuntimeOptions, audio_path: Path, caps: captions.Captions | None = None) -> str:
    """The checkpoint key: the song's bytes, the pixels' spec, the segment length, the soundtrack's
    loudness (published under the key: a render with `normalize` changed must not reuse it) and the
    caption script (a lyrics file changed at its URL changes the pixels)."""
    extra: dict[str, object] = {"normalize": spec.normalize}
    if caps is not None:
        extra["captions"] = caps.digest
    return segments.render_key(segments.sha256_file(audio_path), {**spec.fingerprint(), **extra}, _per(spec, opts))


def _context(
    spec: RenderSpec, opts: RuntimeOptions, layout: OutputLayout, an: analysis_mod.Analysis, key: str, work: Path,
    per: int | None = None, caps: captions.Captions | None = None,
) -> _Job:
    timeline = Timeline(an, spec.video.fps, spec.video.cut_every)
    per = per or _per(spec, opts)
    plan = segments.plan_frames(timeline.n_frames, per)
    return _Job(an, timeline, plan, per, key, segments.CheckpointStore(layout.segments, key, work), caps)


def _plan_for_chunk(
    spec: RenderSpec, opts: RuntimeOptions, layout: OutputLayout, work: Path, progress: Progress, index: int,
    stop: contextlib.ExitStack,
) -> tuple[_Job, Callable[[], None] | None]:
    """The published plan; chunk 0 prepares it when there is none, the others wait for it. With it,
    what publishes the soundtrack when this chunk prepared (after its own segments: the chunks wait
    for the plan, not for the soundtrack).

    An Indexed Job starts every chunk at once: only chunk 0 prepares, so the song is analysed once. A
    chunk that waits PLAN_WAIT in vain (chunk 0 not scheduled: too few nodes for all the pods) prepares
    it itself: the same inputs give the same plan, so two preparations cost time, never correctness
    (with the Replicate backend, money: there it fails, retryable, instead).
    """
    wait = plan_wait()
    progress.stage("downloading", "render plan")
    job = _load_plan(spec, opts, layout, work)
    if job is None and index != 0:
        log.info("no render plan yet: waiting up to %.0f s for chunk 1 to prepare it", wait)
        job = _poll(lambda: _load_plan(spec, opts, layout, work), wait,
                    lambda: progress.update(message="waiting for chunk 1 to prepare the render plan"))  # fmt: skip
        if job is None and spec.style.backend == "replicate":
            # Preparing generates the images: every chunk doing it would pay for the same predictions.
            raise StageError(f"no render plan after {wait:.0f}s: with the Replicate backend only chunk 1 (or the "
                             "prepare stage) prepares, so images are generated and paid for once")  # fmt: skip
    if job is not None:
        return job, None
    return _prepare(spec, opts, layout, work, progress, stop)


T = TypeVar("T")


def _poll(look: Callable[[], T | None], seconds: float, waiting: Callable[[], None]) -> T | None:
    """look() until it returns something or `seconds` pass (0.5 s between looks, doubling up to 5 s)."""
    give_up, pause = time.monotonic() + seconds, 0.5
    found = look()
    while found is None and time.monotonic() < give_up:
        waiting()
        time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
        pause = min(2 * pause, 5.0)
        found = look()
    return found


def _plan_inputs(spec: RenderSpec, opts: RuntimeOptions) -> dict[str, object]:
    """What a plan must have been prepared from to serve this render: the spec's pixels, the song's URL
    (hashed: it may carry a token) and the segment length. A plan left by an earlier spec or song of the
    same output (a render that never joined, --keep-segments) does not match and is prepared again."""
    url = hashlib.sha256(spec.audio_url.encode()).hexdigest()[:16]
    inputs: dict[str, object] = {"spec": spec.fingerprint(), "audioUrl": url, "framesPerSegment": _per(spec, opts),
                                 "normalize": spec.normalize, "analysisVersion": analysis_mod.ANALYSIS_VERSION}
    if spec.text.lyrics_url is not None:  # the chunks take the prepared captions: they must be from this file
        inputs["lyricsUrl"] = hashlib.sha256(spec.text.lyrics_url.encode()).hexdigest()[:16]
    return inputs


def _load_plan(spec: RenderSpec, opts: RuntimeOptions, layout: OutputLayout, work: Path) -> _Job | None:
    """The prepared render (its plan and exact analysis); None without a plan for these inputs (_plan_inputs)."""
    where = storage.join(layout.segments, PLAN_NAME)
    raw = storage.get_bytes(where)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None  # not ours to read: prepared again, and overwritten
    if not isinstance(doc, dict) or doc.get("inputs") != _plan_inputs(spec, opts):
        return None
    state = storage.get_bytes(storage.join(storage.join(layout.segments, doc["key"]), STATE_NAME))
    if state is None:
        raise StageError(f"render plan {doc['key']} has no analysis state")
    try:
        an = analysis_mod.load_state(state)
    except ValueError as exc:
        raise StageError(f"render plan {doc['key']}: {exc}") from None
    caps = None
    if doc.get("captions"):
        script = storage.get_bytes(storage.join(storage.join(layout.segments, doc["key"]), captions.CAPTIONS_NAME))
        if script is None:
            raise StageError(f"render plan {doc['key']} has no caption script")
        caps = captions.write(script.decode(), work)
        if caps.digest != doc["captions"]:
            raise StageError(f"render plan {doc['key']}: its caption script changed")
    job = _context(spec, opts, layout, an, str(doc["key"]), work, per=int(doc["framesPerSegment"]), caps=caps)
    if job.timeline.n_frames != doc["frames"] or len(job.plan) != doc["segments"]:
        raise StageError(f"render plan {doc['key']} does not match its analysis state")
    return job


def _manifest(spec: RenderSpec, job: _Job) -> dict[str, object]:
    return {"audio": storage.redact(spec.audio_url), "spec": spec.fingerprint(), "frames": job.timeline.n_frames,
            "segments": len(job.plan), "fps": spec.video.fps}  # fmt: skip


def _span(part: list[segments.Segment]) -> str:
    return f"{part[0].index + 1}-{part[-1].index + 1}" if part else "none"


def _publish(
    spec: RenderSpec, opts: RuntimeOptions, layout: OutputLayout, job: _Job, soundtrack: Path, work: Path,
    progress: Progress,
) -> None:
    """Join, check, thumbnail, analysis.json, upload (the video last: its presence means done), clean up."""
    progress.stage("encoding", "joining segments, muxing audio")
    video = work / VIDEO_NAME
    encode.join_and_mux(
        [job.store.local_copy(s) for s in job.plan], soundtrack, video, work, job.an.duration,
        lambda f: progress.update(fraction=0.9 * f),
    )  # fmt: skip
    _check_frames(video, job.timeline.n_frames)
    thumb = work / THUMBNAIL_NAME
    encode.thumbnail(video, _poster_time(job.an), thumb)
    report = work / ANALYSIS_NAME
    report.write_text(json.dumps(_analysis_json(job.an, job.timeline, spec), indent=1))

    progress.stage("uploading")
    _upload_outputs(layout, thumb, report, video)
    if not opts.keep_segments:
        job.store.cleanup()
    # An earlier attempt killed inside its upload left a temporary object or an open multipart upload.
    storage.sweep_temporaries(layout.video, layout.thumbnail, layout.analysis, storage.join(layout.segments, ""))
    progress.finish(f"rendered {layout.video}")


def _result(
    layout: OutputLayout, job: _Job, rendered: int, progress: Progress, reused: int | None = None
) -> RenderResult:
    """`reused`: segments found done (default: every finished segment of the plan not rendered here)."""
    return RenderResult(
        layout=layout,
        frames=job.timeline.n_frames,
        duration=job.an.duration,
        tempo=job.an.tempo,
        segments_rendered=rendered,
        segments_reused=reused if reused is not None else sum(1 for s in job.plan if job.store.is_done(s)) - rendered,
        render_key=job.key,
        stage_seconds=dict(progress.stage_seconds),
    )


def _frame_source(
    spec: RenderSpec,
    opts: RuntimeOptions,
    an: analysis_mod.Analysis,
    timeline: Timeline,
    generator: ReplicateImages | None,
    progress: Progress,
    size: tuple[int, int] | None = None,
) -> FrameSource:
    """The visual backend: Ken Burns over generated images, or procedural scenes; drawn at `size` (a preview's)
    or the spec's frame, the images asked for the spec's frame either way (one image cache for both)."""
    width, height = size or (spec.video.width, spec.video.height)
    if generator is None:
        return ProceduralVisuals(timeline, internal_size(width, height), spec.style.seed, spec.style.reactivity)
    requests = plan_requests(spec, an.sections, opts.images_per_section)
    clips = plan_clips(spec, requests)
    generator.preflight(requests, clips)
    files = generator.generate(requests, lambda d, t: progress.update(fraction=d / t, message=f"image {d}/{t}"))
    by_group: dict[int, list[Path]] = {}
    for req in requests:
        by_group.setdefault(req.group, []).append(files[req.key])
    clip_files = generator.generate_clips(
        clips, files, lambda d, t: progress.update(fraction=d / t, message=f"clip {d}/{t}"))
    return KenBurnsVisuals(timeline, working_size(width, height), by_group, spec.style.seed, spec.style.reactivity,
                           clips={c.group: clip_files[c.key] for c in clips})


def _render_segments(
    spec: RenderSpec,
    plan: list[segments.Segment],
    store: segments.CheckpointStore,
    source: FrameSource | None,
    progress: Progress,
    guard: MemoryGuard,
    total: int,
    of: int,
    caps: captions.Captions | None = None,
) -> None:
    """Render every segment of `plan` not yet in the store (`total` frames in `plan`, `of` segments in the video),
    with the caption script burned in."""
    done = sum(s.frames for s in plan if store.is_done(s))
    progress.update(frames_done=done, frames_total=total)
    progress.restart_rate()
    out_size = (spec.video.width, spec.video.height)
    for seg in plan:
        if store.is_done(seg):
            log.info("segment %d/%d already rendered, reusing %s", seg.index + 1, of, seg.name)
            continue
        assert source is not None
        scratch = store.scratch_path(seg)
        with encode.SegmentEncoder(
            scratch, (source.width, source.height), out_size, spec.video.fps, spec.video.preset, spec.video.crf,
            captions=caps.path if caps is not None else None, start_frame=seg.start,
        ) as enc:
            for i in range(seg.start, seg.end):
                enc.write(source.render(i))
                done += 1
                if done % PROGRESS_EVERY_FRAMES == 0:
                    progress.update(frames_done=done, message=f"segment {seg.index + 1}/{of}")
                    guard.check([enc.pid])
        store.commit(seg, scratch)
        progress.update(frames_done=done)
        log.info("segment %d/%d rendered: %s frames %d-%d", seg.index + 1, of, seg.name, seg.start, seg.end - 1)


def _check_frames(video: Path, expected: int) -> None:
    """The joined video must have exactly round(duration*fps) frames (the header says so in MP4)."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=nb_frames",
         "-of", "csv=p=0", str(video)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        got = int(proc.stdout.strip())
    except ValueError:
        return  # container without a frame count: nothing cheap to check
    if got != expected:
        raise EncodeError(f"joined video has {got} frames, expected {expected}")


def _upload_outputs(layout: OutputLayout, thumb: Path, report: Path, video: Path) -> None:
    """Thumbnail, analysis.json, then the video: last, as its presence means done."""
    storage.put_file(thumb, layout.thumbnail, "image/jpeg", move=True)
    storage.put_file(report, layout.analysis, "application/json", move=True)
    storage.put_file(video, layout.video, "video/mp4", move=True)


def _loudest_section(an: analysis_mod.Analysis) -> analysis_mod.Section:
    """The most energetic section: the poster's moment and where a preview starts."""
    return max(an.sections, key=lambda s: s.energy)


def _poster_time(an: analysis_mod.Analysis) -> float:
    """Middle of the most energetic section: the most representative still."""
    best = _loudest_section(an)
    return (best.start + best.end) / 2.0


def _video_json(spec: RenderSpec, frames: int) -> dict[str, object]:
    return {"width": spec.video.width, "height": spec.video.height, "fps": spec.video.fps, "frames": frames,
            "cutEvery": spec.video.cut_every, "backend": spec.style.backend}


def _analysis_json(an: analysis_mod.Analysis, timeline: Timeline, spec: RenderSpec) -> dict[str, object]:
    data = an.to_json()
    data["video"] = _video_json(spec, timeline.n_frames)
    data["cuts"] = [round(int(f) / timeline.fps, 4) for f in timeline.cut_frames if f > 0]
    return data
