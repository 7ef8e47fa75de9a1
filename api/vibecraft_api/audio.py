"""Recognising audio files by their first bytes (the client's Content-Type is only a hint)."""

from __future__ import annotations

from typing import Final

SNIFF_BYTES: Final = 16
MIME: Final = {
    "mp3": "audio/mpeg", "aac": "audio/aac", "ogg": "audio/ogg", "wav": "audio/wav", "flac": "audio/flac",
    "m4a": "audio/mp4", "aiff": "audio/aiff", "webm": "audio/webm", "caf": "audio/x-caf", "amr": "audio/amr",
}


def sniff(head: bytes) -> str | None:
    """The container format of a file starting with `head`, or None when it is not audio we know."""
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS: sync word 0xFFF, layer bits 00
            return "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0:  # MPEG audio frame sync, layer I-III
            return "mp3"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith((b"RIFF", b"RF64")) and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] == b"ftyp":  # ISO BMFF: m4a, mp4 (ffmpeg uses the audio track)
        return "m4a"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: WebM / Matroska audio
        return "webm"
    if head.startswith(b"caff"):
        return "caf"
    if head.startswith(b"#!AMR"):
        return "amr"
    return None


def content_type(fmt: str) -> str:
    """The MIME type stored with an upload of this format."""
    return MIME.get(fmt, "application/octet-stream")
