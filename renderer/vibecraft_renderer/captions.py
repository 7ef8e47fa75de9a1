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
import html
import re
from collections.abc import Callable
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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _collapse(text: str) -> str:
    """Markup and control characters out, every run of whitespace one space (ends kept: a word's spacing)."""
    return re.sub(r"\s+", " ", _CONTROL.sub("", _MARKUP.sub("", text)))


def _clean(text: str) -> str:
    return _collapse(text).strip()


def _timed_words(head_at: float, text: str, tags: list[re.Match[str]], at: Callable[[re.Match[str]], float],
                 number: int) -> tuple[list[Word], float | None]:
    """A line with word times: the text before the first tag (sung from `head_at`) and after each tag, their
    own spacing kept ("Hel<t>lo" is one word sung in two parts); a last tag with nothing after it is the line's
    end mark. Times running backwards are refused."""
    words: list[Word] = []
    head = _collapse(text[: tags[0].start()])
    if head.strip():
        words.append(Word(head_at, head))
    end_mark = None
    for k, m in enumerate(tags):
        piece = _collapse(text[m.end(): tags[k + 1].start() if k + 1 < len(tags) else len(text)])
        when = at(m)
        if words and when < words[-1].start - 1e-9 and (piece.strip() or k == len(tags) - 1):
            raise BadLyricsError(f"lyrics line {number}: word times run backwards at {m[0]}")
        if piece.strip():
            words.append(Word(when, piece))
        elif k == len(tags) - 1:
            end_mark = when
        elif piece and words:  # a pause between two words: keep the space
            words[-1] = Word(words[-1].start, words[-1].text + " ")
    if words:
        words[0] = Word(words[0].start, words[0].text.lstrip())
        words[-1] = Word(words[-1].start, words[-1].text.rstrip())
    return words, end_mark


def _words_text(words: list[Word] | tuple[Word, ...]) -> str:
    return " ".join("".join(w.text for w in words).split())


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


def _lrc_offset(lines: list[str]) -> float:
    """`[offset:+ms]` wherever it is in the file (positive: the lyrics come earlier), applied to every time."""
    offset = 0.0
    for number, raw in enumerate(lines, 1):
        meta = _LRC_META.match(raw.strip().lstrip("\ufeff"))
        if meta and meta[1].lower() == "offset" and not _LRC_LINE_TAG.match(raw.strip()):
            try:
                offset = int(meta[2].strip()) / 1000.0
            except ValueError:
                raise BadLyricsError(f"lyrics line {number}: [offset:{meta[2][:20]}] is not milliseconds") from None
    return offset


@dataclass(frozen=True)
class _Stamped:
    """One appearance of an LRC line: its time, text, words and end mark, moved to that appearance."""

    start: float
    text: str
    words: tuple[Word, ...]
    end_mark: float | None


def parse_lrc(text: str, duration: float) -> list[Cue]:
    """LRC: `[mm:ss.xx]line`, several tags for a repeated line, `[offset:+ms]`, enhanced `<mm:ss.xx>` word times.

    A line lasts until the next later timestamp (an empty line ends it), at most LYRICS_LINE_MAX_SECONDS;
    with word times, a trailing `<mm:ss.xx>` after the last word ends the line. A repeated line's word
    times are those of its first appearance, moved with it; lines sharing one timestamp (a duet, a
    translation) are shown together. Lines and words are counted while reading (LYRICS_MAX_LINES,
    LYRICS_MAX_WORDS): a small file of many tags cannot make a huge script.
    """
    lines = text.splitlines()
    offset = _lrc_offset(lines)
    stamped: list[_Stamped] = []
    n_words = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip().lstrip("\ufeff")
        if not line or (_LRC_META.match(line) and not _LRC_LINE_TAG.match(line)):
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
        tags = list(_LRC_WORD_TAG.finditer(rest))
        words, end_mark = _timed_words(times[0], rest, tags, _lrc_seconds, number) if tags else ([], None)
        shown = _words_text(words) if tags else _clean(rest)
        for t in times:
            n_words += len(words)
            if len(stamped) >= L.LYRICS_MAX_LINES:
                raise BadLyricsError(f"lyrics: more than {L.LYRICS_MAX_LINES} timed lines")
            if n_words > L.LYRICS_MAX_WORDS:
                raise BadLyricsError(f"lyrics: more than {L.LYRICS_MAX_WORDS} timed words")
            shift = t - times[0] - offset
            stamped.append(_Stamped(t - offset, shown, tuple(Word(w.start + shift, w.text) for w in words),
                                    None if end_mark is None else end_mark + shift))
    stamped.sort(key=lambda s: s.start)
    cues: list[Cue] = []
    i = 0
    while i < len(stamped):
        group = [stamped[i]]
        while i + len(group) < len(stamped) and stamped[i + len(group)].start - group[0].start < 0.005:
            group.append(stamped[i + len(group)])
        i += len(group)
        sung = [g for g in group if g.text]
        if not sung:
            continue  # an empty line: ends the one before (its start is that line's `following`)
        start = group[0].start
        following = stamped[i].start if i < len(stamped) else duration
        end = min(following, start + L.LYRICS_LINE_MAX_SECONDS)
        marks = [g.end_mark for g in sung if g.end_mark is not None]
        if marks:
            end = min(following, max(max(marks), start + 0.1))
        if len(sung) > 1:  # shown together, one under the other, without word sweeps
            cues.append(Cue(max(0.0, start), end, "\n".join(g.text for g in sung)))
        else:
            clamped = tuple(Word(max(w.start, start), w.text) for w in sung[0].words)  # none before the line
            cues.append(Cue(max(0.0, start), end, sung[0].text, clamped))
    return cues


def parse_cues(text: str, vtt: bool) -> list[Cue]:
    """SRT or WebVTT: blocks of `start --> end` then text lines; WebVTT `<hh:mm:ss.mmm>` tags are word times
    and its character references (`&amp;`) are decoded."""
    cues: list[Cue] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    n_words = 0
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
        if vtt:
            raw = html.unescape(raw)
        tags = list(_VTT_WORD_TAG.finditer(raw)) if vtt else []
        words: list[Word] = []
        if tags:
            words, _ = _timed_words(start, raw, tags, lambda t: _cue_seconds(*t.groups()), number)
            words = [Word(min(max(w.start, start), end), w.text) for w in words]
            n_words += len(words)
        shown = _words_text(words) if tags else _clean(raw)
        if shown:
            cues.append(Cue(start, end, shown, tuple(words)))
        if len(cues) > L.LYRICS_MAX_LINES:
            raise BadLyricsError(f"lyrics: more than {L.LYRICS_MAX_LINES} timed lines")
        if n_words > L.LYRICS_MAX_WORDS:
            raise BadLyricsError(f"lyrics: more than {L.LYRICS_MAX_WORDS} timed words")
    return cues


def parse(text: str, fmt: str, duration: float) -> list[Cue]:
    """The cues of a lyrics file (`fmt` lrc, srt, vtt or auto), checked against the song's `duration`."""
    if not text.strip():
        raise BadLyricsError("lyrics: the file is empty")
    kind = detect_format(text) if fmt == "auto" else fmt
    cues = parse_lrc(text, duration) if kind == "lrc" else parse_cues(text, vtt=kind == "vtt")
    if not cues:
        raise BadLyricsError(f"lyrics: no timed line with text found (read as {kind.upper()})")
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
    """Plain text for an ASS event: braces would open override blocks, a backslash an escape; a line break
    (lines sung together) becomes ASS's own."""
    return text.replace("\\", "/").replace("{", "(").replace("}", ")").replace("\n", "\\N")


def _one_line(text: str) -> str:
    """A title or artist as one line of plain text: no control characters, no line breaks (a newline in an ASS
    event would end it and start a section of the tenant's making)."""
    return " ".join(_CONTROL.sub("", text).split())


def _fade(duration_s: float) -> str:
    ms = max(0, min(FADE_MS, round(duration_s * 1000 / 4)))
    return f"\\fad({ms},{ms})"


def _karaoke(cue: Cue) -> str:
    """`\\kf` sweeps: each word fills with KARAOKE_COLOUR from its start to the next word's (the last to the
    line's end); a lead-in before the first word is an empty `\\k`. Durations are differences of rounded
    times, so rounding never adds up along a line."""
    cs = [round(t * 100) for t in (cue.start, *(w.start for w in cue.words), cue.end)]
    parts = [f"{{\\k{cs[1] - cs[0]}}}"] if cs[1] > cs[0] else []
    for k, word in enumerate(cue.words):
        parts.append(f"{{\\kf{max(0, cs[k + 2] - cs[k + 1])}}}{_escape(word.text)}")
    return "".join(parts)


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
    title, artist = _one_line(title or "") or None, _one_line(artist or "") or None
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
