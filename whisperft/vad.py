"""Where a recording holds speech: Silero's voice-activity detector, as faster-whisper ships it
(ONNX, run by onnxruntime; no torch model to download)."""

from __future__ import annotations

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
