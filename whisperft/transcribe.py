"""Transcribe a folder of audio (`whisperft transcribe`), or one file, with either backend.

`transcribe_dir` plans the folder (the audio files under it, the transcripts each gets; files
whose transcripts exist are skipped), reads audio ahead of the model in a background thread
(`_prefetch`) and writes each file's transcripts (writers.py) as soon as it is decoded. The
backends: ct2_backend.py's `CT2Transcriber` (faster-whisper) and decoding.py's `TorchTranscriber`
(this package's PyTorch decoder); `load_transcriber` loads the one asked for, or with `auto` (the
default) the first that can run the model there, saying which. With --batched the torch backend
runs under chunking.py's `ChunkedTranscriber` (each file cut at pauses, its chunks batched).
`transcribe_file` and `transcribe_audio` do one file with a model already loaded.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .audio import AUDIO_EXTENSIONS, AudioError, load_audio, stream_audio
from .chunking import ChunkedTranscriber, vad_module
from .ct2_backend import CT2Transcriber, ct2_compute_type
from .decoding import TorchTranscriber
from .devices import choose_device
from .errors import UserError
from .tokens import language_code
from .transcription import FORMATS, Segment, Transcript, TranscribeOptions
from .vad import snap_to_speech, streamed_speech_intervals
from .writers import write_transcript


# --------------------------------------------------------------------------------------------
# Loading a backend; one file


def _torch_dtype(compute_type: str, device: str) -> torch.dtype:
    if compute_type == "auto":
        return torch.float16 if device.startswith(("cuda", "mps")) else torch.float32
    if compute_type.startswith("int8"):
        raise UserError(f"--compute-type {compute_type} needs --backend ct2 (the torch backend runs "
                        f"float32, float16 or bfloat16)")
    return getattr(torch, compute_type)


def _ct2_unfit(opts: TranscribeOptions, device: str) -> str | None:
    """Why `--backend auto` cannot take CTranslate2 for `opts` on `device` (None: it can)."""
    try:
        import ctranslate2
        import faster_whisper  # noqa: F401
    except ImportError:
        return "faster-whisper is not installed; pip install 'whisperft[ct2]' for the faster backend"
    kind = device.partition(":")[0]
    if kind not in ("cpu", "cuda"):
        return f"CTranslate2 does not run on {kind}"
    if kind == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        return "this CTranslate2 build sees no CUDA GPU"
    compute = ct2_compute_type(opts.compute_type, kind)
    if compute not in ctranslate2.get_supported_compute_types(kind):
        return f"CTranslate2 has no {compute} on {kind}"
    return None


def load_transcriber(opts: TranscribeOptions):
    """The backend `opts` asks for, with its model loaded; `auto`: CTranslate2 where it can run
    the model (faster-whisper installed, a device and compute type it has, a model that converts),
    else the torch backend. Which one, and why, is printed in one line."""
    if opts.beam_size < 1 or opts.best_of < 1 or opts.batch_size < 1:
        raise UserError("--beam-size, --best-of and --batch-size must be at least 1")
    if opts.batched:
        vad_module()  # before the model loads
    if opts.backend == "ct2":
        return CT2Transcriber.load(opts)
    device = choose_device(opts.device)
    if opts.backend == "auto":
        why = _ct2_unfit(opts, device)
        if why is None:
            try:
                runner = CT2Transcriber.load(dataclasses.replace(opts, device=device))
            except UserError as exc:
                why = f"CTranslate2 cannot take this model: {exc}"
            else:
                print(f"backend: ct2 (faster-whisper, {device}, "
                      f"{ct2_compute_type(opts.compute_type, device.partition(':')[0])})", file=sys.stderr)
                return runner
        print(f"backend: torch ({why})", file=sys.stderr)
    from .models import load_model

    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    bundle = load_model(opts.model, device=device, dtype=_torch_dtype(opts.compute_type, device))
    return _torch_runner(bundle, opts)


def _torch_runner(bundle, opts: TranscribeOptions):
    """The torch backend; with --batched, over the chunks of each file (chunking.py), each one
    decoded without the text before it."""
    if opts.batched:
        return ChunkedTranscriber(TorchTranscriber(bundle, dataclasses.replace(opts, condition_on_previous_text=False)))
    return TorchTranscriber(bundle, opts)


def _as_audio(path_or_audio) -> np.ndarray:
    if isinstance(path_or_audio, (str, Path)):
        return load_audio(path_or_audio)
    return np.asarray(path_or_audio, dtype=np.float32)


def transcribe_file(model, path_or_audio, options: TranscribeOptions | None = None) -> list[Segment]:
    """Segments of one file (path, or float32 16 kHz mono samples).

    model: a `WhisperBundle` (PyTorch decoding) or a `faster_whisper.WhisperModel`.
    """
    return transcribe_audio(model, path_or_audio, options).segments


def transcribe_audio(model, path_or_audio, options: TranscribeOptions | None = None) -> Transcript:
    """Like `transcribe_file`, with the language and the duration."""
    options = options or TranscribeOptions()
    from .models import WhisperBundle

    if isinstance(model, WhisperBundle):
        runner = _torch_runner(model, options)
        # a file is read window by window rather than held whole (--batched cuts it whole)
        audio = (runner.open_audio(path_or_audio) if isinstance(path_or_audio, (str, Path))
                 and hasattr(runner, "open_audio") else _as_audio(path_or_audio))
    else:
        runner = CT2Transcriber(model, options)
        audio = _as_audio(path_or_audio)
    ((_, result),) = list(runner.run([(0, audio)]))
    if isinstance(result, Exception):
        raise result
    snap_words_to_speech(result, path_or_audio, options)
    return result


def snap_words_to_speech(result: Transcript, source, options: TranscribeOptions) -> None:
    """With --word-timestamps, segment edges move to the speech's (vad.snap_to_speech; `source`:
    the audio file, read again a block at a time, or its samples). Silero's detector comes with
    faster-whisper: without it, they stay at their first and last words'."""
    if not options.word_timestamps or not any(s.words for s in result.segments):
        return
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return
    chunks = stream_audio(source) if isinstance(source, (str, Path)) else [_as_audio(source)]
    snap_to_speech(result.segments, streamed_speech_intervals(chunks))


# --------------------------------------------------------------------------------------------
# A folder


@dataclass
class _Job:
    audio: Path
    outputs: list[Path]


def find_audio(audio_dir: Path) -> list[Path]:
    """Audio files under `audio_dir` (recursively, sorted; hidden files left out), or the file itself."""
    if audio_dir.is_file():
        return [audio_dir]
    if not audio_dir.is_dir():
        raise UserError(f"{audio_dir}: no such folder")
    return sorted(p for p in audio_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(audio_dir).parts))


def _plan(opts: TranscribeOptions) -> tuple[list[_Job], list[_Job], list[str]]:
    """(jobs to run, jobs already done, problems) for the folder."""
    audio_dir = Path(opts.audio_dir).expanduser()
    save_dir = Path(opts.save_dir).expanduser()
    formats = FORMATS if opts.format == "all" else (opts.format,)
    files = find_audio(audio_dir)
    if not files:
        raise UserError(f"{audio_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    root = audio_dir if audio_dir.is_dir() else audio_dir.parent
    todo, done, problems = [], [], []
    claimed: dict[str, Path] = {}
    for f in files:
        stem = save_dir / f.relative_to(root).with_suffix("")
        # case-folded: on Windows and macOS, A.srt and a.srt are one file
        key = str(f.relative_to(root).with_suffix("")).casefold()
        if key in claimed:
            problems.append(f"{f}: skipped, its transcript would overwrite that of {claimed[key]}")
            continue
        claimed[key] = f
        job = _Job(f, [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats])
        (done if not opts.overwrite and all(p.is_file() for p in job.outputs) else todo).append(job)
    return longest_first(todo, path=lambda job: job.audio), done, problems


def files_at_once(opts: TranscribeOptions, n_files: int) -> int:
    """Files decoded together for a folder of `n_files`: --batch-size, but at most half of
    them, so that at the end no file runs on alone while the others' share of the machine
    waits (3 files on 2 workers: the third decodes on one thread after the other two finish;
    one file at a time with all threads is faster there). With --batched, --batch-size is the
    chunks of one file decoded together, and stays."""
    return opts.batch_size if opts.batched else max(1, min(opts.batch_size, n_files // 2))


def longest_first(items: list, path=lambda item: item) -> list:
    """The order files are decoded in: largest first (size stands for length; `path` gives an
    item's file). Several files are decoded at once, and a long file started last would run on
    alone at the end, its share of the cores idle; started first, the short ones fill in
    around it."""
    def size(item) -> int:
        try:
            return path(item).stat().st_size
        except OSError:  # reported when it is read
            return 0
    return sorted(items, key=size, reverse=True)


def _load_samples(path: Path, stop: threading.Event) -> np.ndarray:
    return load_audio(path)


def _prefetch(jobs: list[_Job], ahead: int, load=_load_samples) -> Iterator[tuple[_Job, object]]:
    """Read audio in a background thread, `ahead` files in advance of the model: each job with
    `load(path, stop)` (its samples, or the torch backend's `open_audio`), or with its AudioError.
    Leaving early (Ctrl-C) drops the files not started and sets `stop` for the one under way."""
    stop = threading.Event()

    def work(job: _Job):
        try:
            return job, load(job.audio, stop)
        except AudioError as exc:
            return job, exc

    pool = ThreadPoolExecutor(max_workers=1)
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(work, job))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:  # left early (closed, Ctrl-C): the file still being read stops too
        stop.set()
        raise
    finally:
        # Run out normally, `stop` stays clear: the torch backend reads its last files
        # window by window after taking them from here.
        pool.shutdown(wait=True, cancel_futures=True)


def transcribe_dir(opts: TranscribeOptions) -> int:
    """Transcribe every audio file under `opts.audio_dir` into `opts.save_dir`.

    Returns the exit code: 0 if every file was transcribed (or already was), 1 if any failed.
    """
    from tqdm import tqdm

    if not opts.audio_dir or not opts.save_dir:
        raise UserError("transcribe needs --audio-dir and --save-dir")
    language_code(opts.language)  # a misspelt language fails before the model loads
    todo, done, problems = _plan(opts)
    for line in problems:
        print(line, file=sys.stderr)
    failed = len(problems)
    n_ok, audio_seconds, t0 = 0, 0.0, time.perf_counter()
    if todo:
        runner = load_transcriber(dataclasses.replace(opts, batch_size=files_at_once(opts, len(todo))))
        t0 = time.perf_counter()  # real-time factor of the decoding, model loading left out
        with tqdm(total=len(todo), unit="file", desc="transcribing", file=sys.stderr, disable=None) as bar:
            # the torch backend reads each file in a stream (never held whole); ct2 takes samples
            load = getattr(runner, "open_audio", _load_samples)
            for job, result in runner.run(_prefetch(todo, ahead=max(1, opts.batch_size), load=load)):
                bar.update(1)
                if isinstance(result, Exception):
                    if not isinstance(result, UserError):
                        raise result
                    tqdm.write(f"skipped {result}", file=sys.stderr)
                    failed += 1
                    continue
                snap_words_to_speech(result, job.audio, opts)
                for path in job.outputs:
                    write_transcript(path, result)
                n_ok += 1
                audio_seconds += result.duration
    wall = time.perf_counter() - t0
    speed = f" ({audio_seconds / wall:.1f}x real time)" if n_ok and wall > 0 else ""
    print(f"transcribed {n_ok} file(s), {len(done)} already done, {failed} failed: "
          f"{audio_seconds:.1f} s of audio in {wall:.1f} s{speed} -> {opts.save_dir}", file=sys.stderr)
    return 1 if failed else 0
