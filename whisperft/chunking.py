"""`--batched` on the torch backend: each file cut at voice-activity pauses into chunks of at
most 30 s, the chunks decoded together as one batch, their times moved back into the file's.

The cut is faster-whisper's `BatchedInferencePipeline`'s (its Silero VAD settings and its
`collect_chunks`: the stretches of speech, silences between them left out, joined into chunks
up to 30 s; `SpeechTimestampsMap` maps a chunk's times back), so `--backend ct2 --batched`, which
runs that pipeline, and `--backend torch --batched` decode the same audio. A chunk is decoded
without the text before it: the chunks of a file are independent, which is what lets them share
a batch (the throughput mode's trade-off). No torch.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Iterable, Iterator

import numpy as np

from .audio import SAMPLE_RATE
from .errors import UserError
from .transcription import Segment, Transcript

CHUNK_SECONDS = 30  # one Whisper window
# faster-whisper's BatchedInferencePipeline's VAD settings (its threshold 0.5 and 400 ms padding
# stay); given to that pipeline as they are, so that both backends cut a file alike
VAD_PARAMETERS = {"min_silence_duration_ms": 160}


def vad_module():
    """faster_whisper.vad (a UserError without faster-whisper)."""
    try:
        from faster_whisper import vad
    except ImportError:
        raise UserError("--batched cuts files at pauses with Silero's voice-activity detector, "
                        "which comes with faster-whisper: pip install 'whisperft[ct2]'") from None
    return vad


@dataclasses.dataclass
class Chunks:
    """A file cut for batched decoding: `audio[i]` (<= 30 s of speech) starts `offsets[i]`
    seconds into the file's speech with its silences left out; `speech` maps such times back."""

    audio: list[np.ndarray]
    offsets: list[float]
    speech: object  # faster_whisper.vad.SpeechTimestampsMap
    duration: float


def cut(audio: np.ndarray) -> Chunks:
    """The chunks of 16 kHz mono `audio` (none if the detector hears no speech)."""
    vad = vad_module()
    audio = np.asarray(audio, dtype=np.float32)
    options = vad.VadOptions(max_speech_duration_s=CHUNK_SECONDS, **VAD_PARAMETERS)
    stretches = vad.get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    duration = len(audio) / SAMPLE_RATE
    if not stretches:
        return Chunks([], [], None, duration)
    pieces, meta = vad.collect_chunks(audio, stretches, sampling_rate=SAMPLE_RATE, max_duration=CHUNK_SECONDS)
    kept = [(a, m["offset"]) for a, m in zip(pieces, meta) if a.size]
    return Chunks([a for a, _ in kept], [o for _, o in kept],
                  vad.SpeechTimestampsMap(stretches, SAMPLE_RATE), duration)


def restore_times(segments: list[Segment], chunks: Chunks, index: int) -> list[Segment]:
    """`segments` of chunk `index` (times from the chunk's start) in the file's time, as
    faster-whisper's `restore_speech_timestamps` does: a word is placed by the stretch of speech
    its middle falls in, a segment by its words (else by its own start and end)."""
    offset, speech, out = chunks.offsets[index], chunks.speech, []
    for seg in segments:
        if seg.words:
            words = []
            for w in seg.words:
                stretch = speech.get_chunk_index(offset + (w.start + w.end) / 2)
                words.append(dataclasses.replace(w, start=speech.get_original_time(offset + w.start, stretch),
                                                 end=speech.get_original_time(offset + w.end, stretch)))
            start, end = words[0].start, words[-1].end
        else:
            words = seg.words
            start = speech.get_original_time(offset + seg.start)
            end = speech.get_original_time(offset + seg.end, is_end=True)
        end = min(end, chunks.duration)
        out.append(dataclasses.replace(seg, start=round(min(start, end), 3), end=round(end, 3), words=words))
    return out


class ChunkedTranscriber:
    """`run` as the backends have it, over a torch `TorchTranscriber` (given options with
    condition_on_previous_text off): each file's chunks go to it as items of their own, so that
    `batch_size` chunks, of one file or of the next ones, are decoded in one step."""

    def __init__(self, runner):
        self.runner = runner

    def run(self, items: Iterable[tuple[object, np.ndarray | Exception]]
            ) -> Iterator[tuple[object, Transcript | Exception]]:
        files: dict[int, dict] = {}  # per file being decoded: key, Chunks, results by chunk
        whole: deque = deque()  # files with nothing to decode: unreadable, or without speech

        def chunk_items():
            for n, (key, audio) in enumerate(items):
                if isinstance(audio, Exception):
                    whole.append((key, audio))
                    continue
                chunks = cut(audio)
                if not chunks.audio:
                    whole.append((key, Transcript([], self.runner.language or "en", chunks.duration)))
                    continue
                files[n] = {"key": key, "chunks": chunks, "got": {}}
                for i, piece in enumerate(chunks.audio):
                    yield (n, i), piece

        for (n, i), result in self.runner.run(chunk_items()):
            while whole:
                yield whole.popleft()
            entry = files[n]
            entry["got"][i] = result
            if len(entry["got"]) == len(entry["chunks"].audio):
                del files[n]
                yield entry["key"], _assemble(entry["chunks"], entry["got"])
        while whole:
            yield whole.popleft()


def _assemble(chunks: Chunks, parts: dict[int, Transcript | Exception]) -> Transcript | Exception:
    """A file's transcript from its chunks' (the first failure, if one failed)."""
    failed = [p for p in parts.values() if isinstance(p, Exception)]
    if failed:
        return failed[0]
    segments: list[Segment] = []
    for i in range(len(chunks.audio)):
        segments += restore_times(parts[i].segments, chunks, i)
    return Transcript(segments, parts[0].language, chunks.duration)
