"""Fuzzing the readers of untrusted text files (hypothesis, bounded in time).

Invariant of every test here: whatever the bytes, a reader returns a result or raises a
`UserError` subclass whose message is one line naming the file; no other exception escapes
(no traceback reaches the user). The whole file runs in well under 30 s on one core.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whisperft.errors import UserError
from whisperft.manifest import Record, read_manifest, write_manifest
from whisperft.subtitles import Cue, parse_srt, parse_vtt, read_subtitles, read_text

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def expect_result_or_user_error(read, path: Path):
    """read(path), checking the invariant; returns the result or None after a UserError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SubtitleWarning: the encoding was guessed
        try:
            return read(path)
        except UserError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message  # names the file first
            assert "\n" not in message and "\r" not in message, message  # one line
            return None


# --------------------------------------------------------------------------------------------
# Subtitles: fragments of real and broken SRT/VTT, in every encoding and as raw bytes

TIMESTAMPS = ["00:00:01,000", "00:00:02.500", "00:01.000", "99:59:59,999", "100:00:00,000",
              "123456789:00:00,000", "99999999999999999999:00:00,000", "00:00:61,000", "00:61:00,000",
              "-00:00:01,000", "00:00:01,0000", "0:0:1,5", "00:00:01", "1e5:00:00,000", "٠١:٠٠:٠٠,٠٠٠",
              "00:00:00,000", "00:00:01.000", "00:00:03,000", "00:00:02,000", "00:00:00.000"]
ARROWS = [" --> ", "-->", " -> ", " ---> ", " --> --> ", "  -->  ", " —> "]
PIECES = ["1", "2", "\n", "\n\n", "\r\n", "\r", "WEBVTT", "WEBVTT - title\n", "NOTE x\n", "STYLE\n",
          "REGION\n", "Kind: captions\n", "<i>", "</i>", "<v Ann>", "<c.yellow>", "<00:00:01.500>",
          "{\\an8}", "&amp;", "&#0;", "&#x110000;", "&bogus;", "text ", "Héllo ", "日本語", " align:start",
          " X1:40", "\ufeff", "\x00", "\x0b", "\u2028", "\x85", "\t", " ", ":", ",", ".", "-->", "<", ">"]

subtitle_text = st.lists(st.one_of(st.sampled_from(TIMESTAMPS), st.sampled_from(ARROWS),
                                   st.sampled_from(PIECES), st.text(max_size=8)), max_size=40).map("".join)
# Well-formed cues (any order, lengths, overlaps, reversed) with noise spliced in.
cue = st.tuples(st.sampled_from(TIMESTAMPS), st.sampled_from(ARROWS), st.sampled_from(TIMESTAMPS),
                st.text(max_size=20))
cue_file = st.tuples(st.booleans(), st.lists(cue, max_size=6), st.sampled_from(["\n", "\r\n", "\n\n\n"])).map(
    lambda t: ("WEBVTT\n\n" if t[0] else "") + t[2].join(
        f"{i}\n{a}{arrow}{b}\n{text}\n" for i, (a, arrow, b, text) in enumerate(t[1], start=1)))
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252",
                             "latin-1", "shift_jis", "gb18030"])


def encoded(text: str, encoding: str) -> bytes:
    return text.encode(encoding, errors="replace")


@FUZZ
@given(text=st.one_of(subtitle_text, cue_file))
def test_parsers_end_in_cues_or_a_subtitle_error(text):
    for parse in (parse_srt, parse_vtt):
        try:
            cues = parse(text, "fuzz.sub")
        except UserError as exc:
            assert str(exc).startswith("fuzz.sub: ") and "\n" not in str(exc)
        else:
            # Invariant: cues are finite, non-negative times with text of clean lines.
            for c in cues:
                assert isinstance(c, Cue) and isinstance(c.text, str)
                assert math.isfinite(c.start) and math.isfinite(c.end) and c.start >= 0 and c.end >= 0
                assert "\n\n" not in c.text and c.text == c.text.strip()
                # no timing line swallowed as text (a cue that lacked its blank line)
                assert "-->" not in c.text, c.text
                assert not any(ord(ch) < 32 and ch != "\n" for ch in c.text), repr(c.text)


@FUZZ
@given(data=st.one_of(st.tuples(st.one_of(subtitle_text, cue_file), encodings).map(lambda t: encoded(*t)),
                      st.binary(max_size=300)),
       suffix=st.sampled_from([".srt", ".vtt", ".SRT", ".txt", ".json"]))
def test_files_of_any_bytes_read_or_fail_cleanly(folder, data, suffix):
    path = folder / f"sub{suffix}"
    path.write_bytes(data)
    if suffix.lower() in (".srt", ".vtt"):
        cues = expect_result_or_user_error(read_subtitles, path)
        assert cues is None or all(isinstance(c, Cue) for c in cues)
    text = expect_result_or_user_error(read_text, path)
    assert text is None or (isinstance(text, str) and "\n" not in text)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10)


@FUZZ
@given(data=st.one_of(json_value, st.fixed_dictionaries({"text": json_value}),
                      st.fixed_dictionaries({"segments": st.lists(st.fixed_dictionaries({"text": json_value}),
                                                                  max_size=3)})))
def test_json_transcripts_of_any_shape(folder, data):
    path = folder / "t.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    text = expect_result_or_user_error(read_text, path)
    assert text is None or isinstance(text, str)


# --------------------------------------------------------------------------------------------
# Manifests

KEYS = ["audio_path", "audio", "text", "language", "prompt", "start", "duration", "source",
        "features_path", "n_mels"]
path_piece = st.sampled_from(["a.wav", "..", ".", "dump", "~", "", "/", "/abs", "x/../..", "\x00",
                              "\ud800", "C:", "\\..\\", "é", " "])
path_value = st.lists(path_piece, min_size=1, max_size=5).map("/".join)
field_value = st.one_of(json_value, path_value, st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(min_value=-10**400, max_value=10**400), st.text(max_size=20))
manifest_line = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), field_value, max_size=8),
    st.fixed_dictionaries({"audio_path": path_value, "text": st.text(max_size=20)},
                          optional={"start": field_value, "duration": field_value, "source": path_value,
                                    "features_path": path_value, "n_mels": field_value}),
    json_value)


def dump_line(value) -> str:
    # allow_nan: "NaN"/"Infinity" are what a careless writer produces; the reader must cope
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


raw_line = st.one_of(st.text(max_size=40), st.sampled_from(
    ["[" * 100_000, "{" * 5000, '{"audio_path": "a.wav", "text": "x"', "\ufeff{}", "NaN", "1e999"]))


@FUZZ
@given(lines=st.lists(st.one_of(manifest_line.map(dump_line), raw_line), max_size=5),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]),
       newline=st.sampled_from(["\n", "\r\n", "\u2028"]))
def test_manifests_of_any_content_read_or_fail_cleanly(folder, lines, encoding, newline):
    sub = folder / "data"
    sub.mkdir(exist_ok=True)
    path = sub / "m.json"
    text = newline.join(lines)
    try:
        data = text.encode(encoding, errors="surrogatepass")  # lone surrogates: invalid UTF-8
    except UnicodeEncodeError:
        data = text.encode(encoding, errors="replace")
    path.write_bytes(data)
    records = expect_result_or_user_error(read_manifest, path)
    for r in records or []:
        assert isinstance(r, Record) and isinstance(r.text, str) and r.audio_path
        assert math.isfinite(r.start) and r.start >= 0
        assert r.duration is None or (math.isfinite(r.duration) and r.duration >= 0)
        for p in (r.audio_path, r.source, r.features_path):
            # Invariant: paths come back absolute and normalised (no ".." left in them).
            assert p is None or (os.path.isabs(p) and ".." not in Path(p).parts)


@FUZZ
@given(relative=st.lists(st.sampled_from(["a", "b", "..", ".", "c.wav", ""]), min_size=1, max_size=6)
       .filter(lambda parts: parts[0] != ""))  # "/..." would be absolute
def test_relative_paths_never_leave_the_manifest_folder(folder, relative):
    sub = folder / "deep" / "data"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / "m.json"
    written = "/".join(relative) or "."
    path.write_text(json.dumps({"audio_path": written, "text": ""}) + "\n", encoding="utf-8")
    records = expect_result_or_user_error(read_manifest, path)
    escapes = os.path.normpath(os.path.join("x", written)).split(os.sep)[0] != "x"
    # Invariant: refused exactly when the path climbs out of the folder; else resolved inside it.
    assert (records is None) == escapes, written
    if records:
        assert Path(records[0].audio_path).is_relative_to(sub)


@FUZZ
@given(texts=st.lists(st.text(), min_size=1, max_size=4), start=st.floats(0, 1e9), language=st.text(max_size=5))
def test_written_manifests_read_back_the_same(folder, texts, start, language):
    """Any text (U+2028, NUL, emoji, ...) survives write -> read; paths keep pointing at the files."""
    sub = folder / "round"
    sub.mkdir(exist_ok=True)
    outside = folder / "elsewhere" / "a.wav"
    texts = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]  # write needs valid Unicode
    records = [Record(audio_path=str(sub / "dump" / f"{i}.wav"), text=t, prompt=t, language=language or "en",
                      start=round(start, 3), source=str(outside)) for i, t in enumerate(texts)]
    write_manifest(sub / "m.json", records)
    back = read_manifest(sub / "m.json")
    assert [(r.text, r.prompt, r.audio_path, r.source) for r in back] == \
        [(r.text, r.prompt, r.audio_path, r.source) for r in records]
