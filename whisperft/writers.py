"""Transcript writers, one per format (as `whisper.utils.get_writer` has them): SRT and VTT from
`Cue`s, TXT and JSON from a `Transcript`, and `write_transcript`, which picks by suffix. No torch.

SRT is composed by the `srt` library, which subtitles.py also reads it with.
"""

from __future__ import annotations

import html
import json
from datetime import timedelta
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write_text
from .subtitles import Cue, SubtitleError
from .transcription import FORMATS, Transcript


def _milliseconds(seconds: float) -> int:
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    return round(seconds * 1000.0)


def format_timestamp(seconds: float, always_include_hours: bool = True, decimal_marker: str = ",") -> str:
    """`3725.5` -> "01:02:05,500" (SRT); with `decimal_marker="."` the VTT form.

    Hours are left out (when `always_include_hours` is False) only if zero; they may exceed 99.
    """
    milliseconds = _milliseconds(seconds)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def _payload_lines(text: str) -> list[str]:
    # A blank line would end the cue and "-->" would read as a timing line.
    return [line.strip().replace("-->", "->") for line in text.splitlines() if line.strip()]


def to_srt(cues: list[Cue]) -> str:
    """SRT text of `cues`, in their order, numbered from 1; no blank line after the last cue."""
    import srt

    subtitles = [srt.Subtitle(index=i, start=timedelta(milliseconds=_milliseconds(cue.start)),
                              end=timedelta(milliseconds=_milliseconds(cue.end)),
                              content="\n".join(_payload_lines(cue.text)))
                 for i, cue in enumerate(cues, start=1)]
    # `compose` ends every block with a blank line: the last block's is dropped
    return srt.compose(subtitles, reindex=False)[:-1]


def to_vtt(cues: list[Cue]) -> str:
    """WebVTT text of `cues` ("&", "<", ">" escaped, as cue text is markup there)."""
    out = ["WEBVTT\n"]
    for cue in cues:
        lines = [html.escape(line, quote=False) for line in _payload_lines(cue.text)]
        out.append(f"{format_timestamp(cue.start, decimal_marker='.')} --> "
                   f"{format_timestamp(cue.end, decimal_marker='.')}\n" + "".join(f"{line}\n" for line in lines))
    return "\n".join(out)


def write_subtitles(path: str | Path, cues: list[Cue]) -> None:
    """Write `cues` as SRT or VTT (from the suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".srt":
        atomic_write_text(path, to_srt(cues))
    elif suffix == ".vtt":
        atomic_write_text(path, to_vtt(cues))
    else:
        raise SubtitleError(f"{path}: cannot write subtitles as {suffix or 'a file without suffix'} "
                            f"(use .srt or .vtt)")


def to_txt(t: Transcript) -> str:
    return "".join(s.text.strip() + "\n" for s in t.segments if s.text.strip())


def _segment_json(i: int, s) -> dict:
    entry = {"id": i, "start": s.start, "end": s.end, "text": s.text.strip(), "tokens": s.tokens,
             "avg_logprob": round(s.avg_logprob, 4), "no_speech_prob": round(s.no_speech_prob, 4),
             "temperature": s.temperature, "compression_ratio": round(s.compression_ratio, 4)}
    if s.words is not None:  # openai-whisper's and faster-whisper's keys
        entry["words"] = [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                          for w in s.words]
    return entry


def to_json(t: Transcript) -> str:
    return json.dumps({
        "text": t.text, "language": t.language, "duration": round(t.duration, 3),
        "segments": [_segment_json(i, s) for i, s in enumerate(t.segments)],
    }, ensure_ascii=False, indent=1) + "\n"


def write_transcript(path: str | Path, t: Transcript) -> None:
    """Write `t` in the format of `path`'s suffix (.srt, .vtt, .txt, .json), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".srt", ".vtt"):
        write_subtitles(path, [Cue(s.start, s.end, s.text.strip()) for s in t.segments if s.text.strip()])
    elif suffix == ".txt":
        atomic_write_text(path, to_txt(t))
    elif suffix == ".json":
        atomic_write_text(path, to_json(t))
    else:
        raise UserError(f"{path}: unknown transcript format {suffix!r} (use {', '.join(FORMATS)})")
