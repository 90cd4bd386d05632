"""Rows of a Hugging Face `datasets` dataset, as prepare.py takes them (`create_data.py --hf-dataset`).

A row is either a recording with segment times (a `segments`/`chunks` column: a list of
{start, end, text} or {timestamp: (start, end), text}, as transformers' ASR pipeline writes
them), which prepare.py cuts into 30 s windows as it does a recording with subtitles, or a clip
with its text, which it treats as a clip-list line (one example, or packed with --pack).

Where the dataset comes from (NAME_OR_PATH):
  - a folder written by `save_to_disk` (it holds state.json or dataset_dict.json): `load_from_disk`;
  - a .parquet/.arrow/.csv/.json/.jsonl file: `load_dataset` with that file's builder;
  - anything else (a Hub name, a local script-free folder: audiofolder, parquet files): `load_dataset`.
Audio is never decoded by `datasets` (its Audio feature decodes with torchcodec): the audio
column is cast to `Audio(decode=False)` and its bytes or file decoded by whisperft.audio (PyAV),
resampled to 16 kHz. Only the columns used are read (`select_columns`), so other audio or image
columns cost nothing. With streaming, rows are read one at a time and never held: memory stays
flat however large the dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import UserError
from .subtitles import Cue

AUDIO_COLUMNS = ("audio",)  # then any column whose feature is datasets.Audio
# Usual text columns of Hub speech datasets, the cased and punctuated ones first (Whisper
# writes case and punctuation): FLEURS raw_transcription, VoxPopuli raw_text, Common Voice sentence.
TEXT_COLUMNS = ("raw_transcription", "raw_text", "sentence", "transcription", "text", "transcript",
                "normalized_text", "sentences")
SEGMENT_COLUMNS = ("segments", "chunks")
LANGUAGE_COLUMN = "language"  # a code or name per row, as in an audiofolder metadata.csv
SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")  # what save_to_disk writes
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
DEFAULT_SPLIT = "train"


@dataclass
class HfRow:
    """One row: its audio still encoded (decode with `audio()`), and its segments or text."""

    index: int  # position in the split
    where: str  # "NAME [split] row 12", for messages
    stem: str  # file stem of the audio as the dataset names it ("" when it names none)
    encoded: Any  # the audio column's value: {"bytes", "path"}, a path, or {"array", "sampling_rate"}
    segments: Any  # the segments column's value, or None without one
    text: str  # the text column's value ("" with segments)
    language: str | None  # the row's language column, if the dataset has one

    def audio(self) -> np.ndarray:
        """16 kHz mono float32 (AudioError/UserError naming the row if it cannot be decoded)."""
        return decode_audio(self.encoded, self.where)

    def cues(self, duration: float) -> list[Cue]:
        """The segments as cues; a segment without an end (the pipeline's last chunk) ends with
        the audio, `duration` seconds."""
        return segment_cues(self.segments, duration, self.where)


@dataclass
class HfSource:
    """An opened split, its columns chosen."""

    description: dict  # what was read: dataset, config, split, columns (recorded beside the manifest)
    dataset: Any  # datasets.Dataset or IterableDataset, only the used columns, audio undecoded
    total: int | None  # rows, when known
    audio_column: str
    text_column: str | None
    segments_column: str | None  # set: rows are recordings with timestamps; unset: clips

    def rows(self) -> Iterator[HfRow]:
        label = _label(self.description["dataset"], self.description["split"])
        try:
            for index, row in enumerate(self.dataset):
                encoded = row[self.audio_column]
                language = row.get(LANGUAGE_COLUMN)
                yield HfRow(index=index, where=f"{label} row {index}", stem=_audio_stem(encoded),
                            encoded=encoded,
                            segments=row[self.segments_column] if self.segments_column else None,
                            text="" if self.text_column is None else str(row[self.text_column] or ""),
                            language=language if isinstance(language, str) and language.strip() else None)
        except ImportError as exc:  # a streamed audiofolder encodes its files as it reads them
            if _needs_torchcodec(exc):
                raise UserError(_torchcodec_message(self.description["dataset"])) from None
            raise


def open_hf_dataset(name: str, config: str | None = None, split: str | None = None, *,
                    audio_column: str | None = None, text_column: str | None = None,
                    segments_column: str | None = None, streaming: bool = False,
                    without_timestamps: bool = False) -> HfSource:
    """Open one split of `name` and choose its columns (UserError, one line, when it cannot)."""
    try:
        import datasets
    except ImportError:
        raise UserError("--hf-dataset needs the `datasets` package: pip install 'whisperft[hf]'") from None
    dataset, split, reference = _load_split(datasets, name, config, split, streaming)
    columns = list(dataset.column_names or _first_row(dataset, name))
    features = dataset.features or {}
    where = _label(name, split)
    audio_column = _choose(where, "--audio-column", audio_column, columns, "an audio column", [
        *[c for c in AUDIO_COLUMNS if c in columns],
        *[c for c in columns if isinstance(features.get(c), datasets.Audio)]])
    if segments_column is not None and segments_column not in columns:
        raise UserError(f"{where}: no column {segments_column!r} (--segments-column); columns: {', '.join(columns)}")
    if without_timestamps:  # clips from the text column, whatever segment times there are
        segments_column = None
    elif segments_column is None:
        segments_column = next((c for c in SEGMENT_COLUMNS if c in columns), None)
    if segments_column is None:
        text_column = _choose(where, "--text-column", text_column, columns, "a text column",
                              [c for c in TEXT_COLUMNS if c in columns])
    else:
        text_column = None
    used = [c for c in (audio_column, segments_column, text_column) if c]
    if LANGUAGE_COLUMN in columns and LANGUAGE_COLUMN not in used:
        used.append(LANGUAGE_COLUMN)
    dataset = dataset.select_columns(used)
    if isinstance(features.get(audio_column), datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    total = len(dataset) if isinstance(dataset, (datasets.Dataset, ParquetStream)) else _known_rows(dataset, split)
    description = {"dataset": reference, "config": config, "split": split, "streaming": streaming,
                   "audio_column": audio_column, "segments_column": segments_column,
                   "text_column": text_column, "datasets_version": datasets.__version__}
    return HfSource(description, dataset, total, audio_column, text_column, segments_column)


def _label(name: str, split: str | None) -> str:
    return f"{name} [{split}]" if split else name


def _load_split(datasets, name: str, config: str | None, split: str | None, streaming: bool):
    """(the split, its name, how the dataset is named in the description: a local path absolute)."""
    path = Path(name).expanduser()
    saved = path.is_dir() and any((path / f).is_file() for f in SAVED_DATASET_FILES)
    if saved and config:
        raise UserError(f"--hf-dataset {name}: a dataset saved with save_to_disk has no configs; drop --hf-config")
    if path.is_file() and path.suffix.lower() not in FILE_BUILDERS:
        raise UserError(f"--hf-dataset {name}: not a dataset file (.parquet, .arrow, .csv, .json, .jsonl), "
                        "a saved dataset folder, a data folder or a Hub name")
    reference = str(path.absolute()) if path.exists() else name
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
            split = _pick_split(name, split, list(loaded) if isinstance(loaded, datasets.DatasetDict) else None)
            dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            return (dataset.to_iterable_dataset() if streaming else dataset), split, reference
        args, kwargs = ((FILE_BUILDERS[path.suffix.lower()],), {"data_files": str(path)}) if path.is_file() \
            else ((name, config), {})
        split = _pick_split(name, split, datasets.get_dataset_split_names(*args, **kwargs))
        if streaming and path.is_file() and FILE_BUILDERS[path.suffix.lower()] == "parquet":
            return ParquetStream(datasets, path), split, reference
        if streaming:
            kwargs.update(_flat_streaming_options(datasets, args, kwargs))
        return datasets.load_dataset(*args, split=split, streaming=streaming, **kwargs), split, reference
    except (ImportError, OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        if _needs_torchcodec(exc):
            raise UserError(_torchcodec_message(name)) from None
        if isinstance(exc, ImportError):
            raise
        # not found, no network, a wrong config: datasets' message, first line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"--hf-dataset {name}: cannot load it ({reason})") from None


def _flat_streaming_options(datasets, args: tuple, kwargs: dict) -> dict:
    """Parquet read without pre-buffering: pyarrow keeps every row group it pre-buffered until
    the file is done, so a streamed 190 MB file grew the process by about as much (measured;
    without it memory stays flat, bench/bench_hf_streaming.py). Other builders as they are."""
    builder = datasets.load_dataset_builder(*args, **kwargs)
    if not hasattr(builder.config, "fragment_scan_options"):  # not parquet
        return {}
    import pyarrow.dataset

    return {"fragment_scan_options": pyarrow.dataset.ParquetFragmentScanOptions(pre_buffer=False)}


class ParquetStream:
    """A local parquet file streamed a few rows at a time, as the rows `datasets` gives with the
    audio undecoded. datasets' own streaming reader grew the process with the file (469 MiB for
    200 rows, 688 MiB for 2000, bench/bench_hf_streaming.py), and so did a plain pyarrow reader
    while Arrow's memory pool (mimalloc) kept the pages of every batch it had freed; read here
    with no pre-buffering or memory map, only the used columns, and the pool's unused memory
    handed back after each batch, the peak stays where the first batch put it."""

    BATCH_ROWS = 8  # a few rows of audio (about 100 kB to a few MB each) in memory at once

    def __init__(self, datasets, path: Path, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        self.path = path
        self.file = pq.ParquetFile(path, pre_buffer=False, memory_map=False)
        self.features = datasets.Features.from_arrow_schema(self.file.schema_arrow)
        self.column_names = list(self.features) if columns is None else columns
        if columns is not None:
            self.features = datasets.Features({c: self.features[c] for c in columns})
        self._datasets = datasets

    def select_columns(self, columns: list[str]) -> ParquetStream:
        return ParquetStream(self._datasets, self.path, list(columns))

    def cast_column(self, column: str, feature) -> ParquetStream:
        """Only Audio(decode=False) is asked for, and the rows are never decoded: as they are."""
        return self

    def __len__(self) -> int:
        return self.file.metadata.num_rows

    def __iter__(self) -> Iterator[dict]:
        import pyarrow

        pool = pyarrow.default_memory_pool()
        for batch in self.file.iter_batches(batch_size=self.BATCH_ROWS, columns=self.column_names,
                                            use_threads=False):
            rows = batch.to_pylist()
            del batch
            pool.release_unused()
            yield from rows


def _needs_torchcodec(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ImportError) and "torchcodec" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _torchcodec_message(name: str) -> str:
    return (f"--hf-dataset {name}: `datasets` reads the audio files of a folder-based dataset "
            "(audiofolder) only through torchcodec: pip install torchcodec (it needs FFmpeg's "
            "libraries), or give a local folder with metadata.csv to --audio-dir")


def _pick_split(name: str, split: str | None, splits: list[str] | None) -> str | None:
    """The split asked for, or `train`, or the only one; a single saved Dataset has none (None)."""
    if splits is None:
        return split
    if split is None:
        if DEFAULT_SPLIT in splits or len(splits) == 1:
            return DEFAULT_SPLIT if DEFAULT_SPLIT in splits else splits[0]
        raise UserError(f"--hf-dataset {name}: choose a split with --hf-split ({', '.join(splits)})")
    if split not in splits:
        raise UserError(f"--hf-dataset {name}: no split {split!r} (splits: {', '.join(splits)})")
    return split


def _first_row(dataset, name: str) -> list[str]:
    """Columns of a stream that does not declare its features: those of its first row."""
    for row in dataset:
        return list(row)
    raise UserError(f"--hf-dataset {name}: the split has no rows")


def _known_rows(dataset, split: str | None) -> int | None:
    splits = getattr(dataset.info, "splits", None) or {}
    info = splits.get(split) if split else None
    return info.num_examples if info is not None and info.num_examples else None


def _choose(where: str, flag: str, given: str | None, columns: list[str], what: str,
            guesses: list[str]) -> str:
    if given is not None:
        if given not in columns:
            raise UserError(f"{where}: no column {given!r} ({flag}); columns: {', '.join(columns)}")
        return given
    if not guesses:
        raise UserError(f"{where}: cannot tell {what} (give {flag}); columns: {', '.join(columns)}")
    return guesses[0]


def _audio_stem(encoded) -> str:
    path = encoded.get("path") if isinstance(encoded, dict) else encoded if isinstance(encoded, str) else None
    if not isinstance(path, str) or not path:
        return ""
    return Path(path.split("::")[0].rsplit("/", 1)[-1]).stem


def decode_audio(encoded, where: str) -> np.ndarray:
    """An audio column's value as 16 kHz mono float32: its bytes, its file (local, or remote
    through fsspec), or an already decoded {"array", "sampling_rate"}."""
    from .audio import load_audio, resample_audio

    if isinstance(encoded, str):
        encoded = {"path": encoded}
    if not isinstance(encoded, dict):
        raise UserError(f"{where}: the audio column holds {type(encoded).__name__}, not audio")
    name = f"{where} ({encoded['path']})" if encoded.get("path") else where
    if encoded.get("bytes"):
        return load_audio(name, data=encoded["bytes"])
    if encoded.get("array") is not None and encoded.get("sampling_rate"):
        samples = np.asarray(encoded["array"], dtype=np.float32)
        samples = samples.mean(axis=0) if samples.ndim == 2 else samples  # (channels, n), as datasets gives
        return resample_audio(samples, int(encoded["sampling_rate"]))
    path = encoded.get("path")
    if not path:
        raise UserError(f"{where}: the audio column holds neither bytes nor a path")
    if "://" not in path and os.path.exists(path):
        return load_audio(path)
    import fsspec

    try:
        with fsspec.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{name}: cannot read the audio ({reason})") from None
    return load_audio(name, data=data)


def segment_cues(segments, duration: float, where: str) -> list[Cue]:
    """Cues from a list of {start, end, text} or {timestamp: (start, end), text}."""
    if not isinstance(segments, (list, tuple)):
        raise UserError(f"{where}: segments must be a list of {{start, end, text}}, not {type(segments).__name__}")
    cues = []
    for number, item in enumerate(segments):
        if not isinstance(item, dict):
            raise UserError(f"{where}: segment {number} is {type(item).__name__}, not {{start, end, text}}")
        if "timestamp" in item:  # transformers' pipeline: {"timestamp": (start, end), "text"}
            times = item["timestamp"]
            start, end = times if isinstance(times, (list, tuple)) and len(times) == 2 else (None, None)
        else:
            start, end = item.get("start"), item.get("end")
        end = duration if end is None else end
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                   for t in (start, end)):
            raise UserError(f"{where}: segment {number} needs start and end times in seconds "
                            f"(got {start!r}, {end!r})")
        cues.append(Cue(float(start), float(end), str(item.get("text") or "")))
    return cues
