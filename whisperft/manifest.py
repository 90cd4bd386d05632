"""The manifest: JSONL, one training example per line, between preparation and training.

    {"audio_path": "train_dump/lecture1/28000.wav", "text": "<|0.00|> Hello<|1.20|>",
     "language": "en", "prompt": "", "start": 28.0, "duration": 30.0,
     "source": "../data/train_audio/lecture1.wav",
     "features_path": "train_dump/lecture1/28000.mel80.npy", "n_mels": 80,
     "muted": [[12.4, 15.1]]}

`muted` (optional): spans, in seconds from the start of the example's audio, whose audio is
silenced (samples set to 0) before its log-mel is computed: cues the data check left out, whose
text is not in `text`. Audio and features that `prepare` writes are silenced already.

Paths of files inside the manifest's folder (and its subfolders) are stored relative to it, so
a dataset folder can be moved or copied to another machine whole; paths of files elsewhere are
stored absolute. `read_manifest` resolves relative paths against the manifest's folder.
Manifests of jumon/whisper-finetuning (`audio_path` or `audio`, `text`, `language`, `prompt`,
absolute paths) read as they are.

Where a manifest may point (a manifest may come from someone else, with a downloaded dataset):
  - a relative path must stay inside the manifest's folder tree: one that climbs out of it
    ("../../etc/passwd", "a/../../x.wav") is refused with an error naming the line and field;
  - an absolute path (or "~/...") is taken as written: that is how the user's own tools (our
    writer, for files outside the folder; jumon/whisper-finetuning's, always) name files on this
    machine, and such a manifest is tied to this machine anyway. Check the absolute paths of a
    manifest you did not make (`grep '"/' data.json`) before training on it;
  - symbolic links inside the folder tree are followed: whoever set the folder up put them there
    (data -> /mnt/big is common); the check is on the path as written, not on the link targets;
  - a path holding a NUL character, or text that is not valid Unicode, is refused.
Nothing is ever written to a path read from a manifest; files are only read (as audio, or as
`.npy` features with `allow_pickle=False`).

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
from .fileio import atomic_write_text

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
    # what prepare's data check changed in this example's recording (timing, cues left out)
    repairs: dict | None = None
    muted: list[list[float]] | None = None  # [[start, end], ...] seconds from the example's start: silenced

    @property
    def offset(self) -> float:
        """Seconds into `audio_path` where this example's audio begins."""
        return 0.0 if self.source else self.start


def _relative(path: str | None, folder: Path) -> str | None:
    """`path` relative to `folder` if it lies inside its tree, else absolute (see module doc)."""
    if path is None:
        return None
    absolute = os.path.abspath(os.path.expanduser(path))
    try:
        rel = os.path.relpath(absolute, folder)
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(absolute).as_posix()
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(absolute).as_posix()  # outside the folder: a relative path would climb out
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


def _short(value) -> str:
    """repr of a value from the file, cut to fit in one line of a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value, name: str, where: str, optional: bool = False):
    if value is None and optional:
        return None
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= float(value) < math.inf
    except OverflowError:  # an integer too large for a float
        ok = False
    if not ok:
        raise UserError(f"{where}: {name!r} must be a number of seconds >= 0, not {_short(value)}")
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
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise UserError(f"{where}: {key!r} must be a string, not {_short(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800"
            raise UserError(f"{where}: {key!r} is not valid Unicode (character {exc.start})") from None
        if key in _PATH_FIELDS and "\0" in value:
            raise UserError(f"{where}: {key!r} contains a NUL character")
    if not data["audio_path"]:
        raise UserError(f"{where}: 'audio_path' is empty")
    n_mels = data.get("n_mels")
    if n_mels is not None and (isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels <= 0):
        raise UserError(f"{where}: 'n_mels' must be a positive integer, not {_short(n_mels)}")

    def resolve(key: str) -> str | None:
        p = data.get(key)
        if not p:
            return None
        p = os.path.expanduser(p)
        if os.path.isabs(p):  # the user's own (see the module doc): taken as written
            return os.path.normpath(p)
        resolved = os.path.normpath(os.path.join(folder, p))
        if os.path.commonpath([folder, resolved]) != str(folder):
            raise UserError(f"{where}: {key!r} {_short(p)} leads outside the manifest's folder "
                            f"{folder}; relative paths must stay inside it (write an absolute "
                            "path if you mean that file)")
        return resolved

    return Record(
        audio_path=resolve("audio_path"),
        text=data["text"],
        language=data.get("language") or "en",
        prompt=data.get("prompt") or "",
        start=_number(data.get("start", 0.0), "start", where),
        duration=_number(data.get("duration"), "duration", where, optional=True),
        source=resolve("source"),
        features_path=resolve("features_path"),
        n_mels=n_mels,
        repairs=data.get("repairs") if isinstance(data.get("repairs"), dict) else None,
        muted=_spans(data.get("muted"), where),
    )


def _spans(value, where: str) -> list[list[float]] | None:
    """The `muted` spans of a line: [[start, end], ...], 0 <= start < end, in seconds."""
    if value is None:
        return None
    ok = isinstance(value, list) and all(isinstance(s, list) and len(s) == 2 for s in value)
    spans = [[_number(a, "muted", where), _number(b, "muted", where)] for a, b in value] if ok else []
    if not ok or any(a >= b for a, b in spans):
        raise UserError(f"{where}: 'muted' must be a list of [start, end] seconds, start < end, "
                        f"not {_short(value)}")
    return spans or None


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
    except OSError as exc:
        raise UserError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    folder = Path(os.path.normpath(path.absolute().parent))
    records = []
    # split on "\n" only: str.splitlines() also splits at U+2028, U+0085, ..., which JSON
    # strings may hold unescaped (json.dumps(ensure_ascii=False) writes them as they are)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:  # "[[[[...": nested deeper than the parser goes
            raise UserError(f"{where}: not a manifest line (JSON nested too deeply)") from None
        records.append(_record_from(data, where, folder))
    return records
