"""Lyrics and the title card, burned into the picture (issue 21): parsed here, drawn by libass.

A lyrics file (LRC with optional enhanced word times, SRT or WebVTT) becomes a list of `Cue`s: a line
of text, the interval it is sung in, and, when the file gives them, its words' times. `build_ass`
writes one ASS subtitle script for the whole video (the title card and every cue), sized in the output
frame's own pixels; the segment encoder burns it in with ffmpeg's `ass` filter, shifting each
segment's timestamps to the song's time so segments rendered apart (another pod, a retry) caption
exactly as one process would.

Why ASS and not drawtext: libass lays out and wraps a line, outlines it, fades it and sweeps karaoke
highlighting (`\\kf`) through its words by itself, and one script serves every segment.

Bad lyrics never make a silent video without text: an empty file, no timestamp at all, a timestamp
that does not parse, times that run backwards or past the song, too many lines: each is a
`BadLyricsError` naming the line, before any frame is rendered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vibecraft_common import limits as L

from . import storage
from .config import TextSpec
from .errors import BadLyricsError, InputTooLargeError

CAPTIONS_NAME: Final = "captions.ass"  # in the work dir, and under a split render's key prefix
FONT: Final = "DejaVu Sans"  # fonts-dejavu-core: in the renderer image and on every Debian desktop
FADE_MS: Final = 150  # each line fades in and out (shortened for a line shorter than four fades)
KARAOKE_COLOUR: Final = "&H0000D7FF"  # sung words: gold (ASS colours are &HAABBGGRR)
TEXT_COLOUR: Final = "&H00FFFFFF"
OUTLINE_COLOUR: Final = "&H00000000"
SHADOW_COLOUR: Final = "&H80000000"


@dataclass(frozen=True)
class Word:
    """A word (or syllable) of a cue and when it starts being sung."""

    start: float
    text: str


@dataclass(frozen=True)
class Cue:
    """A line of lyrics on screen from `start` to `end` (seconds of the song)."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


# ------------------------------------------------------------------------------------------- parsing

_LRC_TIME = r"(\d{1,3}):(\d{1,2})(?:[.:](\d{1,3}))?"
_LRC_LINE_TAG = re.compile(rf"\[{_LRC_TIME}\]")
_LRC_WORD_TAG = re.compile(rf"<{_LRC_TIME}>")
_LRC_META = re.compile(r"^\[([a-zA-Z#]+):(.*)\]\s*$")
_CUE_TIME = r"(?:(\d{1,3}):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_CUE_ARROW = re.compile(rf"^\s*{_CUE_TIME}\s*-->\s*{_CUE_TIME}(?:\s.*)?$")
_VTT_WORD_TAG = re.compile(rf"<{_CUE_TIME}>")
_MARKUP = re.compile(r"</?[a-zA-Z][^>]*>|\{\\[^}]*\}")  # <i>, <c.red>, <v Singer>, SRT's {\an8}


def _fraction(digits: str | None) -> float:
    return int(digits) / 10 ** len(digits) if digits else 0.0


def _lrc_seconds(m: re.Match[str]) -> float:
    return int(m[1]) * 60 + int(m[2]) + _fraction(m[3])


def _cue_seconds(hours: str | None, minutes: str, seconds: str, fraction: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + _fraction(fraction)


def _clean(text: str) -> str:
    return " ".join(_MARKUP.sub("", text).split())


def detect_format(text: str) -> str:
    """lrc, srt or vtt from the text's own timestamps (the `auto` format)."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("WEBVTT"):
        return "vtt"
    for line in stripped.splitlines():
        if _CUE_ARROW.match(line):
            return "srt"
        if _LRC_LINE_TAG.match(line.strip()):
            return "lrc"
    raise BadLyricsError("lyrics: no timestamps found: expected LRC ([mm:ss.xx] before each line), SRT or WebVTT "
                         "(00:00:01,000 --> 00:00:04,000)")


def parse_lrc(text: str, duration: float) -> list[Cue]:
    """LRC: `[mm:ss.xx]line`, several tags for a repeated line, `[offset:+ms]`, enhanced `<mm:ss.xx>` word times.

    A line lasts until the next timestamped line (an empty one ends it), at most LYRICS_LINE_MAX_SECONDS;
    with word times, a trailing `<mm:ss.xx>` after the last word ends the line.
    """
    offset = 0.0
    stamped: list[tuple[float, str, int]] = []  # (start, rest of the line, line number)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        meta = _LRC_META.match(line)
        if meta and not _LRC_LINE_TAG.match(line):
            if meta[1].lower() == "offset":
                try:
                    offset = int(meta[2].strip()) / 1000.0  # positive: lyrics appear earlier
                except ValueError:
                    raise BadLyricsError(f"lyrics line {number}: [offset:{meta[2][:20]}] is not milliseconds") from None
            continue
        times: list[float] = []
        rest = line
        while (m := _LRC_LINE_TAG.match(rest)) is not None:
            times.append(_lrc_seconds(m))
            rest = rest[m.end():]
        if not times:
            if line.startswith("[") or _LRC_WORD_TAG.search(line):
                raise BadLyricsError(f"lyrics line {number}: timestamp not understood: {line[:60]!r} "
                                     "(LRC wants [mm:ss.xx])")
            raise BadLyricsError(f"lyrics line {number}: no [mm:ss.xx] timestamp before {line[:60]!r}")
        stamped.extend((t - offset, rest, number) for t in times)
    stamped.sort(key=lambda s: s[0])
    cues: list[Cue] = []
    for i, (start, rest, number) in enumerate(stamped):
        following = stamped[i + 1][0] if i + 1 < len(stamped) else duration
        words, end_mark = _lrc_words(rest, number, offset)
        shown = _clean(_LRC_WORD_TAG.sub(" ", rest))
        if not shown:
            continue  # an empty line: ends the one before (its start is that line's `following`)
        end = min(following, start + L.LYRICS_LINE_MAX_SECONDS)
        if end_mark is not None:
            end = min(following, max(end_mark, start + 0.1))
        cues.append(Cue(max(0.0, start), end, shown, tuple(w for w in words if w.start >= start - 0.01)))
    return cues


def _lrc_words(rest: str, number: int, offset: float) -> tuple[list[Word], float | None]:
    """Enhanced LRC's words: text after each `<mm:ss.xx>`; a last tag with no text after it ends the line."""
    tags = list(_LRC_WORD_TAG.finditer(rest))
    words: list[Word] = []
    end_mark = None
    for k, m in enumerate(tags):
        after = rest[m.end(): tags[k + 1].start() if k + 1 < len(tags) else len(rest)]
        at = _lrc_seconds(m) - offset
        if _clean(after):
            if words and at < words[-1].start:
                raise BadLyricsError(f"lyrics line {number}: word times run backwards at {m[0]}")
            words.append(Word(at, _clean(after)))
        elif k == len(tags) - 1:
            end_mark = at
    return words, end_mark


def parse_cues(text: str, vtt: bool) -> list[Cue]:
    """SRT or WebVTT: blocks of `start --> end` then text lines; WebVTT `<hh:mm:ss.mmm>` tags are word times."""
    cues: list[Cue] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        m = _CUE_ARROW.match(lines[i].lstrip("\ufeff"))
        if m is None:
            if "-->" in lines[i]:
                raise BadLyricsError(f"lyrics line {i + 1}: cue times not understood: {lines[i].strip()[:60]!r} "
                                     f"(expected 00:00:01{'.' if vtt else ','}000 --> 00:00:04{'.' if vtt else ','}000)")
            i += 1
            continue
        start, end = _cue_seconds(*m.groups()[:4]), _cue_seconds(*m.groups()[4:])
        number = i + 1
        if end <= start:
            raise BadLyricsError(f"lyrics line {number}: the cue ends ({end:.3f} s) before it starts ({start:.3f} s)")
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip():
            body.append(lines[i].strip())
            i += 1
        raw = " ".join(body)
        words: list[Word] = []
        if vtt and _VTT_WORD_TAG.search(raw):
            pieces = _VTT_WORD_TAG.split(raw)  # text, then 4 groups + text per tag
            head = _clean(pieces[0])
            if head:
                words.append(Word(start, head))
            for k in range(1, len(pieces), 5):
                at, after = _cue_seconds(*pieces[k:k + 4]), _clean(pieces[k + 4])
                if after:
                    words.append(Word(min(max(at, start), end), after))
        shown = _clean(_VTT_WORD_TAG.sub(" ", raw))
        if shown:
            cues.append(Cue(start, end, shown, tuple(words)))
    return cues


def parse(text: str, fmt: str, duration: float) -> list[Cue]:
    """The cues of a lyrics file (`fmt` lrc, srt, vtt or auto), checked against the song's `duration`."""
    if not text.strip():
        raise BadLyricsError("lyrics: the file is empty")
    kind = detect_format(text) if fmt == "auto" else fmt
    cues = parse_lrc(text, duration) if kind == "lrc" else parse_cues(text, vtt=kind == "vtt")
    if not cues:
        raise BadLyricsError(f"lyrics: no timed line with text found (read as {kind.upper()})")
    if len(cues) > L.LYRICS_MAX_LINES:
        raise BadLyricsError(f"lyrics: {len(cues)} timed lines, more than {L.LYRICS_MAX_LINES}")
    first_late = next((c for c in cues if c.start >= duration), None)
    if first_late is not None:
        raise BadLyricsError(f"lyrics: a line starts at {_clock(first_late.start)}, after the song ends "
                             f"({_clock(duration)}): {first_late.text[:60]!r}")
    return [Cue(c.start, min(c.end, duration), c.text, c.words) for c in cues]


def decode(data: bytes) -> str:
    """A lyrics file's text: UTF-8 (with or without BOM) or UTF-16 with a BOM; Latin-1 as the last resort
    (LRC files from old players), so no byte is refused, only text without timestamps."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise BadLyricsError("lyrics: not valid UTF-16 text") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------------------------------------- ASS


@dataclass(frozen=True)
class Placement:
    """Where captions go in a frame of this size: font sizes and margins in the frame's pixels."""

    font: int
    title_font: int
    margin_l: int
    margin_r: int
    margin_v: int


def placement(width: int, height: int) -> Placement:
    """Sizes from the frame's shorter side; margins keep captions inside the platforms' safe areas.

    9:16 (Shorts, Reels, TikTok) keeps clear of the bottom fifth (caption, music and account overlays)
    and of the right-hand button column; 16:9 keeps inside the title-safe area (5 % in, a little more
    at the bottom); 1:1 in between.
    """
    short = min(width, height)
    font = max(10, round(short * 0.058))
    if height > width * 1.2:  # portrait
        return Placement(font, round(font * 1.7), round(width * 0.08), round(width * 0.17), round(height * 0.22))
    if width > height * 1.2:  # landscape
        return Placement(font, round(font * 1.7), round(width * 0.07), round(width * 0.07), round(height * 0.08))
    return Placement(font, round(font * 1.7), round(width * 0.08), round(width * 0.08), round(height * 0.12))


def _ass_time(seconds: float) -> str:
    cs = max(0, round(seconds * 100))
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


def _escape(text: str) -> str:
    """Plain text for an ASS event: braces would open override blocks, a backslash an escape."""
    return text.replace("\\", "/").replace("{", "(").replace("}", ")")


def _fade(duration_s: float) -> str:
    ms = max(0, min(FADE_MS, round(duration_s * 1000 / 4)))
    return f"\\fad({ms},{ms})"


def _karaoke(cue: Cue) -> str:
    """`\\kf` sweeps: each word fills with KARAOKE_COLOUR from its start to the next word's (the last to the
    line's end); a lead-in before the first word is an empty `\\k`."""
    parts: list[str] = []
    lead = round((cue.words[0].start - cue.start) * 100)
    if lead > 0:
        parts.append(f"{{\\k{lead}}}")
    for k, word in enumerate(cue.words):
        until = cue.words[k + 1].start if k + 1 < len(cue.words) else cue.end
        parts.append(f"{{\\kf{max(1, round((until - word.start) * 100))}}}{_escape(word.text)} ")
    return "".join(parts).rstrip()


def build_ass(cues: list[Cue], width: int, height: int, duration: float, title: str | None = None,
              artist: str | None = None) -> str:
    """One ASS script: the title card (if a title or artist is given) and every cue, in frame pixels."""
    p = placement(width, height)
    outline = max(1.0, p.font * 0.08)
    shadow = max(0.0, p.font * 0.04)
    style_fields = "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, " \
                   "Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, " \
                   "Shadow, Alignment, MarginL, MarginR, MarginV, Encoding"
    def style(name: str, size: int, primary: str, secondary: str, align: int, margin_v: int) -> str:
        return (f"Style: {name},{FONT},{size},{primary},{secondary},{OUTLINE_COLOUR},{SHADOW_COLOUR},-1,0,0,0,100,100,"
                f"0,0,1,{outline:.1f},{shadow:.1f},{align},{p.margin_l},{p.margin_r},{margin_v},1")
    head = [
        "[Script Info]", "; VibeCraft captions (renderer/captions.py)", "ScriptType: v4.00+", "WrapStyle: 0",
        "ScaledBorderAndShadow: yes", f"PlayResX: {width}", f"PlayResY: {height}", "",
        "[V4+ Styles]", style_fields,
        style("Lyrics", p.font, TEXT_COLOUR, TEXT_COLOUR, 2, p.margin_v),
        style("Karaoke", p.font, KARAOKE_COLOUR, TEXT_COLOUR, 2, p.margin_v),
        style("Title", p.title_font, TEXT_COLOUR, TEXT_COLOUR, 5, 0),
        "", "[Events]", "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    events: list[str] = []
    card_start, card_end = L.TITLE_CARD_SECONDS
    card_end = min(card_end, duration)
    if (title or artist) and card_end > card_start:
        lines = [_escape(title)] if title else []
        if artist:
            lines.append(f"{{\\fs{p.font}\\b0}}{_escape(artist)}")
        card = "\\N".join(lines)
        events.append(f"Dialogue: 1,{_ass_time(card_start)},{_ass_time(card_end)},Title,,0,0,0,,{{\\fad(400,400)}}{card}")
    for cue in cues:
        text = _karaoke(cue) if cue.words else _escape(cue.text)
        events.append(f"Dialogue: 0,{_ass_time(cue.start)},{_ass_time(cue.end)},{'Karaoke' if cue.words else 'Lyrics'},"
                      f",0,0,0,,{{{_fade(cue.end - cue.start)}}}{text}")
    return "\n".join(head + events) + "\n"


# ------------------------------------------------------------------------------------------ the edge


@dataclass(frozen=True)
class Captions:
    """The video's caption script on local disk, and its hash (part of the render key)."""

    path: Path
    digest: str


def read_lyrics(text: TextSpec) -> str | None:
    """The lyrics' text: inline, or the file at lyrics.url read whole (at most LYRICS_MAX_BYTES)."""
    if text.lyrics_text is not None:
        return text.lyrics_text
    if text.lyrics_url is None:
        return None
    try:
        data = storage.read_input(text.lyrics_url, L.LYRICS_MAX_BYTES, "lyrics file")
    except InputTooLargeError as exc:
        raise BadLyricsError(str(exc)) from None
    return decode(data)


def prepare(text: TextSpec, lyrics: str | None, work: Path, duration: float, width: int, height: int) -> Captions | None:
    """The caption script of a render (None without lyrics, title or artist), written into `work`;
    `lyrics` is what read_lyrics returned."""
    if not text:
        return None
    cues = parse(lyrics, text.lyrics_format, duration) if lyrics is not None else []
    return write(build_ass(cues, width, height, duration, text.title, text.artist), work)


def write(script: str, work: Path) -> Captions:
    """A caption script saved as CAPTIONS_NAME in `work`."""
    path = work / CAPTIONS_NAME
    path.write_text(script, encoding="utf-8")
    return Captions(path, hashlib.sha256(script.encode()).hexdigest()[:16])
