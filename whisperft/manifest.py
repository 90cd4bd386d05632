"""The manifest: JSONL, one training example per line, between preparation and training.

    {"audio_path": "train_dump/lecture1/28000.wav", "text": "<|0.00|> Hello<|1.20|>",
     "language": "en", "prompt": "", "start": 28.0, "duration": 30.0,
     "source": "../data/train_audio/lecture1.wav",
     "features_path": "train_dump/lecture1/28000.mel80.npy", "n_mels": 80}

Paths are stored relative to the manifest's folder (so a dataset folder can be moved or copied
to another machine whole) and come back from `read_manifest` resolved against that folder.
Manifests of jumon/whisper-finetuning (`audio_path` or `audio`, `text`, `language`, `prompt`,
absolute paths) read as they are.

Where the audio of an example is (see `Record.offset`):
  - `source` set: `audio_path` holds exactly the window (written by `prepare` into its dump
    folder); `start`/`duration` say where it came from in `source`.
  - `source` unset: `audio_path` is the recording itself and the window is its
    [start, start + duration) slice; `duration` None means the whole file (a clip).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import UserError
from .subtitles import atomic_write_text

_PATH_FIELDS = ("audio_path", "source", "features_path")


@dataclass
class Record:
    """One training example (a window of a recording, or a whole clip)."""

    audio_path: str  # the file to decode; absolute after read_manifest
    text: str  # the decoder's target as written: "<|0.00|> Hi<|0.80|>", or plain text; "" = silence
    language: str = "en"  # Whisper language code
    prompt: str = ""  # previous text, conditioning only (not a target)
    start: float = 0.0  # seconds: where the window starts in the recording (see module doc)
    duration: float | None = None  # seconds of audio in the example; None: the whole file
    source: str | None = None  # the original recording, when audio_path is a dumped window
    features_path: str | None = None  # precomputed log-mel, float16 .npy of shape (n_mels, 3000)
    n_mels: int | None = None  # mel bins of features_path (80, or 128 for large-v3/turbo)

    @property
    def offset(self) -> float:
        """Seconds into `audio_path` where this example's audio begins."""
        return 0.0 if self.source else self.start


def _relative(path: str | None, folder: Path) -> str | None:
    if path is None:
        return None
    try:
        rel = os.path.relpath(os.path.abspath(path), folder)
    except ValueError:  # another drive on Windows: no relative path exists
        return str(Path(path).absolute())
    return Path(rel).as_posix()


def write_manifest(path: str | Path, records: list[Record]) -> None:
    """Write `records` as JSONL, atomically (temp file + rename); paths relative to its folder."""
    path = Path(path)
    folder = path.absolute().parent
    lines = []
    for r in records:
        data = {}
        for f in fields(Record):
            value = getattr(r, f.name)
            if f.name in _PATH_FIELDS:
                value = _relative(value, folder)
            elif isinstance(value, float):
                value = round(value, 3)  # ms: the precision the times have
            if value is not None:
                data[f.name] = value
        lines.append(json.dumps(data, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))


def _number(value, name: str, where: str, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"{where}: {name!r} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _record_from(data, where: str, folder: Path) -> Record:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if "audio_path" not in data and "audio" in data:  # an older jumon manifest
        data = {**data, "audio_path": data["audio"]}
    for key in ("audio_path", "text"):
        if key not in data:
            raise UserError(f"{where}: missing {key!r}")
    for key in ("audio_path", "text", "language", "prompt", "source", "features_path"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise UserError(f"{where}: {key!r} must be a string, not {data[key]!r}")
    if not data["audio_path"]:
        raise UserError(f"{where}: 'audio_path' is empty")
    n_mels = data.get("n_mels")
    if n_mels is not None and (isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels <= 0):
        raise UserError(f"{where}: 'n_mels' must be a positive integer, not {n_mels!r}")

    def resolve(p: str | None) -> str | None:
        # An absolute path (the origin wrote those) stays as it is.
        return None if not p else os.path.normpath(folder / os.path.expanduser(p))

    return Record(
        audio_path=resolve(data["audio_path"]),
        text=data["text"],
        language=data.get("language") or "en",
        prompt=data.get("prompt") or "",
        start=_number(data.get("start", 0.0), "start", where),
        duration=_number(data.get("duration"), "duration", where, optional=True),
        source=resolve(data.get("source")),
        features_path=resolve(data.get("features_path")),
        n_mels=n_mels,
    )


def read_manifest(path: str | Path) -> list[Record]:
    """The records of a JSONL manifest, paths resolved against its folder.

    Raises UserError naming the file and line for a missing file or a malformed line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such manifest (make one with create_data.py)") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a manifest file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); is it a manifest?") from None
    folder = path.absolute().parent
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        records.append(_record_from(data, where, folder))
    return records
