"""One render, stage by stage: download, analyse, generate, compose+encode segments, join, upload.

Order matters for failure semantics: the output location is checked before any work, the video
is published last (after thumbnail and analysis.json), and checkpoints are only dropped after
the video is in place, so a crash at any point leaves either nothing or resumable checkpoints
at the final keys, never a partial video.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vibecraft_common.status import ANALYSIS_NAME, THUMBNAIL_NAME, VIDEO_NAME

from . import analysis as analysis_mod
from . import audio, encode, segments, storage
from .compose import KenBurnsVisuals, working_size
from .config import RenderSpec, RuntimeOptions
from .errors import EncodeError
from .frames import FrameSource
from .layout import OutputLayout, layout_for
from .memguard import MemoryGuard
from .progress import Progress
from .timeline import Timeline
from .visuals_procedural import ProceduralVisuals, internal_size
from .visuals_replicate import ReplicateImages, plan_requests

log = logging.getLogger(__name__)

PROGRESS_EVERY_FRAMES = 8


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
    """Render spec end to end; raises a RenderError subclass on any expected failure."""
    layout = layout_for(spec.output_url)
    analysis_mod.preload()
    storage.check_writable(layout.root)
    with tempfile.TemporaryDirectory(prefix="vibecraft-", dir=opts.work_dir) as tmp, contextlib.ExitStack() as stop:
        work = Path(tmp)
        generator = None
        if spec.style.backend == "replicate":
            generator = ReplicateImages(layout.cache, work, opts.replicate_concurrency,  # fails fast w/o token
                                        max_predictions=opts.max_predictions,
                                        on_prediction=progress.predictions_created)
        guard = MemoryGuard(opts.memory_limit_mb)

        song = storage.redact(spec.audio_url)  # what messages call the input, not its scratch copy
        progress.stage("downloading", song)
        audio_path = storage.fetch(spec.audio_url, work)
        info = audio.probe(audio_path, song)
        soundtrack = stop.enter_context(encode.AudioEncoder(audio_path, work / "soundtrack.m4a", info.sample_rate))

        progress.stage("analyzing")
        an = analysis_mod.analyze_blocks(
            audio.decode_blocks(audio_path, name=song), lambda f: progress.update(fraction=f), info.duration,
            bpm=spec.bpm, beat_offset=spec.beat_offset,
        )  # fmt: skip
        guard.check(force=True)
        timeline = Timeline(an, spec.video.fps, spec.video.cut_every)
        plan = segments.plan(timeline.n_frames, spec.video.fps, opts.segment_seconds)
        key = segments.render_key(segments.sha256_file(audio_path), spec.fingerprint(), plan[0].frames)
        store = segments.CheckpointStore(layout.segments, key, work)
        todo = [s for s in plan if not store.is_done(s)]

        progress.stage("generating", f"tempo {an.tempo:.1f} BPM ({an.tempo_source})")
        source = _frame_source(spec, opts, an, timeline, generator, progress) if todo else None
        if todo:
            store.write_manifest({"audio": song, "spec": spec.fingerprint(),
                                  "frames": timeline.n_frames, "segments": len(plan), "fps": spec.video.fps})  # fmt: skip

        progress.stage("composing", f"{len(plan) - len(todo)}/{len(plan)} segments already done")
        _render_segments(spec, plan, store, source, progress, guard, timeline.n_frames)

        progress.stage("encoding", "joining segments, muxing audio")
        video = work / VIDEO_NAME
        encode.join_and_mux(
            [store.local_copy(s) for s in plan], soundtrack.result(), video, work, an.duration,
            lambda f: progress.update(fraction=0.9 * f),
        )  # fmt: skip
        _check_frames(video, timeline.n_frames)
        thumb = work / THUMBNAIL_NAME
        encode.thumbnail(video, _poster_time(an), thumb)
        report = work / ANALYSIS_NAME
        report.write_text(json.dumps(_analysis_json(an, timeline, spec), indent=1))

        progress.stage("uploading")
        storage.put_file(thumb, layout.thumbnail, "image/jpeg", move=True)
        storage.put_file(report, layout.analysis, "application/json", move=True)
        storage.put_file(video, layout.video, "video/mp4", move=True)  # last: its presence means done
        if not opts.keep_segments:
            store.cleanup()
        # An earlier attempt killed inside its upload left a temporary object or an open multipart upload.
        storage.sweep_temporaries(layout.video, layout.thumbnail, layout.analysis,
                                  storage.join(layout.segments, ""))
        progress.finish(f"rendered {layout.video}")
        return RenderResult(
            layout=layout,
            frames=timeline.n_frames,
            duration=an.duration,
            tempo=an.tempo,
            segments_rendered=len(todo),
            segments_reused=len(plan) - len(todo),
            render_key=key,
            stage_seconds=dict(progress.stage_seconds),
        )


def _frame_source(
    spec: RenderSpec,
    opts: RuntimeOptions,
    an: analysis_mod.Analysis,
    timeline: Timeline,
    generator: ReplicateImages | None,
    progress: Progress,
) -> FrameSource:
    """The visual backend: Ken Burns over generated images, or procedural scenes."""
    if generator is None:
        return ProceduralVisuals(timeline, internal_size(spec.video.width, spec.video.height), spec.style.seed)
    requests = plan_requests(spec, an.sections, opts.images_per_section)
    files = generator.generate(requests, lambda d, t: progress.update(fraction=d / t, message=f"image {d}/{t}"))
    by_group: dict[int, list[Path]] = {}
    for req in requests:
        by_group.setdefault(req.group, []).append(files[req.key])
    return KenBurnsVisuals(timeline, working_size(spec.video.width, spec.video.height), by_group, spec.style.seed)


def _render_segments(
    spec: RenderSpec,
    plan: list[segments.Segment],
    store: segments.CheckpointStore,
    source: FrameSource | None,
    progress: Progress,
    guard: MemoryGuard,
    total: int,
) -> None:
    done = sum(s.frames for s in plan if store.is_done(s))
    progress.update(frames_done=done, frames_total=total)
    progress.restart_rate()
    out_size = (spec.video.width, spec.video.height)
    for seg in plan:
        if store.is_done(seg):
            log.info("segment %d/%d already rendered, reusing %s", seg.index + 1, len(plan), seg.name)
            continue
        assert source is not None
        scratch = store.scratch_path(seg)
        with encode.SegmentEncoder(
            scratch, (source.width, source.height), out_size, spec.video.fps, spec.video.preset, spec.video.crf
        ) as enc:
            for i in range(seg.start, seg.end):
                enc.write(source.render(i))
                done += 1
                if done % PROGRESS_EVERY_FRAMES == 0:
                    progress.update(frames_done=done, message=f"segment {seg.index + 1}/{len(plan)}")
                    guard.check([enc.pid])
        store.commit(seg, scratch)
        progress.update(frames_done=done)
        log.info("segment %d/%d rendered: %s frames %d-%d", seg.index + 1, len(plan), seg.name, seg.start, seg.end - 1)


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


def _poster_time(an: analysis_mod.Analysis) -> float:
    """Middle of the most energetic section: the most representative still."""
    best = max(an.sections, key=lambda s: s.energy)
    return (best.start + best.end) / 2.0


def _analysis_json(an: analysis_mod.Analysis, timeline: Timeline, spec: RenderSpec) -> dict[str, object]:
    data = an.to_json()
    data["video"] = {
        "width": spec.video.width,
        "height": spec.video.height,
        "fps": spec.video.fps,
        "frames": timeline.n_frames,
        "cutEvery": spec.video.cut_every,
        "backend": spec.style.backend,
    }
    data["cuts"] = [round(int(f) / timeline.fps, 4) for f in timeline.cut_frames if f > 0]
    return data
