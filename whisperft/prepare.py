"""`create_data.py` / `whisperft prepare`: audio + SRT/VTT (or a clip list) -> a JSONL manifest.

Two inputs:
  - recordings with subtitles (`--audio-dir`, `--transcript-dir`): each recording is paired with
    the .srt/.vtt of the same name and cut into 30 s windows with timestamps and prompts
    (windows.py); each window's audio (16 kHz WAV) and log-mel features go into `--dump-dir`;
  - clips with their text (`--data-file`, or an `--audio-dir` holding a Hugging Face audiofolder
    `metadata.csv`): one example per clip, no timestamps, no prompt; or with `--pack`, clips
    concatenated into windows of up to 30 s with timestamps from the clip boundaries
    (packing.py), each packed window's WAV and features written into `--dump-dir`;
  - a Hugging Face dataset (`--hf-dataset`, hf_data.py): rows with segment times as recordings
    with cues, others as clips; their audio goes into the dump folder, beside `hf_dataset.json`
    (dataset, config, split), which every record's `source` names.
A file that cannot be read is reported and skipped; the run goes on. Exit status 0 when nothing
was skipped, 1 when something was (silence left out by subsampling and cues left out by
--max-cue-wer/--max-cue-cer do not count: the user asked for them).
"""

from __future__ import annotations

import json
import sys
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .audio import CHUNK_LENGTH, SAMPLE_RATE, silence_spans
from .errors import UserError
from .hf_data import SEGMENT_COLUMNS, TEXT_COLUMNS
from .manifest import Record, write_manifest
from .options import flag, opt
from .packing import PACK_GAP_MS, Clip, Pack, Packer
from .cliplist import METADATA_FILES, read_clip_list
from .pairing import folder_pairs, no_pairs
from .subtitles import SubtitleWarning, read_subtitles
from .tokens import NO_SPACE_LANGUAGES, language_code
from .windows import (LEFT_OUT, SILENCE_SUBSAMPLED, TOO_MANY_TOKENS, check_window_options, join_cue_lines,
                      speech_seconds, split_into_windows)

LONG_CLIP = "clip longer than 30 s"
# Skips the user asked for: reported, but not problems (the exit status stays 0).
INTENDED = (SILENCE_SUBSAMPLED, LEFT_OUT)
FEATURES_DTYPE = np.float16  # half the size of float32; log-mels lie in about [-1.5, 1.5]
HF_SOURCE_FILE = "hf_dataset.json"  # in the dump folder: which dataset, config and split


@dataclass
class PrepareOptions:
    audio_dir: str | None = opt(None, "folder of recordings (any format FFmpeg reads); each is paired "
                                      "with the .srt/.vtt of the same name (also name.en.srt)")
    transcript_dir: str | None = opt(None, "folder of .srt/.vtt transcripts (default: --audio-dir)")
    data_file: str | None = opt(None, "clip list instead of subtitles, one example per clip, no "
                                      "timestamps: lines 'audio<TAB>text', or a Hugging Face audiofolder "
                                      "metadata.csv/.jsonl (file_name, transcription or text, optional "
                                      "language); relative paths are read from the list's folder")
    hf_dataset: str | None = opt(None, "a Hugging Face dataset instead of files: a Hub name, a folder "
                                       "written by save_to_disk, a .parquet/.arrow file or a data folder; rows "
                                       "with segment times (a list of {start, end, text}) are cut into windows "
                                       "with timestamps, other rows are clips with their text (as --data-file)")
    hf_config: str | None = opt(None, "--hf-dataset's configuration (e.g. a Common Voice language)")
    hf_split: str | None = opt(None, "--hf-dataset's split (default: train, or the only one)")
    audio_column: str | None = opt(None, "--hf-dataset's audio column (default: audio, or an Audio feature)")
    text_column: str | None = opt(None, "--hf-dataset's text column (default: the first of "
                                        f"{', '.join(TEXT_COLUMNS)})")
    segments_column: str | None = opt(None, "--hf-dataset's column of segment times (default: "
                                            f"{' or '.join(SEGMENT_COLUMNS)} when there is one)")
    streaming: bool = opt(False, "read --hf-dataset row by row, without downloading or caching it "
                                 "whole: memory stays flat however large it is")
    without_timestamps: bool = opt(False, "examples without timestamps, from --data-file (or an "
                                          "audiofolder metadata.csv in --audio-dir), or from "
                                          "--hf-dataset's text column even when it has segment times")
    language: str = opt("en", "language of the data: a code or a name (es, Spanish)")
    output: str = opt("data.json", "the JSONL manifest to write, one example per line")
    dump_dir: str | None = opt(None, "folder for each window's 16 kHz WAV and log-mel features "
                                     "(default: OUTPUT-STEM_dump beside --output)")
    no_dump: bool = opt(False, "write no audio or features: the manifest points into the source "
                               "recordings by start/duration (smaller; training decodes whole files)")
    timestamp_resolution: int = opt(20, "timestamp resolution in ms, a multiple of 20 (Whisper's step)")
    max_prompt_length: int = opt(223, "most tokens of previous text kept as prompt "
                                      "(448 // 2 - 1: half the decoder context, less <|startofprev|>)")
    max_tokens_length: int = opt(219, "windows with more text+timestamp tokens are skipped "
                                      "(448 // 2 - 5 special tokens)")
    subsampling_factor_for_silence: int = opt(1, "keep 1 in N windows without speech (Whisper's own "
                                                 "training subsampled them); 1 keeps all")
    tokenizer_type: str = opt("multilingual", "Whisper tokenizer used to count tokens",
                              choices=("multilingual", "english"))
    normalize_unicode: bool = opt(False, "apply Unicode NFKC normalisation to the text")
    n_mels: int = opt(80, "mel bins of the precomputed features: 80, or 128 for large-v3 and turbo",
                      choices=(80, 128))
    pack: bool = opt(False, "with --data-file or --hf-dataset clips: concatenate consecutive clips of "
                            f"one language (list order) into windows of up to 30 s, {PACK_GAP_MS} ms of silence apart, "
                            "with timestamps from the clip boundaries and no prompt: 3-8 s clips train "
                            "several times more speech per step, and learn timestamps")
    precompute_features: bool = opt(True, "store each example's log-mel (float16 .npy) in the dump "
                                          "folder so training skips decoding and the STFT")
    overwrite: bool = opt(False, "replace an existing --output (the dump folder's files are rewritten)")
    check: bool = opt(False, "check the subtitles against the audio first (as check-data does) and "
                             "write the findings beside --output (OUTPUT-STEM_check.json/.html)")
    fix_timing: bool = opt(False, "move each file's cues onto the speech by its estimated offset/drift "
                                  "(only where the estimate is sure and the cues are off; voice-activity "
                                  "detection, no model pass)")
    max_cue_wer: float | None = opt(None, "leave out cues whose text disagrees with what --check-model "
                                          "hears by more than this WER (e.g. 0.5): their text is dropped "
                                          "and their audio silenced, the windows stay as they were")
    max_cue_cer: float | None = opt(None, "the same by character error rate (e.g. 0.6; kinder to a "
                                          "model's misheard words than WER)")
    check_model: str | None = opt(None, "model that listens for --check/--max-cue-wer/--max-cue-cer: the one "
                                         "you will fine-tune (default tiny.en for English, base otherwise)")
    check_report: str | None = opt(None, "findings of an earlier check-data run on these files, used "
                                         "instead of checking again")


# --------------------------------------------------------------------------------------------
# Helpers


@lru_cache(maxsize=2)
def make_token_counter(tokenizer_type: str) -> Callable[[str], int]:
    """Tokens of a plain text under the Whisper tokenizer (loaded offline when installed)."""
    from .tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_type)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def _say(message: str) -> None:
    # Through tqdm so a progress bar on the terminal is not torn apart.
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _save_npy(path: Path, array: np.ndarray) -> None:
    from .fileio import atomic_write

    with atomic_write(path) as fh:
        np.save(fh, array)


def _save_features(path: Path, audio: np.ndarray, n_mels: int) -> None:
    from .features import window_features

    _save_npy(path, window_features(audio, n_mels).numpy().astype(FEATURES_DTYPE))


def _write_window(record: Record, audio: np.ndarray, folder: Path, name: str, opts: PrepareOptions,
                  wav: bool = True) -> Record:
    """Write one example's audio as folder/name.wav (unless `wav` is False) and, with
    --precompute-features, its log-mel as folder/name.melN.npy; point `record` at what was
    written (with a WAV, the audio it pointed at becomes its `source`)."""
    if wav:
        from .audio import save_wav

        path = folder / f"{name}.wav"
        save_wav(path, audio)
        record.source, record.audio_path = record.audio_path, str(path)
    if opts.precompute_features:
        features = folder / f"{name}.mel{opts.n_mels}.npy"
        _save_features(features, audio, opts.n_mels)
        record.features_path, record.n_mels = str(features), opts.n_mels
    return record


def _read_subtitles_reporting(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SubtitleWarning)
        cues = read_subtitles(path)
    for w in caught:
        _say(f"warning: {w.message}")
    return cues


@dataclass
class _Tally:
    """What the closing summary reports."""

    files: int = 0
    failed_files: int = 0
    windows: int = 0
    audio_seconds: float = 0.0  # of the recordings/clips used
    speech_seconds: float = 0.0  # inside complete cues of the written windows
    skips: Counter = field(default_factory=Counter)  # reason -> count
    packed_clips: int = 0  # clips that went into packed windows (--pack)
    silence_windows: int = 0  # seen so far, kept or subsampled (subsampling counts across recordings)
    packs: int = 0  # packed windows written

    def fail(self, message: str) -> None:
        self.failed_files += 1
        _say(f"skipped: {message}")


# --------------------------------------------------------------------------------------------
# Recordings with subtitles


def _prepare_recordings(opts: PrepareOptions, language: str, dump_dir: Path | None,
                        count_tokens: Callable[[str], int], tally: _Tally) -> list[Record]:
    from tqdm import tqdm

    from .audio import load_audio

    pairs, problems, notes = folder_pairs(opts.audio_dir, opts.transcript_dir)
    for note in notes:
        _say(f"note: {note}")
    for problem in problems:
        tally.fail(problem)
    if not pairs:
        raise no_pairs(opts.audio_dir, opts.transcript_dir)

    judge_text = opts.max_cue_wer is not None or opts.max_cue_cer is not None
    findings = None
    if opts.check or opts.fix_timing or judge_text:
        from .datacheck import findings_for_prepare

        findings = findings_for_prepare(pairs, language, opts.output, listen=opts.check or judge_text,
                                        model=opts.check_model, report=opts.check_report)
    records: list[Record] = []
    for audio_path, transcript_path in tqdm(pairs, unit="file", desc="preparing", disable=None):
        try:
            cues = _read_subtitles_reporting(transcript_path)
            if not any(c.text.strip() for c in cues):
                raise UserError(f"{transcript_path}: no cues with text")
            audio = load_audio(audio_path)
        except UserError as exc:
            tally.fail(str(exc))
            continue
        changes = None
        if findings is not None:
            from .repairs import findings_for, repair

            cues, changes = repair(cues, findings_for(findings, audio_path), fix_timing=opts.fix_timing,
                                   max_cue_wer=opts.max_cue_wer, max_cue_cer=opts.max_cue_cer)
        records += _cut_recording(audio, cues, str(audio_path), str(audio_path), language, opts,
                                  None if dump_dir is None else dump_dir / audio_path.stem, count_tokens, tally,
                                  changes)
    return records


def _cut_recording(audio: np.ndarray, cues, source: str, where: str, language: str, opts: PrepareOptions,
                   folder: Path | None, count_tokens: Callable[[str], int], tally: _Tally,
                   repairs: dict | None = None) -> list[Record]:
    """The windows of one recording (16 kHz samples and their cues) as records pointing at
    `source`; with a dump `folder`, each window's WAV and features are written there;
    `repairs` (what the data check changed) goes into each record."""
    duration = len(audio) / SAMPLE_RATE
    windows, skips = split_into_windows(
        cues, duration, count_tokens=count_tokens,
        timestamp_resolution_ms=opts.timestamp_resolution,
        max_prompt_length=opts.max_prompt_length, max_tokens_length=opts.max_tokens_length,
        subsampling_factor_for_silence=opts.subsampling_factor_for_silence,
        language=language, normalize_unicode=opts.normalize_unicode, silence_offset=tally.silence_windows)
    tally.silence_windows += sum(w.text == "" for w in windows) + sum(s.reason == SILENCE_SUBSAMPLED for s in skips)
    for s in skips:
        tally.skips[s.reason] += 1
        if s.reason != SILENCE_SUBSAMPLED:
            _say(f"skipped: {where}: {s.message}")
    tally.files += 1
    tally.audio_seconds += duration
    records = []
    for w in windows:
        record = Record(audio_path=source, text=w.text, language=language, prompt=w.prompt,
                        start=w.start, duration=w.duration, repairs=repairs,
                        muted=[list(span) for span in w.muted] or None)
        if folder is not None:
            first = int(round(w.start * SAMPLE_RATE))
            piece = silence_spans(audio[first:first + int(round(w.duration * SAMPLE_RATE))], w.muted)
            _write_window(record, piece, folder, f"{int(round(w.start * 1000))}", opts)  # start in ms
        records.append(record)
        tally.windows += 1
        tally.speech_seconds += speech_seconds(w.text)
    return records


# --------------------------------------------------------------------------------------------
# Clips with their text (no timestamps)


def _prepare_clips(opts: PrepareOptions, data_file: Path, language: str, dump_dir: Path | None,
                   count_tokens: Callable[[str], int], tally: _Tally) -> list[Record]:
    from tqdm import tqdm

    from .audio import load_audio

    if not data_file.is_file():
        raise UserError(f"{data_file}: no such clip list")
    problems: list[str] = []
    rows = read_clip_list(data_file, problems)
    for problem in problems:
        tally.fail(problem)
    if not rows:
        raise UserError(f"{data_file}: no clips listed" + (" (every line is malformed)" if problems else ""))
    clips = _Clips(opts, str(data_file), {"clip_list": str(data_file.absolute())}, "line", dump_dir,
                   count_tokens, tally)
    for number, audio_name, text, row_language in tqdm(rows, unit="clip", desc="preparing", disable=None):
        where = f"{data_file}: line {number}"
        audio_path = Path(audio_name).expanduser()
        if not audio_path.is_absolute():
            beside_list = data_file.parent / audio_path
            audio_path = beside_list if beside_list.exists() or not audio_path.exists() else audio_path
        try:
            clip_language = language_code(row_language, default="en") if row_language else language
            audio = load_audio(audio_path)
        except UserError as exc:
            tally.fail(f"{where}: {exc}")
            continue
        clips.add(number, audio_name, audio, text, clip_language, where, f"{number:06d}_{audio_path.stem}",
                  clip_file=audio_path)
    return clips.finish()


class _Clips:
    """Clips with their text into records: one example each, or packed (--pack). The packs'
    records point at `source` (the clip list, or the dataset's description), and each pack's
    .json lists its clips under `listing` by their `key_name` (line, row)."""

    def __init__(self, opts: PrepareOptions, source: str, listing: dict, key_name: str, dump_dir: Path | None,
                 count_tokens: Callable[[str], int], tally: _Tally):
        self.opts, self.source, self.listing, self.key_name = opts, source, listing, key_name
        self.dump_dir, self.count_tokens, self.tally = dump_dir, count_tokens, tally
        self.records: list[Record] = []
        self.packer = None
        if opts.pack:
            self.packer = Packer(resolution_ms=opts.timestamp_resolution, max_tokens_length=opts.max_tokens_length)
        self.held: dict[int, tuple[str, np.ndarray]] = {}  # key -> (audio as listed, samples) of open packs' clips

    def add(self, key: int, audio_name: str, audio: np.ndarray, text: str, language: str, where: str,
            dump_name: str, clip_file: Path | None = None) -> None:
        """One clip; without a `clip_file` of its own, its audio is written into the dump folder."""
        opts, tally = self.opts, self.tally
        duration = len(audio) / SAMPLE_RATE
        tally.files += 1
        tally.audio_seconds += duration
        if opts.normalize_unicode:
            text = unicodedata.normalize("NFKC", text)
        text = join_cue_lines(text, language)
        if duration > CHUNK_LENGTH:
            tally.skips[LONG_CLIP] += 1
            _say(f"skipped: {where}: {clip_file or 'the clip'} lasts {duration:.1f} s; Whisper sees 30 s "
                 f"(cut it, or give it subtitles or segment times)")
            return
        if text and language not in NO_SPACE_LANGUAGES:
            text = " " + text  # as Whisper writes the first word
        n_tokens = self.count_tokens(text) if text else 0
        if self.packer is not None and text:  # a clip without text stays alone: a no-speech example
            clip = Clip(key, len(audio), text, language, n_tokens)
            if not self.packer.fits_alone(clip):
                tally.skips[TOO_MANY_TOKENS] += 1
                _say(f"skipped: {where}: {n_tokens} tokens + 2 timestamps > --max-tokens-length "
                     f"{opts.max_tokens_length}")
                return
            self.held[key] = (audio_name, audio)
            self._flush(self.packer.add(clip))
            return
        if n_tokens > opts.max_tokens_length:
            tally.skips[TOO_MANY_TOKENS] += 1
            _say(f"skipped: {where}: {n_tokens} tokens > --max-tokens-length {opts.max_tokens_length}")
            return
        record = Record(audio_path=str(clip_file or self.source), text=text, language=language,
                        start=0.0, duration=duration)
        if self.dump_dir is not None:  # a clip file is its own audio: features only
            _write_window(record, audio, self.dump_dir / "clips", dump_name, opts, wav=clip_file is None)
        self.records.append(record)
        tally.windows += 1
        tally.speech_seconds += duration if text else 0.0

    def finish(self) -> list[Record]:
        if self.packer is not None:
            self._flush(self.packer.finish())
        return self.records

    def _flush(self, packs: list[Pack]) -> None:
        for pack in packs:
            clips = [(p, *self.held.pop(p.clip.key)) for p in pack.placements]
            self.records.append(self._write_pack(pack, clips))

    def _write_pack(self, pack: Pack, clips: list) -> Record:
        """Write one packed window (WAV, features, and a .json naming its clips); its record."""
        from .fileio import atomic_write_text

        tally = self.tally
        folder, name = self.dump_dir / "packs", f"{tally.packs:06d}"
        record = Record(audio_path=self.source, text=pack.text, language=pack.language, prompt="", start=0.0,
                        duration=pack.duration_ms / 1000)
        _write_window(record, pack.render([samples for _, _, samples in clips]), folder, name, self.opts)
        # Which clips, where: the manifest line alone cannot say (its source is the list or dataset).
        listing = {**self.listing,
                   "clips": [{self.key_name: p.clip.key, "audio": audio_name, "start": p.start_ms / 1000,
                              "end": p.end_ms / 1000} for p, audio_name, _ in clips]}
        atomic_write_text(folder / f"{name}.json", json.dumps(listing, ensure_ascii=False, indent=1) + "\n")
        tally.packs += 1
        tally.packed_clips += len(clips)
        tally.windows += 1
        tally.speech_seconds += pack.speech_seconds
        return record


# --------------------------------------------------------------------------------------------
# A Hugging Face dataset


def _prepare_hf(opts: PrepareOptions, language: str, dump_dir: Path, count_tokens: Callable[[str], int],
                tally: _Tally) -> list[Record]:
    from tqdm import tqdm

    from .fileio import write_json_atomic
    from .hf_data import open_hf_dataset

    hf = open_hf_dataset(opts.hf_dataset, opts.hf_config, opts.hf_split, audio_column=opts.audio_column,
                         text_column=opts.text_column, segments_column=opts.segments_column,
                         streaming=opts.streaming, without_timestamps=opts.without_timestamps)
    if opts.pack and hf.segments_column:
        raise UserError(f"--pack packs clips; {opts.hf_dataset} has segment times ({hf.segments_column}) "
                        "and is cut into 30 s windows (add --without-timestamps to pack its text as clips)")
    source = dump_dir / HF_SOURCE_FILE
    write_json_atomic(source, hf.description)
    clips = _Clips(opts, str(source), {"hf_dataset": hf.description}, "row", dump_dir, count_tokens, tally)
    records = []
    for row in tqdm(hf.rows(), total=hf.total, unit="row", desc="preparing", disable=None):
        try:
            row_language = language_code(row.language, default="en") if row.language else language
            audio = row.audio()
            cues = row.cues(len(audio) / SAMPLE_RATE) if hf.segments_column else None
            if cues is not None and not any(c.text.strip() for c in cues):
                raise UserError(f"{row.where}: no segments with text")
        except UserError as exc:
            tally.fail(str(exc))
            continue
        dump_name = f"{row.index:06d}" + (f"_{row.stem}" if row.stem else "")
        if cues is not None:
            records += _cut_recording(audio, cues, str(source), row.where, row_language, opts,
                                      dump_dir / dump_name, count_tokens, tally)
        else:
            clips.add(row.index, row.stem or str(row.index), audio, row.text, row_language, row.where, dump_name)
    return records + clips.finish()


# --------------------------------------------------------------------------------------------
# The command


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def _summary(output: Path, tally: _Tally) -> str:
    problems = {r: n for r, n in tally.skips.items() if r not in INTENDED}
    lines = [f"wrote {output}: {_count(tally.windows, 'example')} from {_count(tally.files, 'file')} "
             f"({_duration(tally.audio_seconds)} of audio, {_duration(tally.speech_seconds)} of speech "
             f"in the examples)"]
    if tally.packs:
        lines.append(f"  {_count(tally.packed_clips, 'clip')} packed into {_count(tally.packs, 'window')} "
                     f"(--pack; {tally.packed_clips / tally.packs:.1f} clips per window)")
    if tally.failed_files:
        lines.append(f"  files skipped: {tally.failed_files}")
    if problems:
        lines.append(f"  left out: {sum(problems.values())} ("
                     + ", ".join(f"{n} {r}" for r, n in sorted(problems.items())) + ")")
    if tally.skips.get(SILENCE_SUBSAMPLED):
        lines.append(f"  silence windows left out by subsampling: {tally.skips[SILENCE_SUBSAMPLED]}")
    if tally.skips.get(LEFT_OUT):
        lines.append(f"  cues left out by the data check (--max-cue-wer/--max-cue-cer): {tally.skips[LEFT_OUT]}")
    return "\n".join(lines)


def prepare(opts: PrepareOptions) -> int:
    """Write the manifest `opts.output`; 0 if nothing was skipped, 1 if something was."""
    output = Path(opts.output)
    if output.is_dir():
        raise UserError(f"{output} is a folder; --output must be a file")
    if output.exists() and not opts.overwrite:
        raise UserError(f"{output} already exists (add --overwrite to replace it)")
    check_window_options(opts.timestamp_resolution, opts.max_prompt_length, opts.max_tokens_length,
                         opts.subsampling_factor_for_silence)
    language = language_code(opts.language, default="en")
    for name in ("max_cue_wer", "max_cue_cer"):
        if getattr(opts, name) is not None and not getattr(opts, name) >= 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more")
    if opts.check_report and not Path(opts.check_report).is_file():
        raise UserError(f"--check-report {opts.check_report}: no such file (write one with check-data)")

    if opts.hf_dataset and (opts.data_file or opts.audio_dir or opts.transcript_dir):
        raise UserError("--hf-dataset is a source of its own: drop --audio-dir, --transcript-dir and --data-file")
    if opts.hf_dataset and opts.no_dump:
        raise UserError("--hf-dataset writes each example's audio into the dump folder (the dataset "
                        "holds no files a manifest could point at): drop --no-dump")
    hf_only = [f for f in ("hf_config", "hf_split", "audio_column", "text_column", "segments_column",
                           "streaming") if getattr(opts, f) and not opts.hf_dataset]
    if hf_only:
        raise UserError(f"{flag(hf_only[0])} goes with --hf-dataset")
    data_file = Path(opts.data_file) if opts.data_file else None
    if data_file is None and opts.audio_dir and not opts.transcript_dir:
        data_file = next((Path(opts.audio_dir) / name for name in METADATA_FILES
                          if (Path(opts.audio_dir) / name).is_file()), None)
    if data_file is None and opts.without_timestamps and not opts.hf_dataset:
        raise UserError("--without-timestamps reads clips from --data-file (or an --audio-dir with "
                        "metadata.csv); windows cut from subtitles keep their timestamps, and "
                        "run_finetuning.py can train them without (--no-timestamps-rate)")
    if data_file is None and not opts.audio_dir and not opts.hf_dataset:
        raise UserError("give --audio-dir (with .srt/.vtt files, or --transcript-dir), --data-file "
                        "or --hf-dataset")
    if opts.pack and data_file is None and not opts.hf_dataset:
        raise UserError("--pack packs clips from --data-file (or an --audio-dir with metadata.csv); "
                        "recordings with subtitles are already cut into 30 s windows")
    if opts.pack and opts.no_dump:
        raise UserError("--pack writes each packed window's audio into the dump folder: drop --no-dump")

    dump_dir = None
    if not opts.no_dump:
        dump_dir = Path(opts.dump_dir) if opts.dump_dir else output.with_name(output.stem + "_dump")
    count_tokens = make_token_counter(opts.tokenizer_type)
    tally = _Tally()
    if opts.hf_dataset:
        records = _prepare_hf(opts, language, dump_dir, count_tokens, tally)
    elif data_file is not None:
        records = _prepare_clips(opts, data_file, language, dump_dir, count_tokens, tally)
    else:
        records = _prepare_recordings(opts, language, dump_dir, count_tokens, tally)
    if not records:
        raise UserError(f"no examples to write ({_count(tally.failed_files, 'file')} skipped, "
                        f"{_count(sum(tally.skips.values()), 'window')} left out; see the lines above); "
                        f"{output} was not written")
    write_manifest(output, records)
    print(_summary(output, tally))
    problems = sum(n for r, n in tally.skips.items() if r not in INTENDED)
    return 1 if tally.failed_files or problems else 0
