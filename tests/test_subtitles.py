"""Reading and writing SRT/VTT: the quirks of real files, and one-line errors."""

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whisperft.errors import UserError
from whisperft.subtitles import Cue, SubtitleError, SubtitleWarning, parse_srt, parse_vtt, read_subtitles, read_text
from whisperft.writers import format_timestamp, to_srt, to_vtt, write_subtitles

SRT = """\
1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> there,
<font color="#ffff00">friend</font>.

2
00:00:03,000 --> 00:00:04,000 X1:40 X2:600 Y1:20 Y2:50
{\\an8}Tom &amp; Jerry

3
123:04:05,678 --> 123:04:06,000
Last cue, no blank line after it"""


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_srt_tags_multiline_coordinates_and_hours_over_99(tmp_path):
    cues = read_subtitles(write(tmp_path, "a.srt", SRT))
    assert cues == [
        Cue(1.0, 2.5, "Hello there,\nfriend."),
        Cue(3.0, 4.0, "Tom & Jerry"),
        Cue(123 * 3600 + 245.678, 123 * 3600 + 246.0, "Last cue, no blank line after it"),
    ]


@pytest.mark.parametrize("encoding, bom", [
    ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-8", b""),
])
def test_srt_encodings_with_bom_and_crlf(tmp_path, encoding, bom):
    data = bom + SRT.replace("\n", "\r\n").replace("Hello", "Héllo").encode(encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a BOM or valid UTF-8 is no guess: no warning
        cues = read_subtitles(write(tmp_path, "a.srt", data))
    assert [c.text for c in cues][:2] == ["Héllo there,\nfriend.", "Tom & Jerry"]


def test_cp1252_fallback_says_so(tmp_path):
    path = write(tmp_path, "old.srt", SRT.replace("Hello", "Café – ok").encode("cp1252"))
    with pytest.warns(SubtitleWarning, match=r"old\.srt: not UTF-8; read as cp1252"):
        cues = read_subtitles(path)
    assert cues[0].text.startswith("Café – ok")


def test_utf16_without_bom_is_detected_and_said(tmp_path):
    path = write(tmp_path, "w.srt", SRT.encode("utf-16-le"))
    with pytest.warns(SubtitleWarning, match="read as utf-16-le"):
        assert len(read_subtitles(path)) == 3


def test_srt_blank_line_inside_a_cue_and_no_index():
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n\nstill first\n\n00:00:03,000 --> 00:00:04,000\nno index\n"
    assert parse_srt(text) == [Cue(1, 2, "first\nstill first"), Cue(3, 4, "no index")]


def test_empty_srt_has_no_cues(tmp_path):
    assert read_subtitles(write(tmp_path, "e.srt", "")) == []
    assert read_subtitles(write(tmp_path, "e2.srt", "\n\n  \n")) == []


def test_srt_bad_timestamp_names_file_line_and_timestamp(tmp_path):
    text = "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:01:xx,000 --> 00:01:02,000\nbad\n"
    with pytest.raises(SubtitleError) as err:
        read_subtitles(write(tmp_path, "a.srt", text))
    assert str(err.value) == f"{tmp_path / 'a.srt'}: line 6: bad timestamp '00:01:xx,000'"
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_srt_that_is_not_srt(tmp_path):
    with pytest.raises(SubtitleError, match=r"line 1: not a subtitle block: 'just some text'"):
        read_subtitles(write(tmp_path, "a.srt", "just some text\nand more\n"))
    text = "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 -> 00:00:04,000\nbroken arrow\n"
    with pytest.raises(SubtitleError, match=r"line 6: bad cue timing '00:00:03,000 -> 00:00:04,000'"):
        parse_srt(text)


VTT = """\
WEBVTT - some title
Kind: captions
Language: en

NOTE a comment
that spans lines

STYLE
::cue { color: yellow }

REGION
id:fred width:40%

intro
00:01.000 --> 00:04.000 align:start position:10%
<v Roger Bingham>Hello <i>there</i> &amp; <c.yellow>welcome</c>
second line

00:00:05.000 --> 00:00:07.500
<00:00:05.500>karaoke <00:00:06.000>style

1:00:00.000 --> 100:00:01.000 line:0
one hour in"""


def test_vtt_header_notes_styles_regions_settings_voices_and_no_hours(tmp_path):
    cues = read_subtitles(write(tmp_path, "a.vtt", "\ufeff" + VTT.replace("\n", "\r\n")))
    assert cues == [
        Cue(1.0, 4.0, "Hello there & welcome\nsecond line"),
        Cue(5.0, 7.5, "karaoke style"),
        Cue(3600.0, 360001.0, "one hour in"),
    ]


def test_vtt_errors(tmp_path):
    with pytest.raises(SubtitleError, match=r"a\.vtt: line 1: a WebVTT file must start with 'WEBVTT'"):
        read_subtitles(write(tmp_path, "a.vtt", "00:01.000 --> 00:02.000\nhi\n"))
    with pytest.raises(SubtitleError, match=r"line 3: bad timestamp '00:01,000'"):
        read_subtitles(write(tmp_path, "a.vtt", "WEBVTT\n\n00:01,000 --> 00:02.000\nhi\n"))
    with pytest.raises(SubtitleError, match=r"line 6: bad timestamp '00:61.000'"):
        parse_vtt("WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\n00:61.000 --> 01:02.000\nbad\n", "a.vtt")
    # A cue the library would silently drop is reported, not lost.
    with pytest.raises(SubtitleError, match=r"line 6: cue timing not understood '00:03.000 ---> 00:04.000'"):
        parse_vtt("WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\n00:03.000 ---> 00:04.000\nhi\n", "a.vtt")


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(SubtitleError, match="not a subtitle file"):
        read_subtitles(write(tmp_path, "a.ass", "x"))
    with pytest.raises(SubtitleError, match="no such file"):
        read_subtitles(tmp_path / "missing.srt")


def test_read_text_of_every_transcript_kind(tmp_path):
    assert read_text(write(tmp_path, "a.srt", SRT)).startswith("Hello there, friend. Tom & Jerry Last")
    assert read_text(write(tmp_path, "a.vtt", VTT)) == ("Hello there & welcome second line karaoke style "
                                                        "one hour in")
    assert read_text(write(tmp_path, "a.txt", "  plain\ntext  here\n")) == "plain text here"
    segments = {"segments": [{"start": 0, "end": 1, "text": " Hello"}, {"start": 1, "end": 2, "text": " world."}]}
    assert read_text(write(tmp_path, "s.json", json.dumps(segments))) == "Hello world."
    assert read_text(write(tmp_path, "t.json", json.dumps({"text": " Whole text.", "segments": []}))) == "Whole text."
    with pytest.raises(SubtitleError, match=r"b\.json: line 1: not valid JSON"):
        read_text(write(tmp_path, "b.json", "{nope"))
    with pytest.raises(SubtitleError, match='needs "text" or "segments"'):
        read_text(write(tmp_path, "c.json", "[1, 2]"))
    with pytest.raises(SubtitleError, match="not a transcript"):
        read_text(write(tmp_path, "a.doc", "x"))


@pytest.mark.parametrize("seconds, kwargs, expected", [
    (0, {}, "00:00:00,000"),
    (3725.5, {}, "01:02:05,500"),
    (59.9996, {}, "00:01:00,000"),
    (65.25, {"always_include_hours": False, "decimal_marker": "."}, "01:05.250"),
    (360000.001, {"decimal_marker": "."}, "100:00:00.001"),
])
def test_format_timestamp(seconds, kwargs, expected):
    assert format_timestamp(seconds, **kwargs) == expected


def test_writers_escape_and_round_trip(tmp_path):
    cues = [Cue(0.0, 1.5, "a < b & c"), Cue(2.0, 3.25, "two\nlines"), Cue(3600.0, 3601.0, "arrow --> here")]
    assert to_srt(cues[:1]) == "1\n00:00:00,000 --> 00:00:01,500\na < b & c\n"
    assert to_vtt(cues[:1]) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\na &lt; b &amp; c\n"
    for suffix in (".srt", ".vtt"):
        path = tmp_path / f"out{suffix}"
        write_subtitles(path, cues)
        back = read_subtitles(path)
        assert back[:2] == cues[:2] and back[2].text == "arrow -> here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.srt", "out.vtt"]  # no temp files left
    with pytest.raises(SubtitleError, match="use .srt or .vtt"):
        write_subtitles(tmp_path / "out.txt", cues)


cue_text = st.text(st.characters(codec="utf-8", categories=("L", "N", "Zs"), include_characters=".,!?'&<>-"),
                   min_size=1, max_size=30).filter(lambda t: t.strip() and "-->" not in t)  # "-->" is rewritten


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400 * 3600 * 1000), st.integers(0, 60_000), cue_text), max_size=8))
def test_written_subtitles_read_back_as_the_same_cues(items):
    cues = [Cue(start / 1000, (start + length) / 1000, " ".join(text.split())) for start, length, text in items]
    assert parse_vtt(to_vtt(cues)) == cues
    # SRT has no escaping: markup-like text cannot survive it.
    cues = [Cue(c.start, c.end, c.text.replace("<", "(").replace("&", "+")) for c in cues]
    assert parse_srt(to_srt(cues)) == cues


fragments = st.sampled_from([
    "1\n", "00:00:01,000", " --> ", "00:00:02.500", "\n", "\n\n", "\r\n", "WEBVTT", "NOTE x\n", "STYLE\n",
    "<i>", "{\\an8}", "&amp;", "12:99:99,999", "99999999999:00:00,000", "00:01.000", "-->", ":", ",", "text ",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(fragments, max_size=30).map("".join))
def test_garbled_subtitles_end_in_cues_or_a_subtitle_error(text):
    for parse in (parse_srt, parse_vtt):
        try:
            cues = parse(text, "fuzz")
        except SubtitleError as exc:
            assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
        else:
            assert all(isinstance(c, Cue) for c in cues)
