"""The CTranslate2 backend (`--backend ct2`): `CT2Transcriber` runs faster-whisper's own
`WhisperModel.transcribe` on a CTranslate2 form of the model, several files concurrently."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import audio_ctx
from .audio import SAMPLE_RATE
from .chunking import VAD_PARAMETERS
from .errors import UserError
from .tokens import language_code
from .transcription import (PROMPT_RESET_TEMPERATURE, Segment, Transcript, TranscribeOptions, Word, check_language,
                            Stopped)


def ct2_compute_type(compute_type: str, device: str) -> str:
    if compute_type == "auto":
        return "float16" if device == "cuda" else "float32"
    return compute_type


def _ct2_marked(folder: Path) -> bool:
    """Whether a CTranslate2 folder's model was trained for a cut context (saving.save_ct2
    copies the mark from the generation config into config.json)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get(audio_ctx.CONFIG_MARK) == "auto"


def _cut_context_class(whisper_model_class, policy: int | str):
    """faster-whisper's WhisperModel encoding only the positions each window's audio needs.

    faster-whisper pads every window to 3000 log-mel frames with exact zeros (a real frame is
    never all zeros: the log-mel is clamped to 8 below its peak and shifted), so the trailing
    all-zero frames are the padding and what is left is the window's audio.
    """

    class CutContextWhisperModel(whisper_model_class):
        def encode(self, features: np.ndarray):
            # features: (n_mels, frames), or (batch, n_mels, frames)
            nonzero = np.flatnonzero(np.abs(features).reshape(-1, features.shape[-1]).max(axis=0) > 0)
            content = int(nonzero[-1]) + 1 if nonzero.size else 0
            n = audio_ctx.positions_to_use(policy, content)
            return super().encode(np.ascontiguousarray(features[..., : n * audio_ctx.FRAMES_PER_POSITION]))

    return CutContextWhisperModel


class CT2Transcriber:
    """The same job with faster-whisper: `run` decodes `batch_size` files concurrently (one
    CTranslate2 worker each; each file is decoded exactly as `WhisperModel.transcribe` does)."""

    def __init__(self, model, options: TranscribeOptions | None = None, workers: int | None = None):
        self.opts = options or TranscribeOptions()
        # files decoded at once: the model's CTranslate2 workers (one file at a time with --batched)
        self.workers = workers or (1 if self.opts.batched else max(1, self.opts.batch_size))
        self.model = model  # faster_whisper.WhisperModel
        self.language = check_language(language_code(self.opts.language), self.opts.task,
                                        model.model.is_multilingual, "this model")

    @classmethod
    def load(cls, options: TranscribeOptions) -> "CT2Transcriber":
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError:
            raise UserError("--backend ct2 needs faster-whisper: pip install 'whisperft[ct2]'") from None
        device = options.device
        if device in (None, "", "auto"):
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        device_type, _, index = device.partition(":")
        if device_type == "mps":
            raise UserError("--backend ct2 runs on CUDA or the CPU (CTranslate2 has no Apple GPU "
                            "support): use --backend torch --device mps, or --device cpu")
        from .models import ct2_model_dir

        folder = ct2_model_dir(options.model)
        # --batched: one file at a time, its chunks batched inside CTranslate2
        workers = 1 if options.batched else max(1, options.batch_size)
        threads = 0
        if device_type == "cpu":  # the cores are shared among the workers, not each given them all
            cores = options.threads if options.threads > 0 else (os.cpu_count() or 1)
            workers = min(workers, cores)
            threads = max(1, cores // workers)
        policy = audio_ctx.resolve(options.audio_ctx, _ct2_marked(folder), options.force, options.model)
        if policy is not None:
            WhisperModel = _cut_context_class(WhisperModel, policy)
        try:
            model = WhisperModel(str(folder), device=device_type, device_index=int(index or 0),
                                 compute_type=ct2_compute_type(options.compute_type, device_type),
                                 cpu_threads=threads, num_workers=workers, local_files_only=True)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{folder}: faster-whisper cannot load it ({str(exc).splitlines()[0]})") from None
        return cls(model, options, workers)

    def _decode(self, audio: np.ndarray):
        """faster-whisper's (segments, info) for `audio`."""
        o = self.opts
        if o.batched:
            from faster_whisper import BatchedInferencePipeline

            # one segment a chunk, as the pipeline decodes by default: asked for timestamps, it
            # drops a chunk's last sentence whenever the model leaves it open (there is no next
            # window to finish it in), which cost 7 points of WER on bench_transcribe's set
            return BatchedInferencePipeline(self.model).transcribe(
                audio, language=self.language, task=o.task, beam_size=max(1, o.beam_size),
                best_of=max(1, o.best_of), temperature=o.temperature, initial_prompt=o.initial_prompt,
                word_timestamps=o.word_timestamps, without_timestamps=True, batch_size=max(1, o.batch_size),
                vad_parameters=dict(VAD_PARAMETERS))
        return self.model.transcribe(
            audio, language=self.language, task=o.task, beam_size=max(1, o.beam_size),
            best_of=max(1, o.best_of), temperature=list(o.temperatures()),
            compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.logprob_threshold, no_speech_threshold=o.no_speech_threshold,
            condition_on_previous_text=o.condition_on_previous_text,
            prompt_reset_on_temperature=PROMPT_RESET_TEMPERATURE, initial_prompt=o.initial_prompt,
            word_timestamps=o.word_timestamps)

    def _one(self, audio: np.ndarray, stop: threading.Event | None = None) -> Transcript:
        segments, info = self._decode(audio)
        duration = len(audio) / SAMPLE_RATE
        out = []
        for s in segments:  # each one decodes a window (segments is a generator)
            if stop is not None and stop.is_set():
                raise Stopped
            words = None if s.words is None else [
                Word(round(float(w.start), 3), round(float(w.end), 3), w.word, round(float(w.probability), 4)) for w in s.words]
            out.append(Segment(round(min(s.start, s.end, duration), 3), round(min(s.end, duration), 3), s.text,
                               list(s.tokens), s.avg_logprob, s.no_speech_prob, s.temperature,
                               s.compression_ratio, words))
        return Transcript(out, info.language, duration)

    def run(self, items: Iterable[tuple[object, np.ndarray | Exception]]
            ) -> Iterator[tuple[object, Transcript | Exception]]:
        stop = threading.Event()

        def work(item):
            key, audio = item
            if isinstance(audio, Exception):
                return key, audio
            return key, self._one(audio, stop)

        workers = self.workers
        if workers == 1:
            yield from map(work, items)
            return
        pool = ThreadPoolExecutor(max_workers=workers)
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= 2 * workers:  # bounded look-ahead: audio is held in memory
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            # Ctrl-C (or a caller that stops early): the files not started are dropped and those
            # being decoded stop at their next window, instead of all queued being finished first
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
