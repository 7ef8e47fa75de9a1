"""Rendering in fixed-length segments with checkpoints, so a retried Job resumes instead of restarting.

A segment is a whole number of frames [start, end) of the global frame sequence; it is encoded to
its own MP4 and published under `<segments prefix>/<render key>/seg-NNNNN.mp4` only once complete
(atomic rename / S3 temp key + copy). The render key hashes the audio bytes and every spec field
that changes pixels, so a retry with the same inputs reuses finished segments and a changed spec
never picks up stale ones. Segments are joined with the concat demuxer (-c copy).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from . import storage

log = logging.getLogger(__name__)

RENDERER_VISUAL_VERSION: Final = 1  # bump when the same inputs would render different pixels
MANIFEST: Final = "manifest.json"


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of the video."""

    index: int
    start: int
    end: int

    @property
    def frames(self) -> int:
        """Number of frames in the segment."""
        return self.end - self.start

    @property
    def name(self) -> str:
        """File name of the finished segment."""
        return f"seg-{self.index:05d}.mp4"


def plan(total_frames: int, fps: int, segment_seconds: float) -> list[Segment]:
    """Partition [0, total_frames) into segments of round(segment_seconds * fps) frames."""
    return plan_frames(total_frames, max(1, round(segment_seconds * fps)))


def plan_frames(total_frames: int, per: int) -> list[Segment]:
    """Partition [0, total_frames) into segments of `per` frames (the last one shorter)."""
    return [Segment(i, start, min(start + per, total_frames)) for i, start in enumerate(range(0, total_frames, per))]


def chunk(segments: list[Segment], index: int, count: int) -> list[Segment]:
    """Chunk `index` of `count`: a contiguous run of segments, sizes differing by at most one.

    Contiguous, so a pod's segments are neighbours in the video (its progress is one stretch of it);
    every segment is in exactly one chunk whatever the count, and a chunk may be empty when there
    are more chunks than segments.
    """
    if not 0 <= index < count:
        raise ValueError(f"chunk {index} of {count}")
    n = len(segments)
    return segments[index * n // count : (index + 1) * n // count]


def sha256_file(path: Path) -> str:
    """Content hash of the input audio (the render key must change when the song does). Remembered per file
    version: the analysis cache and the render key both need it, and a 2 h WAV takes seconds to read."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def render_key(audio_sha256: str, fingerprint: dict[str, Any], frames_per_segment: int) -> str:
    """Short stable id of (audio, look, segmenting, renderer version)."""
    blob = json.dumps(
        {"audio": audio_sha256, "spec": fingerprint, "per": frames_per_segment, "v": RENDERER_VISUAL_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CheckpointStore:
    """Finished segments of one render key, under a local dir or an S3 prefix."""

    def __init__(self, segments_url: str, key: str, work_dir: Path) -> None:
        self.segments_url = segments_url
        self.prefix = storage.join(segments_url, key)
        self.work_dir = work_dir
        self._local_root = storage.parse_url(self.prefix)
        self._finished = storage.list_names(self.prefix)

    @property
    def is_local(self) -> bool:
        """Checkpoints live on this machine's filesystem (no sync needed)."""
        return isinstance(self._local_root, Path)

    def is_done(self, seg: Segment) -> bool:
        """Was this segment published by an earlier (possibly killed) run?"""
        return seg.name in self._finished

    def scratch_path(self, seg: Segment) -> Path:
        """Where to encode a segment before publishing it."""
        return self.work_dir / f"encoding-{seg.name}"

    def commit(self, seg: Segment, encoded: Path) -> None:
        """Publish a finished segment atomically."""
        storage.put_file(encoded, storage.join(self.prefix, seg.name), "video/mp4", move=True)
        if encoded.exists():  # remote store: keep the local file for the join, saving a download
            encoded.replace(self.work_dir / seg.name)
        self._finished.add(seg.name)

    def write_manifest(self, info: dict[str, Any]) -> None:
        """Human-readable description of what the key stands for (debugging aid)."""
        if MANIFEST not in self._finished:
            storage.put_bytes(
                json.dumps(info, indent=2, sort_keys=True).encode(),
                storage.join(self.prefix, MANIFEST),
                self.work_dir,
                "application/json",
            )

    def local_copy(self, seg: Segment) -> Path:
        """A local file of a finished segment, downloading it from S3 if needed."""
        if isinstance(self._local_root, Path):
            return self._local_root / seg.name
        dest = self.work_dir / seg.name
        if not dest.exists():
            storage.get_file(storage.join(self.prefix, seg.name), dest)
        return dest

    def cleanup(self) -> None:
        """Drop the checkpoints once the final video is published: this render key's and those of earlier
        specs of the same output (an edited spec renders under a new key; the old one's segments and
        manifest would otherwise stay behind for good)."""
        storage.delete_prefix(self.segments_url)
        if isinstance(self._local_root, Path):
            with contextlib.suppress(OSError):
                self._local_root.parent.rmdir()  # segments/ itself
