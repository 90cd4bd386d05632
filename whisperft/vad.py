"""Where a recording holds speech: Silero's voice-activity detector, as faster-whisper ships it
(ONNX, run by onnxruntime; no torch model to download); and timed segments moved to its edges."""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from .audio import SAMPLE_RATE
from .errors import UserError

# Tight edges rather than faster-whisper's transcription defaults (2 s of silence before a cut,
# 400 ms of padding): the intervals are compared with cue times, sentence by sentence.
MIN_SILENCE = 0.15  # seconds of silence that end a stretch of speech
MIN_SPEECH = 0.1  # seconds: shorter detections are dropped (clicks, breaths)


def speech_intervals(audio: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of speech in 16 kHz mono `audio`."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        raise UserError("voice-activity detection needs faster-whisper (Silero VAD): "
                        "pip install 'whisperft[ct2]'") from None
    options = VadOptions(min_silence_duration_ms=int(MIN_SILENCE * 1000), speech_pad_ms=0,
                         min_speech_duration_ms=int(MIN_SPEECH * 1000))
    found = get_speech_timestamps(np.asarray(audio, dtype=np.float32), options, sampling_rate=SAMPLE_RATE)
    return [(chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE) for chunk in found]


def speech_share(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """The fraction of [start, end) covered by the speech `intervals`."""
    if end <= start:
        return 0.0
    covered = sum(max(0.0, min(end, e) - max(start, s)) for s, e in intervals)
    return min(1.0, covered / (end - start))


VAD_BLOCK = 600.0  # seconds of audio given to the detector at once: a long file is never held whole
SNAP_LIMIT = 1.0  # seconds: the most a segment edge moves to the edge of the speech it is in


def streamed_speech_intervals(chunks: Iterable[np.ndarray]) -> list[tuple[float, float]]:
    """`speech_intervals` of audio given in chunks (audio.stream_audio's), a block at a time."""
    found: list[tuple[float, float]] = []
    block: list[np.ndarray] = []
    held, offset = 0, 0.0

    def detect():
        audio = np.concatenate(block)
        found.extend((offset + a, offset + b) for a, b in speech_intervals(audio))
        return offset + audio.size / SAMPLE_RATE

    for chunk in chunks:
        block.append(chunk)
        held += chunk.size
        if held >= VAD_BLOCK * SAMPLE_RATE:
            offset, block, held = detect(), [], 0
    if block:
        detect()
    return found


def snap_to_speech(segments: list, intervals: list[tuple[float, float]]) -> None:
    """Move each segment with words (transcription.Segment) to the edges of the speech they are
    in: its start (and first word's) to the onset of the stretch of speech its first word
    overlaps, not before the previous segment's end; its end (and last word's) to the end of the
    stretch its last word overlaps, not after the next segment's first word. Alignment places a
    word within a few frames of its sound, but a word the model is unsure of (a misheard name) can
    start 0.5 s late, or reach back into the silence before it; the detector's edges are sharp."""
    for i, seg in enumerate(segments):
        if not seg.words:
            continue
        first, last = seg.words[0], seg.words[-1]
        floor = segments[i - 1].end if i else 0.0
        after = segments[i + 1] if i + 1 < len(segments) else None
        ceiling = (after.words[0].start if after.words else after.start) if after else float("inf")
        over = [(a, b) for a, b in intervals if b > first.start and a < first.end]
        if over:
            start = round(max(over[0][0], floor), 3)
            if abs(start - seg.start) <= SNAP_LIMIT and start < first.end:
                seg.start = start
                seg.words[0] = dataclasses.replace(first, start=start)
        last = seg.words[-1]
        over = [(a, b) for a, b in intervals if b > last.start and a < last.end]
        if over:
            end = round(min(over[-1][1], ceiling), 3)
            if abs(end - seg.end) <= SNAP_LIMIT and end > last.start:
                seg.end = end
                seg.words[-1] = dataclasses.replace(last, end=end)
