"""Where each output goes, given the one output URL of the spec.

A URL ending in .mp4 names the video itself and the other outputs become siblings
(out.mp4, out.jpg, out.analysis.json, out.segments/); anything else is a directory/prefix holding
video.mp4, thumbnail.jpg, analysis.json, segments/ and cache/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vibecraft_common.status import ANALYSIS_NAME, CACHE_DIR, SEGMENTS_DIR, THUMBNAIL_NAME, VIDEO_NAME

from . import storage


@dataclass(frozen=True)
class OutputLayout:
    """Final URLs of every artefact of one render."""

    root: str  # directory / prefix that must be writable
    video: str
    thumbnail: str
    analysis: str
    segments: str  # checkpoint prefix (one sub-prefix per render fingerprint)
    cache: str  # content-addressed cache prefix (Replicate images)


def layout_for(output_url: str) -> OutputLayout:
    """Derive every output location from spec.output.url."""
    url = output_url.strip()
    if url.lower().endswith(".mp4"):
        stem = url[:-4]
        loc = storage.parse_url(url)
        if isinstance(loc, storage.S3Url):
            parent_key = loc.key.rsplit("/", 1)[0] + "/" if "/" in loc.key else ""
            root = str(storage.S3Url(loc.bucket, parent_key))
        elif isinstance(loc, storage.HttpUrl):
            root = url
        else:
            root = str(loc.parent)
            stem = str(loc)[:-4]
        return OutputLayout(
            root=root,
            video=str(loc) if isinstance(loc, Path) else url,
            thumbnail=stem + ".jpg",
            analysis=stem + ".analysis.json",
            segments=stem + ".segments",
            cache=stem + ".cache",
        )
    root = url
    return OutputLayout(
        root=root,
        video=storage.join(root, VIDEO_NAME),
        thumbnail=storage.join(root, THUMBNAIL_NAME),
        analysis=storage.join(root, ANALYSIS_NAME),
        segments=storage.join(root, SEGMENTS_DIR),
        cache=storage.join(root, CACHE_DIR),
    )
