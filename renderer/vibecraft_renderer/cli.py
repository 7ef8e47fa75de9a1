"""`vibecraft-render`: the CLI and the Job entry point; translates domain errors into exit codes.

vibecraft-render song.mp3 -o out.mp4          # local render with a progress bar
vibecraft-render song.mp3 -o out.mp4 --parallelism 4   # split over 4 local processes (as spec.parallelism)
vibecraft-render --from-env                   # in a Job: spec from VIBECRAFT_SPEC_JSON
vibecraft-render --warmup                     # compile numba once (populates NUMBA_CACHE_DIR)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from vibecraft_common import limits as L
from vibecraft_common.resource import (
    ENV_CHUNKS,
    ENV_COMPLETION_INDEX,
    ENV_MV_NAME,
    ENV_NUMBA_SEED,
    ENV_SPEC_JSON,
    ENV_STAGE,
    ENV_TERMINATION_LOG,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    RENDER_STAGES,
    STAGE_ALL,
    STAGE_JOIN,
    STAGE_PREPARE,
    STAGE_SEGMENTS,
    TERMINATION_LOG,
    RenderStage,
)

from .config import (
    RenderSpec,
    RuntimeOptions,
    runtime_from_env,
    spec_from_dict,
    spec_from_json,
)
from .errors import RenderError, UsageError

if TYPE_CHECKING:
    from .pipeline import RenderResult

log = logging.getLogger("vibecraft_renderer")

EXIT_SIGTERM = 128 + signal.SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror the MusicVideo spec fields (spec.style.*, spec.video.*) plus runtime knobs."""
    p = _Parser(
        prog="vibecraft-render",
        description="Render an audio-reactive music video (H.264/AAC MP4 + thumbnail + analysis.json).",
        allow_abbrev=False,  # --parallelism passes the command line on to its chunks: flags must be spelled out
    )
    p.add_argument("audio", nargs="?", help="input audio: path, file://, http(s):// or s3://bucket/key")
    p.add_argument("-o", "--output", help="out.mp4 (siblings out.jpg, out.analysis.json) or a dir/s3 prefix")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-env", action="store_true", help=f"read the MusicVideo spec from ${ENV_SPEC_JSON}")
    src.add_argument("--spec", metavar="FILE", help="read the MusicVideo spec JSON from FILE ('-' = stdin)")
    src.add_argument("--warmup", action="store_true", help="analyse a synthetic signal to fill the numba cache")
    a = p.add_argument_group("tempo (spec.audio), when you know the song better than the beat tracker")
    a.add_argument("--bpm", type=float, default=None,
                   help=f"the song's tempo ({L.BPM_MIN:g}..{L.BPM_MAX:g}); replaces tempo detection")
    a.add_argument("--beat-offset", type=float, default=None, metavar="SECONDS",
                   help="time of any one beat, e.g. the first downbeat (needs --bpm): the beat grid is then exact")
    a.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                   help=f"keep the song's own level (default: the soundtrack at {L.LOUDNESS_TARGET_LUFS:g} LUFS)")
    g = p.add_argument_group("style (spec.style)")
    g.add_argument("--backend", choices=L.BACKENDS, default=None)
    g.add_argument("--prompt", default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--react", action="append", default=None, metavar="SOURCE:TARGET[:AMOUNT[:SMOOTHING]]",
                   help=f"spec.style.reactivity, repeatable (e.g. kick:brightness:1.5); 'none' for no couplings. "
                        f"Sources: {', '.join(L.REACT_SOURCES)}; targets: {', '.join(L.REACT_TARGETS)}")
    g.add_argument("--model", default=None, help=f"Replicate model owner/name[:version] (default {L.DEFAULT_MODEL})")
    g.add_argument("--motion", choices=L.MOTIONS, default=None,
                   help="stills (default) or clips: an image-to-video model animates each section's image")
    g.add_argument("--clip-model", default=None,
                   help=f"image-to-video model for --motion clips (default {L.DEFAULT_CLIP_MODEL})")
    g.add_argument("--max-clips", type=int, default=None,
                   help=f"clips per render, 1..{L.CLIPS_MAX} (default {L.DEFAULT_MAX_CLIPS})")
    t = p.add_argument_group("text in the picture (spec.lyrics, spec.title, spec.artist)")
    t.add_argument("--lyrics", default=None, metavar="FILE|URL",
                   help="lyrics burned in as captions: an LRC, SRT or WebVTT file, or its s3:// / http(s):// URL")
    t.add_argument("--lyrics-format", choices=L.LYRICS_FORMATS, default=None, help="default auto")
    t.add_argument("--title", default=None, help="title card: the song's title")
    t.add_argument("--artist", default=None, help="title card: the artist")
    p.add_argument("--preview", action="store_true", default=None,
                   help=f"spec.preview: {L.PREVIEW_SECONDS:g} s from the most energetic section at {L.PREVIEW_HEIGHT}p")
    v = p.add_argument_group("video (spec.video)")
    v.add_argument("--width", type=int, default=None, help=f"even, {L.WIDTH_MIN}..{L.WIDTH_MAX} (needs --height)")
    v.add_argument("--height", type=int, default=None,
                   help=f"even, {L.HEIGHT_MIN}..{L.HEIGHT_MAX} (default {L.DEFAULT_HEIGHT}; alone: 16:9)")
    v.add_argument("--aspect-ratio", choices=L.ASPECT_RATIOS, default=None)
    v.add_argument("--platform", choices=L.PLATFORMS, default=None,
                   help="where the video goes, which sets its frame (youtube 1920x1080, shorts/reels/tiktok "
                        "1080x1920, square 1080x1080); not with --width/--height/--aspect-ratio")
    v.add_argument("--fps", type=int, default=None, help=f"{L.FPS_MIN}..{L.FPS_MAX} (default {L.DEFAULT_FPS})")
    v.add_argument("--cut-every", choices=L.CUT_EVERY, default=None)
    v.add_argument("--preset", choices=L.PRESETS, default=None, help=f"x264 preset (default {L.DEFAULT_PRESET})")
    v.add_argument("--crf", type=int, default=None, help=f"{L.CRF_MIN}..{L.CRF_MAX} (default {L.DEFAULT_CRF})")
    r = p.add_argument_group("runtime")
    r.add_argument("--segment-seconds", type=float, default=None, help="checkpoint segment length (default 30)")
    r.add_argument("--work-dir", default=None, help="scratch directory (default $TMPDIR)")
    r.add_argument("--images-per-section", type=int, default=None)
    r.add_argument("--replicate-concurrency", type=int, default=None)
    r.add_argument("--memory-limit-mb", type=float, default=None, help="memory guard (default 90%% of cgroup)")
    r.add_argument("--keep-segments", action="store_true", default=None, help="keep checkpoints after success")
    r.add_argument("--report", metavar="FILE", help="write a JSON summary (stage timings, frames) to FILE")
    st = p.add_argument_group("split render (one render over several pods: an Indexed Job)")
    st.add_argument("--stage", choices=RENDER_STAGES, default=None,
                    help=f"all (default, ${ENV_STAGE}), or prepare, then segments for every chunk, then join")
    st.add_argument("--chunk", type=int, default=None, metavar="K",
                    help=f"with --stage segments: this chunk, 0..N-1 (default ${ENV_COMPLETION_INDEX})")
    st.add_argument("--chunks", type=int, default=None, metavar="N",
                    help=f"with --stage segments: the number of chunks (default ${ENV_CHUNKS}, else 1)")
    st.add_argument("--parallelism", type=_parallelism, default=None, metavar="N|auto",
                    help=f"split the render over N processes of this machine ({L.PARALLELISM_MIN}.."
                         f"{L.PARALLELISM_MAX}, or auto: one per {L.AUTO_CHUNK_SECONDS:.0f} s of song, at most one "
                         "per CPU): the stages spec.parallelism runs as pods, the same video")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _parallelism(text: str) -> int | str:
    if text == L.PARALLELISM_AUTO:
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not L.PARALLELISM_MIN <= value <= L.PARALLELISM_MAX:
        raise argparse.ArgumentTypeError(f"must be {L.PARALLELISM_MIN}..{L.PARALLELISM_MAX} or auto, not {text[:20]!r}")
    return value


def spec_from_args(ns: argparse.Namespace) -> RenderSpec:
    """Build the spec dict the CRD would hold from flags, so validation is shared."""
    if not ns.audio or not ns.output:
        raise UsageError("need AUDIO and -o OUTPUT (or --from-env / --spec)")
    if ns.beat_offset is not None and ns.bpm is None:
        raise UsageError("--beat-offset requires --bpm")
    audio = {k: v for k, v in {"url": ns.audio, "bpm": ns.bpm, "beatOffsetSeconds": ns.beat_offset,
                               "normalize": ns.normalize}.items() if v is not None}  # fmt: skip
    style = {k: v for k, v in {"backend": ns.backend, "prompt": ns.prompt, "seed": ns.seed, "model": ns.model,
                               "reactivity": _reactivity(ns.react), "motion": ns.motion, "clipModel": ns.clip_model,
                               "maxClips": ns.max_clips}.items() if v is not None}  # fmt: skip
    # A height alone means 16:9 on the command line (the spec wants the ratio said).
    ratio = ns.aspect_ratio or ("16:9" if ns.height is not None and ns.width is None else None)
    video = {k: v for k, v in {"width": ns.width, "height": ns.height, "aspectRatio": ratio,
                               "platform": ns.platform, "fps": ns.fps, "cutEvery": ns.cut_every,
                               "preset": ns.preset, "crf": ns.crf}.items() if v is not None}  # fmt: skip
    text: dict[str, object] = {k: v for k, v in {"title": ns.title, "artist": ns.artist}.items() if v is not None}
    if ns.lyrics is not None:
        text["lyrics"] = {"url": ns.lyrics, "format": ns.lyrics_format or "auto"}
    elif ns.lyrics_format is not None:
        raise UsageError("--lyrics-format needs --lyrics")
    if ns.preview:
        text["preview"] = True
    return spec_from_dict({"audio": audio, "output": {"url": ns.output}, "style": style, "video": video, **text})


def _reactivity(flags: list[str] | None) -> list[dict[str, object]] | None:
    """--react SOURCE:TARGET[:AMOUNT[:SMOOTHING]] flags as spec.style.reactivity ('none': an empty list)."""
    if flags is None:
        return None
    out: list[dict[str, object]] = []
    for flag in flags:
        if flag == "none":
            continue
        parts = flag.split(":")
        if not 2 <= len(parts) <= 4:
            raise UsageError(f"--react {flag}: expected SOURCE:TARGET[:AMOUNT[:SMOOTHING]]")
        entry: dict[str, object] = {"source": parts[0], "target": parts[1]}
        try:
            entry.update(zip(("amount", "smoothing"), (float(p) for p in parts[2:]), strict=False))
        except ValueError:
            raise UsageError(f"--react {flag}: amount and smoothing are numbers") from None
        out.append(entry)
    return out


def _spec_for(ns: argparse.Namespace) -> RenderSpec:
    if ns.spec:
        text = sys.stdin.read() if ns.spec == "-" else Path(ns.spec).read_text()
        ns.spec_text = text  # --parallelism hands it to its chunk processes (stdin is read once)
        return spec_from_json(text)
    env_spec = os.environ.get(ENV_SPEC_JSON)
    if ns.from_env or (env_spec and not ns.audio and not ns.output):
        if not env_spec:
            raise UsageError(f"--from-env given but ${ENV_SPEC_JSON} is empty")
        return spec_from_json(env_spec)
    return spec_from_args(ns)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"${name} is not a whole number: {value[:40]!r}") from None


def stage_from(ns: argparse.Namespace) -> tuple[RenderStage, int, int]:
    """(stage, chunk, chunks) from the flags, else the env an Indexed Job's pod gets; validated."""
    stage = ns.stage or os.environ.get(ENV_STAGE) or STAGE_ALL
    if stage not in RENDER_STAGES:
        raise UsageError(f"${ENV_STAGE} must be one of {', '.join(RENDER_STAGES)}, not {stage[:40]!r}")
    env_chunks = _env_int(ENV_CHUNKS)
    chunks = ns.chunks if ns.chunks is not None else (1 if env_chunks is None else env_chunks)
    chunk = ns.chunk if ns.chunk is not None else (_env_int(ENV_COMPLETION_INDEX) or 0)
    if stage == STAGE_SEGMENTS and not (chunks >= 1 and 0 <= chunk < chunks):
        raise UsageError(f"chunk {chunk} of {chunks}: need 0 <= chunk < chunks")
    for name, value in (("--chunk", ns.chunk), ("--chunks", ns.chunks)):
        if value is not None and stage != STAGE_SEGMENTS:
            raise UsageError(f"{name} needs --stage segments")
    if ns.parallelism is not None and stage != STAGE_ALL:
        raise UsageError("--parallelism runs every stage itself: not with --stage")
    return stage, chunk, chunks


def _child_argv(argv: Sequence[str], spec_file: Path | None) -> list[str]:
    """The command line for --parallelism's chunk processes: without --parallelism and --report (the
    parent's), and `--spec -` read from `spec_file` (the parent has read stdin)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in ("--parallelism", "--report"):
            skip = True
        elif arg.startswith(("--parallelism=", "--report=")):
            continue
        elif arg == "-" and i > 0 and argv[i - 1] == "--spec" and spec_file is not None:
            out.append(str(spec_file))
        elif arg == "--spec=-" and spec_file is not None:
            out.append(f"--spec={spec_file}")
        else:
            out.append(arg)
    return out


def render_split_locally(ns: argparse.Namespace, spec: RenderSpec, opts: RuntimeOptions) -> RenderResult:
    """--parallelism: prepare here, then every chunk in its own process at once (`--stage segments`, what an
    Indexed Job's pods run), then join here. Chunk processes log to stderr; the first to fail fails the render."""
    from . import pipeline
    from .errors import StageError
    from .progress import Progress, default_sinks, stage_span, stage_weights

    weights = stage_weights(spec.style.backend)
    prepared = pipeline.prepare(spec, opts, Progress(default_sinks(ns.quiet), weights,
                                                     span=stage_span(STAGE_PREPARE, weights)))
    cap = L.PARALLELISM_MAX if ns.parallelism != L.PARALLELISM_AUTO else max(1, os.cpu_count() or 1)
    chunks = L.chunk_count(ns.parallelism, prepared.duration, cap, opts.segment_seconds)
    log.info("rendering %d chunks in %d processes", chunks, chunks)
    with tempfile.TemporaryDirectory(prefix="vibecraft-split-", dir=opts.work_dir) as tmp:
        spec_file = None
        if getattr(ns, "spec_text", None) is not None and ns.spec == "-":
            spec_file = Path(tmp) / "spec.json"
            spec_file.write_text(ns.spec_text)
        base = [sys.executable, "-m", "vibecraft_renderer", *_child_argv(ns.argv, spec_file), "--quiet"]
        procs = [subprocess.Popen([*base, "--stage", STAGE_SEGMENTS, "--chunks", str(chunks), "--chunk", str(k)])
                 for k in range(chunks)]
        try:
            while (codes := [proc.poll() for proc in procs]) and None in codes:
                if any(code not in (None, EXIT_OK) for code in codes):
                    break  # one failed: the render has failed, stop the others (finally)
                time.sleep(0.2)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            codes = [proc.wait() for proc in procs]
    # The chunk that failed first, not one stopped because of it (SIGTERM).
    failed = sorted(((k, code) for k, code in enumerate(codes) if code != EXIT_OK), key=lambda f: f[1] == EXIT_SIGTERM)
    if failed:
        k, code = failed[0]
        raise StageError(f"chunk {k + 1}/{chunks} failed (exit {code}; its log is above)")
    return pipeline.join(spec, opts, Progress(default_sinks(ns.quiet), weights, span=stage_span(STAGE_JOIN, weights)))


def cpu_seconds() -> float:
    """CPU time of this process and the children it waited for (ffmpeg): a stage's work, in its pod's log
    (bench/bench_split_pods.py sums it over a split render's pods)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_termination_log(line: str) -> None:
    """Kubernetes shows this in the pod status; not writable outside a pod, which is fine."""
    path = os.environ.get(ENV_TERMINATION_LOG) or TERMINATION_LOG
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(line.replace("\n", " ")[:4000] + "\n")
    except OSError:
        pass


def ensure_numba_cache() -> None:
    """Give numba a writable, pre-filled cache before librosa imports it (saves ~5-20 s per run).

    numba only uses a cache dir it can write to, so a cache baked into a read-only image by
    `--warmup` is copied: into NUMBA_CACHE_DIR when that is writable but empty (the operator points
    it at the pod's scratch emptyDir) from VIBECRAFT_NUMBA_CACHE_SEED, or, when NUMBA_CACHE_DIR
    itself is read-only, from there to $TMPDIR.
    """
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        return
    seed = os.environ.get(ENV_NUMBA_SEED)
    target = Path(cache)
    if not os.access(cache, os.W_OK) and target.is_dir():
        seed, target = cache, Path(tempfile.gettempdir()) / "vibecraft-numba-cache"
        os.environ["NUMBA_CACHE_DIR"] = str(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        if seed and Path(seed).is_dir() and Path(seed) != target and not any(target.iterdir()):
            shutil.copytree(seed, target, dirs_exist_ok=True)
    except OSError as exc:
        log.warning("could not prepare numba cache %s: %s", target, exc)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_SIGTERM)


def _setup_logging(verbose: bool, bar: bool) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if bar else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        for noisy in ("numba", "botocore", "boto3", "urllib3", "httpx", "s3transfer", "kubernetes"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run(ns: argparse.Namespace) -> int:
    """Everything after argument parsing; raises RenderError subclasses."""
    if ns.warmup:
        from .analysis import warmup

        t0 = time.monotonic()
        tempo = warmup()
        log.info("warmup done in %.1f s (tempo %.1f); numba cache: %s", time.monotonic() - t0, tempo,
                 os.environ.get("NUMBA_CACHE_DIR", "next to the librosa sources"))  # fmt: skip
        return int(EXIT_OK)
    spec = _spec_for(ns)
    opts: RuntimeOptions = runtime_from_env(
        segment_seconds=ns.segment_seconds,
        work_dir=ns.work_dir,
        images_per_section=ns.images_per_section,
        replicate_concurrency=ns.replicate_concurrency,
        memory_limit_mb=ns.memory_limit_mb,
        keep_segments=ns.keep_segments,
    )
    from . import pipeline
    from .progress import Progress, default_sinks, stage_span, stage_weights

    stage, chunk, chunks = stage_from(ns)
    weights = stage_weights(spec.style.backend)
    sinks = default_sinks(quiet=ns.quiet, **({"chunk": chunk, "chunks": chunks} if stage == STAGE_SEGMENTS else {}))
    progress = Progress(sinks, weights, span=stage_span(stage, weights))
    t0 = time.monotonic()
    try:
        if spec.preview and stage != STAGE_ALL:
            raise UsageError("a preview (spec.preview) renders in one pod: not split into stages")
        if L.parallelism_for(ns.parallelism or 1, spec.preview) != 1:
            progress.close()
            result = render_split_locally(ns, spec, opts)
        elif stage == STAGE_PREPARE:
            result = pipeline.prepare(spec, opts, progress)
        elif stage == STAGE_SEGMENTS:
            result = pipeline.render_chunk(spec, opts, progress, chunk, chunks)
        elif stage == STAGE_JOIN:
            result = pipeline.join(spec, opts, progress)
        else:
            result = pipeline.render(spec, opts, progress)
    finally:
        progress.close()
    elapsed = time.monotonic() - t0
    if stage != STAGE_ALL:
        log.info("stage %s%s done in %.1f s (cpu %.1f s): %d segments rendered, %d reused (render key %s)", stage,
                 f" (chunk {chunk + 1}/{chunks})" if stage == STAGE_SEGMENTS else "", elapsed, cpu_seconds(),
                 result.segments_rendered, result.segments_reused, result.render_key)  # fmt: skip
    else:
        log.info("rendered %s: %d frames, %.1f s of audio in %.1f s (%.2fx, cpu %.1f s), %d segments rendered, "
                 "%d reused", result.layout.video, result.frames, result.duration, elapsed,
                 elapsed / max(result.duration, 1e-9), cpu_seconds(), result.segments_rendered,
                 result.segments_reused)  # fmt: skip
    log.info("stage times: %s", ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items()))
    if ns.report:
        import resource

        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report = {"video": result.layout.video, "frames": result.frames, "duration": result.duration,
                  "tempo": result.tempo, "wallSeconds": elapsed, "stageSeconds": result.stage_seconds,
                  "segmentsRendered": result.segments_rendered, "segmentsReused": result.segments_reused,
                  "peakRssMb": round(peak_self, 1), "peakRssChildMb": round(peak_children, 1)}  # fmt: skip
        Path(ns.report).write_text(json.dumps(report, indent=2))
    write_termination_log(f"ok: rendered {result.layout.video}" if stage in (STAGE_ALL, STAGE_JOIN) else f"ok: {stage}")
    return int(EXIT_OK)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = parser.parse_args(argv)
        ns.argv = argv
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"vibecraft-render: error: {exc}", file=sys.stderr)
        write_termination_log(f"usage: {exc}")
        return int(EXIT_USAGE)
    _setup_logging(ns.verbose, bar=not ns.quiet and sys.stderr.isatty() and not os.environ.get(ENV_MV_NAME))
    ensure_numba_cache()
    try:
        return run(ns)
    except RenderError as exc:
        reason = exc.reason()
        log.error("%s (exit %d)", reason, exc.exit_code)
        write_termination_log(reason)
        return exc.exit_code
    except KeyboardInterrupt:
        write_termination_log("interrupted")
        return 130
    except SystemExit as exc:
        if exc.code == EXIT_SIGTERM:
            write_termination_log("terminated by SIGTERM")
        raise
    except Exception as exc:
        log.exception("internal error")
        write_termination_log(f"internal error: {type(exc).__name__}: {exc}")
        return int(EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
