"""Lyrics and the title card (issue 21 part 1 and part 5): parsed exactly, drawn where and when they belong,
read back from the rendered frames with OCR (Debian's tesseract-ocr), refused clearly when unusable."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from vibecraft_common import limits as L
from vibecraft_common.resource import EXIT_BAD_LYRICS, PERMANENT_EXIT_CODES
from vibecraft_renderer import captions
from vibecraft_renderer.errors import BadLyricsError

from .helpers import caption_inks, run_render, video_frame
from .helpers import caption_text as ocr
from .test_split import stream_md5

# Five lines of a 20 s song: each ends at an empty timestamp, with gaps between; the third is sung word by word.
LRC = """[ti:Crossroads]
[00:01.00]Golden river running slow
[00:03.50]
[00:04.50]Morning light across the hills
[00:07.00]
[00:08.00]<00:08.00>Every <00:08.60>window <00:09.20>open <00:09.80>wide
[00:10.50]
[00:12.00]Silver engines humming low
[00:14.50]
[00:16.00]Carry me back home tonight
[00:18.50]
"""
LINES = [(1.0, 3.5, "Golden river running slow"), (4.5, 7.0, "Morning light across the hills"),
         (8.0, 10.5, "Every window open wide"), (12.0, 14.5, "Silver engines humming low"),
         (16.0, 18.5, "Carry me back home tonight")]  # fmt: skip


# ------------------------------------------------------------------------------------------- parsing


def test_lrc_lines_end_at_the_next_timestamp_and_words_keep_their_times() -> None:
    cues = captions.parse(LRC, "auto", 20.0)
    assert [(c.start, c.end, c.text) for c in cues] == LINES
    assert [(w.start, w.text) for w in cues[2].words] == [(8.0, "Every "), (8.6, "window "), (9.2, "open "),
                                                          (9.8, "wide")]  # fmt: skip
    assert all(not c.words for i, c in enumerate(cues) if i != 2)


def test_lrc_repeated_tags_offset_end_marks_and_the_longest_line() -> None:
    text = "[offset:+500]\n[00:02.00][00:12.00]Chorus again\n[00:05.00]<00:05.00>one <00:05.50>two <00:06.25>\n" \
           "[00:30.00]last line\n"
    cues = captions.parse(text, "lrc", 60.0)
    # +500 ms: everything half a second earlier; a line lasts to the next one, at most LYRICS_LINE_MAX_SECONDS;
    # a last word tag with no word ends its line.
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.5, 4.5, "Chorus again"), (4.5, 5.75, "one two"), (11.5, 11.5 + L.LYRICS_LINE_MAX_SECONDS, "Chorus again"),
        (29.5, 29.5 + L.LYRICS_LINE_MAX_SECONDS, "last line")]  # fmt: skip
    assert [w.start for w in cues[1].words] == [4.5, 5.0]
    assert captions.parse("[00:01.00]only line\n", "auto", 3.0)[0].end == 3.0  # cut at the song's end


def test_word_times_keep_every_word_and_their_spacing() -> None:
    """Text before the first word tag, words timed a little before their line, syllables of one word, a
    repeated line's word times, an [offset:] at the end of the file, lines sharing one timestamp."""
    cue = captions.parse("[00:10.00]Hello <00:10.50>world\n", "lrc", 20.0)[0]
    assert cue.text == "Hello world" and [(w.start, w.text) for w in cue.words] == [(10.0, "Hello "), (10.5, "world")]
    cue = captions.parse("[00:10.00]<00:09.95>Hello <00:10.50>wor<00:10.80>ld<00:11.20>\n", "lrc", 20.0)[0]
    assert cue.text == "Hello world" and (cue.start, cue.end) == (10.0, 11.2)
    assert [(w.start, w.text) for w in cue.words] == [(10.0, "Hello "), (10.5, "wor"), (10.8, "ld")]
    first, again = captions.parse("[00:10.00][01:10.00]<00:10.00>Hello <00:10.50>world<00:12.00>\n", "lrc", 90.0)
    assert (first.start, first.end, again.start, again.end) == (10.0, 12.0, 70.0, 72.0)
    assert [w.start for w in again.words] == [70.0, 70.5]
    late = captions.parse("[00:10.00]<00:10.00>Hello <00:10.50>world\n[offset:+500]\n", "lrc", 20.0)[0]
    assert late.start == 9.5 and [w.start for w in late.words] == [9.5, 10.0] and late.text == "Hello world"
    duet = captions.parse("[00:05.00]She sings\n[00:05.00]He answers\n[00:08.00]\n", "lrc", 20.0)
    assert [(c.start, c.end, c.text) for c in duet] == [(5.0, 8.0, "She sings\nHe answers")]
    script = captions.build_ass(duet, 640, 360, 20.0)
    assert "She sings\\NHe answers" in script


def test_karaoke_durations_do_not_drift() -> None:
    """Word times every 0.333 s: each \\kf rounded alone would lose up to half a centisecond per word."""
    words = tuple(captions.Word(1.0 + k / 3, f"w{k} ") for k in range(30))
    script = captions.build_ass([captions.Cue(1.0, 11.0, "x", words)], 640, 360, 20.0)
    durations = [int(d) for d in re.findall(r"\\kf(\d+)", script)]
    assert sum(durations) == 1000 and set(durations) <= {33, 34}


def test_a_small_file_of_many_tags_cannot_make_a_huge_script() -> None:
    """2000 line tags on one line of 3000 word tags: 53 KB, 6 million words if each repeat had its own."""
    line = "".join(f"[{i // 6000:02d}:{i // 100 % 60:02d}.{i % 100:02d}]" for i in range(2000))
    line += "".join(f"<{k // 6000:02d}:{k // 100 % 60:02d}.{k % 100:02d}>w" for k in range(3000))
    assert len(line) < 60_000
    with pytest.raises(BadLyricsError, match=f"more than {L.LYRICS_MAX_WORDS} timed words"):
        captions.parse(line, "lrc", 7200.0)


def test_a_title_cannot_open_sections_or_events_of_its_own() -> None:
    script = captions.build_ass([], 640, 360, 20.0, "Song\n[V4+ Styles]\nStyle: Evil\r\n{\\pos(0,0)}\x01", "A\nB")
    events = [line for line in script.splitlines() if line.startswith(("Dialogue:", "Style:", "["))]
    assert len([e for e in events if e.startswith("Dialogue:")]) == 1 and "Style: Evil" not in events, events
    assert "Song [V4+ Styles] Style: Evil (/pos(0,0))\\N" in script and "A B" in script


def test_srt_and_webvtt_with_markup_and_word_times() -> None:
    srt = "\ufeff1\r\n00:00:01,000 --> 00:00:03,500\r\n<i>Golden</i> river\r\nrunning {\\an8}slow\r\n\r\n" \
          "2\r\n00:00:04,500 --> 00:00:07,000\r\nMorning light\r\n"
    assert [(c.start, c.end, c.text) for c in captions.parse(srt, "auto", 20.0)] == [
        (1.0, 3.5, "Golden river running slow"), (4.5, 7.0, "Morning light")]
    vtt = "WEBVTT\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:03.500 align:center\n<v Singer>Golden " \
          "<00:00:01.600>river <00:00:02.200>running\n\n01:00:04.500 --> 01:00:07.000\nRock &amp; Roll\n"
    cues = captions.parse(vtt, "auto", 7200.0)
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 3.5, "Golden river running"),
                                                        (3604.5, 3607.0, "Rock & Roll")]  # fmt: skip
    assert [(w.start, w.text) for w in cues[0].words] == [(1.0, "Golden "), (1.6, "river "), (2.2, "running")]


@pytest.mark.parametrize(("text", "fmt", "says"), [
    ("", "auto", "the file is empty"),
    ("   \n\n", "lrc", "the file is empty"),
    ("just some words\nno times at all\n", "auto", "no timestamps found"),
    ("[00:01.00]ok\nno timestamp here\n", "lrc", "line 2: no [mm:ss.xx] timestamp"),
    ("[00:01.00]ok\n[1:xx]broken\n", "lrc", "line 2: timestamp not understood"),
    ("[00:01.00]<00:02.00>b <00:01.50>a\n", "lrc", "word times run backwards"),
    ("[00:01.00]\n[00:02.00]\n", "lrc", "no timed line with text"),
    ("[00:25.00]after the end\n", "lrc", "after the song ends (0:20.00)"),
    ("1\n00:00:05,000 --> 00:00:04,000\nbackwards\n", "srt", "ends (4.000 s) before it starts"),
    ("1\n00:00:01 --> 00:00:04\nno millis\n", "srt", "line 2: cue times not understood"),
    ("[offset:soon]\n[00:01.00]x\n", "lrc", "is not milliseconds"),
])  # fmt: skip
def test_unusable_lyrics_say_what_is_wrong(text: str, fmt: str, says: str) -> None:
    with pytest.raises(BadLyricsError, match=re.escape(says)):
        captions.parse(text, fmt, 20.0)


def test_too_many_lines_and_every_encoding() -> None:
    many = "".join(f"[{i // 60:02d}:{i % 60:02d}.00]line {i}\n" for i in range(L.LYRICS_MAX_LINES + 1))
    with pytest.raises(BadLyricsError, match=f"more than {L.LYRICS_MAX_LINES}"):
        captions.parse(many, "lrc", 7200.0)
    assert captions.decode("[00:01.00]Café".encode("utf-16")) == "[00:01.00]Café"
    assert captions.decode("\ufeff[00:01.00]Café".encode()) == "[00:01.00]Café"
    assert captions.decode("[00:01.00]Café".encode("latin-1")) == "[00:01.00]Café"


def test_the_script_places_text_in_the_platforms_safe_areas() -> None:
    script = captions.build_ass(captions.parse(LRC, "auto", 20.0), 1080, 1920, 20.0, "A {title}", "Artist\\N")
    assert "PlayResX: 1080" in script and "PlayResY: 1920" in script
    assert "{\\kf60}Every {\\kf60}window {\\kf60}open {\\kf70}wide" in script
    assert "Title,,0,0,0,,{\\fad(400,400)}A (title)\\N{\\fs63\\b0}Artist/N" in script  # braces/backslash disarmed
    tall = captions.placement(1080, 1920)
    assert tall.margin_v >= 0.2 * 1920 and tall.margin_r >= 0.15 * 1080  # clear of the overlays and buttons
    wide = captions.placement(1920, 1080)
    assert wide.margin_v < tall.margin_v / 1920 * 1080 and wide.font == tall.font  # the same text size
    assert captions.build_ass([], 640, 360, 2.0, "Short", None).count("Dialogue:") == 1  # a 2 s song: card cut short
    assert captions.build_ass([], 640, 360, 0.4, "Shorter", None).count("Dialogue:") == 0


# --------------------------------------------------------------------------------------- in the video

WIDTH, HEIGHT, FPS = 1280, 720, 5


def words_seen(line: str, ocr: str) -> int:
    tokens = {t.lower() for t in re.findall(r"[A-Za-z]+", ocr)}
    return sum(1 for w in line.lower().split() if w in tokens)


@pytest.fixture(scope="module")
def lyrics_video(real_song: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract not installed (make bootstrap installs tesseract-ocr)")
    d = tmp_path_factory.mktemp("lyrics")
    (d / "song.lrc").write_text(LRC)
    res = run_render([str(real_song), "-o", str(d / "out"), "--width", str(WIDTH), "--height", str(HEIGHT),
                      "--fps", str(FPS), "--lyrics", str(d / "song.lrc"), "-q"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    return d / "out" / "video.mp4"


def test_each_line_is_on_screen_in_its_interval_and_nowhere_else(lyrics_video: Path) -> None:
    """The right line at the middle of each of the 5 lines; at the middle of every gap and before the first
    line, none of them (a frame shows a line from its start to its end, whole frames)."""
    seen: dict[float, str] = {}
    for start, end, line in LINES:
        at = (start + end) / 2
        seen[at] = text = ocr(lyrics_video, at, (WIDTH, HEIGHT))
        assert words_seen(line, text) >= len(line.split()) - 1, (at, line, text)
        for other_start, _, other in LINES:
            if other_start != start:
                assert words_seen(other, text) <= 1, (at, other, text)
    for at in (0.4, 3.9, 7.6, 11.2, 15.2, 19.4):  # before the first line, in the gaps, after the last
        seen[at] = text = ocr(lyrics_video, at, (WIDTH, HEIGHT))
        assert all(words_seen(line, text) <= 1 for _, _, line in LINES), (at, text)


def test_the_sung_words_turn_gold_one_after_another(lyrics_video: Path) -> None:
    """Karaoke: while 'Every window open wide' is sung (8.0 to 10.5 s), the gold share of the line grows word by
    word, from the first word's start to the line's end."""
    shares = []
    for at in (8.2, 8.8, 9.4, 10.2):
        white, gold = caption_inks(video_frame(lyrics_video, at, (WIDTH, HEIGHT))[int(HEIGHT * 0.8):])
        shares.append(round(float(gold.sum() / max(1, gold.sum() + white.sum())), 2))
    assert shares == sorted(shares) and len(set(shares)) == 4 and shares[0] < 0.2 and shares[-1] > 0.8, shares


def test_a_title_card_and_a_split_render_caption_alike(real_song: Path, tmp_path: Path) -> None:
    """Title and artist in the first seconds; a render split into chunks (each burning the prepared script at its
    segments' own times) makes the one-process video frame for frame."""
    lrc = tmp_path / "song.lrc"
    lrc.write_text(LRC)
    common = [str(real_song), "--width", "320", "--height", "180", "--fps", "10", "--segment-seconds", "3",
              "--lyrics", str(lrc), "--title", "Crossroads", "--artist", "HyperRogue", "-q"]  # fmt: skip
    one, split = tmp_path / "one", tmp_path / "split"
    assert (res := run_render([*common, "-o", str(one)])).returncode == 0, res.stderr
    assert (res := run_render([*common, "-o", str(split), "--stage", "prepare"])).returncode == 0, res.stderr
    key_dir = next((split / "segments").glob("*/captions.ass")).parent
    (key_dir / "soundtrack.m4a").unlink()  # as if the pod that prepared died before publishing it: the join encodes it
    for k in ("1", "0"):
        res = run_render([*common, "-o", str(split), "--stage", "segments", "--chunk", k, "--chunks", "2"])
        assert res.returncode == 0, res.stderr
    assert (res := run_render([*common, "-o", str(split), "--stage", "join"])).returncode == 0, res.stderr
    assert stream_md5(split / "video.mp4", "v") == stream_md5(one / "video.mp4", "v")
    plain = tmp_path / "plain"
    assert (res := run_render([*common[:9], "-q", "-o", str(plain)])).returncode == 0, res.stderr

    def luma(video: Path, at: float) -> np.ndarray:
        return video_frame(video, at, (320, 180), gray=True).astype(np.int16)
    # The card: the middle of the frame differs from the uncaptioned render at 2.5 s, not at 5.5 s.
    card = np.abs(luma(one / "video.mp4", 2.5) - luma(plain / "video.mp4", 2.5))[60:120, 60:260]
    later = np.abs(luma(one / "video.mp4", 5.5) - luma(plain / "video.mp4", 5.5))[60:120, 60:260]
    assert (card > 60).sum() > 300 and (later > 60).sum() == 0, ((card > 60).sum(), (later > 60).sum())


def test_bad_lyrics_fail_before_the_analysis_with_a_permanent_reason(click100: tuple[Path, object],
                                                                      tmp_path: Path) -> None:
    bad = tmp_path / "bad.lrc"
    bad.write_text("these are words\nwithout any times\n")
    log = tmp_path / "termination"
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), "--lyrics", str(bad), "-q"],
                     env={"VIBECRAFT_TERMINATION_LOG": str(log)})  # fmt: skip
    assert res.returncode == EXIT_BAD_LYRICS and EXIT_BAD_LYRICS in PERMANENT_EXIT_CODES, res.stderr
    assert "no timestamps found" in log.read_text() and "analyzing" not in res.stderr
    assert not (tmp_path / "out" / "video.mp4").exists()
    big = tmp_path / "big.lrc"
    big.write_bytes(b"[00:01.00]x\n" * (L.LYRICS_MAX_BYTES // 12 + 1))
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), "--lyrics", str(big), "-q"])
    assert res.returncode == EXIT_BAD_LYRICS and "is larger than 128 KiB" in res.stderr, res.stderr
    res = run_render([str(click100[0]), "-o", str(tmp_path / "out"), "--lyrics-format", "srt", "-q"])
    assert res.returncode != 0 and "--lyrics-format needs --lyrics" in res.stderr
