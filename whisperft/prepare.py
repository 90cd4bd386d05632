"""`create_data.py` / `whisperft prepare`: audio + SRT/VTT (or a clip list) -> a JSONL manifest.

Two inputs:
  - recordings with subtitles (`--audio-dir`, `--transcript-dir`): each recording is paired with
    the .srt/.vtt of the same name and cut into 30 s windows with timestamps and prompts
    (windows.py); each window's audio (16 kHz WAV) and log-mel features go into `--dump-dir`;
  - clips with their text (`--data-file`, or an `--audio-dir` holding a Hugging Face audiofolder
    `metadata.csv`): one example per clip, no timestamps, no prompt; or with `--pack`, clips
    concatenated into windows of up to 30 s with timestamps from the clip boundaries
    (packing.py), each packed window's WAV and features written into `--dump-dir`.
A file that cannot be read is reported and skipped; the run goes on. Exit status 0 when nothing
was skipped, 1 when something was (silence left out by subsampling and cues left out by
--max-cue-wer/--max-cue-cer do not count: the user asked for them).
"""

from __future__ import annotations

import csv
import io
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

from .audio import CHUNK_LENGTH, SAMPLE_RATE
from .errors import UserError
from .manifest import Record, write_manifest
from .options import opt
from .packing import PACK_GAP_MS, Clip, Pack, Packer
from .pairing import pair_files
from .subtitles import SubtitleWarning, read_subtitles, read_text_file
from .tokens import NO_SPACE_LANGUAGES, language_code
from .windows import (LEFT_OUT, SILENCE_SUBSAMPLED, TOO_MANY_TOKENS, Skip,
                      check_window_options, join_cue_lines, speech_seconds, split_into_windows)

METADATA_FILES = ("metadata.csv", "metadata.jsonl")  # Hugging Face audiofolder convention
CLIP_TEXT_COLUMNS = ("transcription", "text", "sentence")  # first one present is the text
LONG_CLIP = "clip longer than 30 s"
# Skips the user asked for: reported, but not problems (the exit status stays 0).
INTENDED = (SILENCE_SUBSAMPLED, LEFT_OUT)
FEATURES_DTYPE = np.float16  # half the size of float32; log-mels lie in about [-1.5, 1.5]


@dataclass
class PrepareOptions:
    audio_dir: str | None = opt(None, "folder of recordings (any format FFmpeg reads); each is paired "
                                      "with the .srt/.vtt of the same name (also name.en.srt)")
    transcript_dir: str | None = opt(None, "folder of .srt/.vtt transcripts (default: --audio-dir)")
    data_file: str | None = opt(None, "clip list instead of subtitles, one example per clip, no "
                                      "timestamps: lines 'audio<TAB>text', or a Hugging Face audiofolder "
                                      "metadata.csv/.jsonl (file_name, transcription or text, optional "
                                      "language); relative paths are read from the list's folder")
    without_timestamps: bool = opt(False, "examples without timestamps, from --data-file (or an "
                                          "audiofolder metadata.csv in --audio-dir)")
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
    pack: bool = opt(False, "with --data-file: concatenate consecutive clips of one language (list "
                            f"order) into windows of up to 30 s, {PACK_GAP_MS} ms of silence apart, "
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
                                          "hears by more than this WER (e.g. 0.5); their audio is kept "
                                          "out of the windows too")
    max_cue_cer: float | None = opt(None, "the same by character error rate (e.g. 0.5; kinder to a "
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

    audio_dir = Path(opts.audio_dir)
    transcript_dir = Path(opts.transcript_dir or opts.audio_dir)
    for folder, flag in ((audio_dir, "--audio-dir"), (transcript_dir, "--transcript-dir")):
        if not folder.is_dir():
            raise UserError(f"{flag} {folder}: no such folder")
    pairs, problems, notes = pair_files(audio_dir, transcript_dir)
    for note in notes:
        _say(f"note: {note}")
    for problem in problems:
        tally.fail(problem)
    if not pairs:
        raise UserError(f"{audio_dir}: no audio file with a matching .srt/.vtt in {transcript_dir}")

    findings = _findings(pairs, opts, language)
    records: list[Record] = []
    silence_seen = 0
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
        duration = len(audio) / SAMPLE_RATE
        windows, skips = split_into_windows(
            cues, duration, count_tokens=count_tokens,
            timestamp_resolution_ms=opts.timestamp_resolution,
            max_prompt_length=opts.max_prompt_length, max_tokens_length=opts.max_tokens_length,
            subsampling_factor_for_silence=opts.subsampling_factor_for_silence,
            language=language, normalize_unicode=opts.normalize_unicode, silence_offset=silence_seen)
        silence_seen += sum(w.text == "" for w in windows) + sum(s.reason == SILENCE_SUBSAMPLED for s in skips)
        _report_skips(audio_path, skips, tally)
        tally.files += 1
        tally.audio_seconds += duration
        for w in windows:
            record = Record(audio_path=str(audio_path), text=w.text, language=language, prompt=w.prompt,
                            start=w.start, duration=w.duration, repairs=changes)
            if dump_dir is not None:
                first = int(round(w.start * SAMPLE_RATE))
                piece = audio[first:first + int(round(w.duration * SAMPLE_RATE))]
                name = f"{int(round(w.start * 1000))}"  # start in ms
                _write_window(record, piece, dump_dir / audio_path.stem, name, opts)
            records.append(record)
            tally.windows += 1
            tally.speech_seconds += speech_seconds(w.text)
    return records


def _findings(pairs, opts: PrepareOptions, language: str) -> dict[str, dict] | None:
    """The data check's findings per recording when a repair or the check is asked for: read
    from --check-report, or found now (a transcription pass only when text is judged)."""
    judge_text = opts.max_cue_wer is not None or opts.max_cue_cer is not None
    if not (opts.check or opts.fix_timing or judge_text):
        return None
    from .repairs import read_findings

    if opts.check_report:
        return read_findings(opts.check_report)
    from .datacheck import check_pairs, findings_json, load_listener
    from .fileio import write_json_atomic

    transcriber = load_listener(opts.check_model, language) if opts.check or judge_text else None
    files = check_pairs(pairs, language, transcriber)
    data = findings_json(files)
    output = Path(opts.output)
    report = output.with_name(output.stem + "_check.json")
    write_json_atomic(report, data)
    if transcriber is not None:
        from .datacheck_page import write_check_page

        write_check_page(data, report.with_suffix(".html"))
    _say(f"data check: {data['summary']['cues_sound']} of {data['summary']['cues']} cues look sound -> {report}")
    return read_findings(report)


def _report_skips(audio_path: Path, skips: list[Skip], tally: _Tally) -> None:
    for s in skips:
        tally.skips[s.reason] += 1
        if s.reason != SILENCE_SUBSAMPLED:
            _say(f"skipped: {audio_path}: {s.message}")


# --------------------------------------------------------------------------------------------
# Clips with their text (no timestamps)


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
    records = []
    packer = None
    if opts.pack:
        packer = Packer(resolution_ms=opts.timestamp_resolution, max_tokens_length=opts.max_tokens_length)
    held: dict[int, tuple[str, np.ndarray]] = {}  # line -> (audio as listed, samples) of open packs' clips

    def flush(packs: list[Pack]) -> None:
        for pack in packs:
            clips = [(p, *held.pop(p.clip.key)) for p in pack.placements]
            records.append(_write_pack(pack, clips, data_file, dump_dir, opts, tally))

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
        duration = len(audio) / SAMPLE_RATE
        tally.files += 1
        tally.audio_seconds += duration
        if opts.normalize_unicode:
            text = unicodedata.normalize("NFKC", text)
        text = join_cue_lines(text, clip_language)
        if duration > CHUNK_LENGTH:
            tally.skips[LONG_CLIP] += 1
            _say(f"skipped: {where}: {audio_path} lasts {duration:.1f} s; Whisper sees 30 s "
                 f"(cut it, or give it subtitles and use --audio-dir)")
            continue
        if text and clip_language not in NO_SPACE_LANGUAGES:
            text = " " + text  # as Whisper writes the first word
        n_tokens = count_tokens(text) if text else 0
        if packer is not None and text:  # a clip without text stays alone: a no-speech example
            clip = Clip(number, len(audio), text, clip_language, n_tokens)
            if not packer.fits_alone(clip):
                tally.skips[TOO_MANY_TOKENS] += 1
                _say(f"skipped: {where}: {n_tokens} tokens + 2 timestamps > --max-tokens-length "
                     f"{opts.max_tokens_length}")
                continue
            held[number] = (audio_name, audio)
            flush(packer.add(clip))
            continue
        if n_tokens > opts.max_tokens_length:
            tally.skips[TOO_MANY_TOKENS] += 1
            _say(f"skipped: {where}: {n_tokens} tokens > --max-tokens-length {opts.max_tokens_length}")
            continue
        record = Record(audio_path=str(audio_path), text=text, language=clip_language,
                        start=0.0, duration=duration)
        if dump_dir is not None:  # the clip is its own audio: features only
            _write_window(record, audio, dump_dir / "clips", f"{number:06d}_{audio_path.stem}", opts, wav=False)
        records.append(record)
        tally.windows += 1
        tally.speech_seconds += duration if text else 0.0
    if packer is not None:
        flush(packer.finish())
    return records


def _write_pack(pack: Pack, clips: list, data_file: Path, dump_dir: Path, opts: PrepareOptions,
                tally: _Tally) -> Record:
    """Write one packed window (WAV, features, and a .json naming its clips); its record."""
    from .fileio import atomic_write_text

    folder, name = dump_dir / "packs", f"{tally.packs:06d}"
    record = Record(audio_path=str(data_file), text=pack.text, language=pack.language, prompt="", start=0.0,
                    duration=pack.duration_ms / 1000)
    _write_window(record, pack.render([samples for _, _, samples in clips]), folder, name, opts)
    # Which clips, where: the manifest line alone cannot say (source is the clip list).
    listing = {"clip_list": str(data_file.absolute()),
               "clips": [{"line": p.clip.key, "audio": audio_name, "start": p.start_ms / 1000,
                          "end": p.end_ms / 1000} for p, audio_name, _ in clips]}
    atomic_write_text(folder / f"{name}.json", json.dumps(listing, ensure_ascii=False, indent=1) + "\n")
    tally.packs += 1
    tally.packed_clips += len(clips)
    tally.windows += 1
    tally.speech_seconds += pack.speech_seconds
    return record


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

    data_file = Path(opts.data_file) if opts.data_file else None
    if data_file is None and opts.audio_dir and not opts.transcript_dir:
        data_file = next((Path(opts.audio_dir) / name for name in METADATA_FILES
                          if (Path(opts.audio_dir) / name).is_file()), None)
    if data_file is None and opts.without_timestamps:
        raise UserError("--without-timestamps reads clips from --data-file (or an --audio-dir with "
                        "metadata.csv); windows cut from subtitles keep their timestamps, and "
                        "run_finetuning.py can train them without (--no-timestamps-rate)")
    if data_file is None and not opts.audio_dir:
        raise UserError("give --audio-dir (with .srt/.vtt files, or --transcript-dir) or --data-file")
    if opts.pack and data_file is None:
        raise UserError("--pack packs clips from --data-file (or an --audio-dir with metadata.csv); "
                        "recordings with subtitles are already cut into 30 s windows")
    if opts.pack and opts.no_dump:
        raise UserError("--pack writes each packed window's audio into the dump folder: drop --no-dump")

    dump_dir = None
    if not opts.no_dump:
        dump_dir = Path(opts.dump_dir) if opts.dump_dir else output.with_name(output.stem + "_dump")
    count_tokens = make_token_counter(opts.tokenizer_type)
    tally = _Tally()
    if data_file is not None:
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
