"""Subtitles: read SRT/VTT as `Cue`s, and the plain text of any transcript (writers.py writes
them). No torch.

Parsing is done by the `srt` and `webvtt-py` libraries, which cope with what real files contain
(BOM, CRLF, multi-line cues, SRT without a trailing blank line or with blank lines inside a cue,
VTT without hours, cue settings, NOTE/STYLE/REGION blocks, hours > 99). Two of their habits are
covered here: webvtt-py silently drops a cue whose timing it cannot read, and `srt` reports a
character offset rather than the bad timestamp. So every timing line ("... --> ...") is checked
first, and any failure becomes one `SubtitleError` line: `a.srt: line 12: bad timestamp '00:01:xx,000'`.

Cue text is cleaned of markup (`<i>`, `<b>`, `<font ...>`, `<v Speaker>`, `<c.class>`, VTT inline
timestamps `<00:00:01.000>`, ASS overrides `{\\an8}`) and HTML entities; the lines of a cue are
kept, joined with "\\n" (how to join them depends on the language, see windows.py).
"""

from __future__ import annotations

import codecs
import html
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

SUBTITLE_SUFFIXES = (".srt", ".vtt")
# The transcript formats, in order of preference: when one stem has several (transcribe
# --format all writes all four), the first is read (e.g. by evaluation) and the others ignored.
TRANSCRIPT_SUFFIXES = (".srt", ".vtt", ".txt", ".json")
FALLBACK_ENCODING = "cp1252"  # what most legacy (Windows, Western) subtitle files are written in


class SubtitleError(UserError):
    """A subtitle/transcript file that cannot be read; the message names the file and the line."""


class SubtitleWarning(UserWarning):
    """Something was guessed while reading a file (its encoding); the message says what."""


@dataclass(frozen=True)
class Cue:
    """One subtitle: text spoken from `start` to `end` (seconds into the recording)."""

    start: float
    end: float
    text: str  # markup removed; a multi-line cue keeps its lines joined with "\n"


# --------------------------------------------------------------------------------------------
# Decoding bytes to text

_BOMS = (  # longest first: the UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes, path: str | Path) -> str:
    """Decode a text file's bytes: BOM-marked UTF-8/16/32, UTF-8, UTF-16 without BOM, else cp1252.

    A guess (UTF-16 without BOM, cp1252) is announced with a `SubtitleWarning` naming the file.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as exc:
                raise SubtitleError(f"{path}: starts with a {encoding} byte-order mark but is not "
                                    f"valid {encoding} (byte {exc.start + len(bom)})") from None
    # UTF-16 without a BOM: text of Latin script has a zero byte in every other position (and
    # such bytes are valid UTF-8, so this comes first; real text files hold no zero bytes).
    if len(data) >= 4 and len(data) % 2 == 0 and b"\x00" in data:
        zeros_odd, zeros_even = data[1::2].count(0), data[0::2].count(0)
        half = len(data) // 2
        for zeros, encoding in ((zeros_odd, "utf-16-le"), (zeros_even, "utf-16-be")):
            if zeros > 0.3 * half:
                try:
                    text = data.decode(encoding)
                except UnicodeDecodeError:
                    continue
                warnings.warn(f"{path}: no byte-order mark; read as {encoding}", SubtitleWarning,
                              stacklevel=2)
                return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode(FALLBACK_ENCODING)
        encoding = FALLBACK_ENCODING
    except UnicodeDecodeError:  # cp1252 leaves 5 byte values undefined; latin-1 has them all
        text, encoding = data.decode("latin-1"), "latin-1"
    warnings.warn(f"{path}: not UTF-8; read as {encoding} (save it as UTF-8 to be sure)",
                  SubtitleWarning, stacklevel=2)
    return text


def read_text_file(path: str | Path) -> str:
    """The text of a file, decoded as `decode_text` does; SubtitleError if it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SubtitleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SubtitleError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise SubtitleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_text(data, path)


# --------------------------------------------------------------------------------------------
# Cleaning cue text

# Markup tags only: a "<" followed by a letter or "/" (<i>, </i>, <font color=...>, <v Name>,
# <c.yellow>) or an inline timestamp (<00:00:01.000>); "a < b" and "<3" are left as they are.
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>|</>|<\d+(?::\d+)+(?:[.,]\d+)?>")
_ASS_OVERRIDE_RE = re.compile(r"\{\\[^{}]*\}")  # {\an8}, {\i1}: SubStation overrides left in SRT


# Control characters (NUL, ESC, ...) and stray byte-order marks never belong in a transcript.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")


def clean_text(raw: str) -> str:
    """Cue text without markup or entities; its non-empty lines, each stripped, joined by "\\n"."""
    lines = []
    for line in raw.splitlines():
        line = _ASS_OVERRIDE_RE.sub("", _TAG_RE.sub("", line))
        line = _CONTROL_RE.sub("", html.unescape(line)).replace("\u00a0", " ").strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Reading

_TIMING_LINE_RE = re.compile(r"^\s*(\S+?)\s*-+\s*>\s*(\S+)")
_TIMESTAMP_LIKE_RE = re.compile(r"\d+:\d+:\d+")


def _line_number(text: str, offset: int) -> int:
    # The first non-blank character at or after `offset`, counted in lines from 1.
    while offset < len(text) and text[offset] in "\r\n \t":
        offset += 1
    return text.count("\n", 0, offset) + 1


def _check_timing_lines(text: str, path, timestamp_ok) -> int:
    """Check that every line with "-->" holds two readable timestamps; return how many do."""
    count = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if "-->" not in line:
            continue
        m = _TIMING_LINE_RE.match(line)
        if m is None:
            raise SubtitleError(f"{path}: line {number}: bad cue timing {line.strip()!r}")
        for stamp in m.groups():
            if not timestamp_ok(stamp):
                raise SubtitleError(f"{path}: line {number}: bad timestamp {stamp!r}")
        count += 1
    return count


def _is_timing_line(line: str) -> bool:
    return "-->" in line and _TIMING_LINE_RE.match(line) is not None


def _separate_cues(text: str, path, srt_index: bool = False) -> tuple[str, list[int]]:
    """Insert the blank line missing before a cue that directly follows the previous one.

    A timing line right after cue text (or after a timing line: an empty cue) starts a new cue;
    a number just before it is that cue's index. Without this the libraries read the timing
    line as text of the cue before. With `srt_index`, a cue without an index line gets one
    ("0"): the `srt` library otherwise runs an index-less cue into an empty cue before it.
    Returns the text and, per line of it, the line number in the file (for messages). Says
    where it separated cues with a SubtitleWarning.
    """
    lines = text.split("\n")
    out: list[str] = []
    numbers: list[int] = []  # numbers[k]: the file's line number for out[k]
    fixed: list[int] = []
    for i, line in enumerate(lines):
        number = i + 1
        if _is_timing_line(line):
            prev = lines[i - 1] if i > 0 else ""
            own_index = prev.strip().isdigit() and (i < 2 or not lines[i - 2].strip())
            if prev.strip() and not own_index:
                if prev.strip().isdigit() and not _is_timing_line(prev):  # this cue's index
                    out.insert(len(out) - 1, "")
                    numbers.insert(len(numbers) - 1, number - 1)
                    fixed.append(number - 1)
                    own_index = True
                elif _is_timing_line(prev) or i < 2 or lines[i - 2].strip():
                    out.append("")  # text (or the timing) of the cue before, then this cue
                    numbers.append(number)
                    fixed.append(number)
                # else: one line between a blank line and the timing: the VTT cue identifier
            if srt_index and not own_index and not (out and out[-1].strip()):
                out.append("0")
                numbers.append(number)
        out.append(line)
        numbers.append(number)
    if fixed:
        more = f" (and {len(fixed) - 1} more)" if len(fixed) > 1 else ""
        warnings.warn(f"{path}: line {fixed[0]}{more}: no blank line before this cue; read as a new cue",
                      SubtitleWarning, stacklevel=3)
    return "\n".join(out), numbers


def parse_srt(text: str, path: str | Path = "<srt>") -> list[Cue]:
    """Cues of SRT text (BOM already removed or not)."""
    import srt

    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    _check_timing_lines(text, path, lambda s: srt.TS_REGEX.match(s) is not None)
    text, numbers = _separate_cues(text, path, srt_index=True)
    try:
        subs = list(srt.parse(text))
    except srt.SRTParseError as exc:
        line = numbers[min(_line_number(text, exc.expected_start), len(numbers)) - 1]
        lines = exc.unmatched_content.strip().split("\n")
        # Point at a mangled timing line if there is one ("00:00:03,000 -> 00:00:04,000").
        for i, candidate in enumerate(lines):
            if _TIMESTAMP_LIKE_RE.search(candidate):
                raise SubtitleError(f"{path}: line {line + i}: bad cue timing {candidate.strip()[:60]!r}") from None
        raise SubtitleError(f"{path}: line {line}: not a subtitle block: {lines[0][:60]!r}") from None
    except (srt.TimestampParseError, ValueError) as exc:
        raise SubtitleError(f"{path}: {exc}") from None
    except OverflowError:
        raise SubtitleError(f"{path}: a timestamp is out of range (hours too large)") from None
    return [Cue(s.start.total_seconds(), s.end.total_seconds(), clean_text(s.content)) for s in subs]


def parse_vtt(text: str, path: str | Path = "<vtt>") -> list[Cue]:
    """Cues of WebVTT text."""
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError
    from webvtt.models import Timestamp

    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return []  # an empty file (as an empty .srt): no cues
    if not text.lstrip(" \t").startswith("WEBVTT"):
        first = text.strip().split("\n")[0] if text.strip() else ""
        raise SubtitleError(f"{path}: line 1: a WebVTT file must start with 'WEBVTT', not {first[:40]!r}")

    def timestamp_ok(stamp: str) -> bool:
        try:
            Timestamp.from_string(stamp)
        except MalformedCaptionError:
            return False
        return True

    expected = _check_timing_lines(text, path, timestamp_ok)
    text, numbers = _separate_cues(text, path)
    try:
        captions = webvtt.from_string(text).captions
    except (MalformedFileError, MalformedCaptionError, ValueError) as exc:
        raise SubtitleError(f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if len(captions) != expected:
        # A cue block the library could not take (e.g. two identifier lines): say where.
        seen = {(c.start_time.in_milliseconds(), c.end_time.in_milliseconds()) for c in captions}
        for index, line in enumerate(text.split("\n")):
            m = _TIMING_LINE_RE.match(line) if "-->" in line else None
            if m and tuple(Timestamp.from_string(s).in_milliseconds() for s in m.groups()) not in seen:
                raise SubtitleError(f"{path}: line {numbers[index]}: cue timing not understood {line.strip()[:60]!r} "
                                    f"(expected 'mm:ss.ttt --> mm:ss.ttt' or with hours)")
        raise SubtitleError(f"{path}: {expected - len(captions)} cue block(s) not understood")
    return [Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000,
                clean_text(c.raw_text)) for c in captions]


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an .srt or .vtt file, in file order (cues with empty text included).

    Raises SubtitleError (one line naming the file, and the line where it can) on any problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUBTITLE_SUFFIXES:
        raise SubtitleError(f"{path}: not a subtitle file (expected {' or '.join(SUBTITLE_SUFFIXES)})")
    text = read_text_file(path)
    return parse_srt(text, path) if suffix == ".srt" else parse_vtt(text, path)


def _json_text(data, path) -> str:
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return data["text"]
    segments = data.get("segments") if isinstance(data, dict) else data
    if isinstance(segments, list) and all(isinstance(s, dict) and isinstance(s.get("text"), str)
                                          for s in segments):
        return " ".join(s["text"].strip() for s in segments)
    raise SubtitleError(f'{path}: JSON transcript needs "text" or "segments": [{{"text": ...}}, ...]')


def read_text(path: str | Path) -> str:
    """The plain transcript of an .srt, .vtt, .txt or .json (our transcriber's output) file.

    Cue lines are joined with single spaces; whitespace is collapsed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SUBTITLE_SUFFIXES:
        text = " ".join(c.text for c in read_subtitles(path))
    elif suffix == ".json":
        try:
            data = json.loads(read_text_file(path))
        except json.JSONDecodeError as exc:
            raise SubtitleError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        text = _json_text(data, path)
    elif suffix == ".txt":
        text = read_text_file(path)
    else:
        raise SubtitleError(f"{path}: not a transcript (expected one of {', '.join(TRANSCRIPT_SUFFIXES)})")
    return " ".join(text.split())
