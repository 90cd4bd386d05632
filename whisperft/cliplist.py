"""Clip lists: one example per audio clip with its text, no timestamps. Lines
`audio<TAB>text`, or a Hugging Face audiofolder `metadata.csv` / `metadata.jsonl`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .errors import UserError
from .subtitles import read_text_file

METADATA_FILES = ("metadata.csv", "metadata.jsonl")  # Hugging Face audiofolder convention
CLIP_TEXT_COLUMNS = ("transcription", "text", "sentence")  # first one present is the text


def read_clip_list(path: Path, problems: list[str] | None = None) -> list[tuple[int, str, str, str | None]]:
    """(line number, audio path as written, text, language or None) of a clip list:
    TSV `audio<TAB>text`, or an audiofolder `metadata.csv` / `metadata.jsonl`.

    A malformed line is left out and described in `problems` (one line naming the file and
    line), so one bad line does not stop the batch; without `problems` it raises UserError.
    A file that cannot be read at all, or a CSV without the needed columns, always raises.
    """
    from .subtitles import SubtitleError

    def bad(message: str) -> None:
        if problems is None:
            raise UserError(message)
        problems.append(message)

    try:
        content = read_text_file(path)
    except SubtitleError as exc:
        raise UserError(str(exc)) from None
    suffix = path.suffix.lower()
    rows = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        columns = reader.fieldnames or []
        text_column = next((c for c in CLIP_TEXT_COLUMNS if c in columns), None)
        if "file_name" not in columns or text_column is None:
            raise UserError(f"{path}: needs a 'file_name' column and a 'transcription' or 'text' "
                            f"column (found: {', '.join(columns) or 'nothing'})")
        for row in reader:
            if not row["file_name"]:
                bad(f"{path}: line {reader.line_num}: no file_name")
                continue
            rows.append((reader.line_num, row["file_name"], row[text_column] or "",
                         row.get("language") or None))
    elif suffix == ".jsonl":
        for number, line in enumerate(content.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                bad(f"{path}: line {number}: not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})")
                continue
            text_key = next((c for c in CLIP_TEXT_COLUMNS if isinstance(data, dict) and c in data), None)
            if not isinstance(data, dict) or "file_name" not in data or text_key is None:
                bad(f"{path}: line {number}: needs \"file_name\" and \"transcription\" or \"text\"")
                continue
            language = data.get("language")
            rows.append((number, str(data["file_name"]), str(data[text_key]),
                         language if isinstance(language, str) else None))
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            if "\t" not in line:
                bad(f"{path}: line {number}: expected 'audio<TAB>text', got {line[:60]!r}")
                continue
            audio, text = line.split("\t", 1)
            rows.append((number, audio.strip(), text.strip(), None))
    return rows
