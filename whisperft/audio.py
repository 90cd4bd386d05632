"""Decoding media to Whisper's input: 16 kHz mono float32. Only this module knows how.

PyAV bundles FFmpeg's libraries, so no `ffmpeg` binary is needed (Windows included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import UserError

SAMPLE_RATE = 16000  # Hz, what every Whisper model is trained on
CHUNK_LENGTH = 30  # seconds of audio the encoder sees at once
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one 30 s window
HOP_LENGTH = 160  # samples between log-mel frames (10 ms)
N_FFT = 400  # samples per STFT window (25 ms)
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 log-mel frames in one window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 log-mel frames per second
TIME_PRECISION = 0.02  # seconds per timestamp token (one encoder output position)

AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm",
    ".mp4", ".mkv", ".mov", ".avi",
)


class AudioError(UserError):
    """A file that cannot be decoded as audio; the message names the file."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, data: bytes | None = None) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 at `sample_rate`; with `data`,
    decode those bytes (an audio file held in memory, e.g. a dataset row) and name them `path`.

    Returns: shape (n_samples,), values in [-1, 1].
    Raises AudioError (one line naming the file) for missing, empty or undecodable files.
    """
    buffer: _SampleBuffer | None = None

    def sized(expected: int | None) -> None:
        nonlocal buffer
        buffer = _SampleBuffer(expected)

    try:
        for samples in _decode(path, sample_rate, sized, data):
            buffer.append(samples)
        audio = buffer.result() if buffer is not None else np.zeros(0, np.float32)
    except MemoryError:
        raise AudioError(f"{path}: not enough memory to decode this file") from None
    if audio.size == 0:
        raise AudioError(f"{path}: no audio samples could be decoded")
    return audio


def stream_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """The samples `load_audio(path)` returns, in order, a few decoded frames at a time (float32
    arrays of any length): a recording of any length read without being held whole. The same
    AudioErrors, raised where they are met (a file that decodes to nothing: at the end)."""
    n = 0
    for samples in _decode(path, sample_rate):
        n += samples.size
        yield samples
    if n == 0:
        raise AudioError(f"{path}: no audio samples could be decoded")


def _decode(path: str | Path, sample_rate: int, on_open=None, data: bytes | None = None) -> Iterator[np.ndarray]:
    """Mono float32 chunks of the first audio stream of `path` (or of the bytes `data`, named
    `path` in messages); `on_open(expected_samples)` is called once the stream is found.
    FFmpeg's errors become one-line AudioErrors."""
    import io

    import av  # imported here so that light modules (subtitles, metrics) never pay for it

    if data is None:
        path = Path(path)
        if not path.is_file():
            raise AudioError(f"{path}: no such audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: file is empty")
    elif not data:
        raise AudioError(f"{path}: audio is empty")
    try:
        with av.open(str(path) if data is None else io.BytesIO(data), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio stream in this file")
            stream = container.streams.audio[0]
            if on_open is not None:
                on_open(_expected_samples(container, stream, sample_rate))
            resampler = None
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = _resampler_for(frame, sample_rate)
                for out in resampler.resample(frame):
                    yield _mono(out)
            if resampler is not None:
                for out in resampler.resample(None):  # flush the resampler's buffered tail
                    yield _mono(out)
    except (AudioError, MemoryError):
        raise
    except Exception as exc:  # PyAV raises many types (InvalidDataError, EOFError, ...)
        # FFmpegError's str() repeats the errno and the path: its strerror says it once
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        reason = reason.splitlines()[0][:200]
        raise AudioError(f"{path}: cannot decode audio ({reason})") from None


def resample_audio(samples: np.ndarray, from_rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float samples at `from_rate` Hz as float32 at `sample_rate`, through FFmpeg's
    resampler (the one decoding uses)."""
    import av

    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    if from_rate == sample_rate or samples.size == 0:
        return samples.reshape(-1)
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks = [_mono(out) for out in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _resampler_for(frame, sample_rate: int):
    """Stereo is kept as two planes and averaged here (`_mono`); FFmpeg's own stereo -> mono
    mix adds the channels at -3 dB each, so a loud recording would leave [-1, 1] (x1.41).
    Other layouts (5.1: the centre channel carries the speech) take FFmpeg's mono mix."""
    import av

    stereo = len(frame.layout.channels) == 2
    return av.AudioResampler(format="fltp" if stereo else "flt", layout="stereo" if stereo else "mono",
                             rate=sample_rate)


def _mono(frame) -> np.ndarray:
    planes = frame.to_ndarray()  # (2, n) planar stereo, or (1, n) mono
    if planes.shape[0] == 2:
        return (planes[0] + planes[1]) * np.float32(0.5)
    return planes.reshape(-1)


MAX_PREALLOCATED_SECONDS = 24 * 3600  # a header claiming more is not believed up front


def _expected_samples(container, stream, sample_rate: int) -> int | None:
    """Samples the decoded audio should have, from the stream's (or container's) duration."""
    import av

    seconds = None
    try:
        if stream.duration is not None and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if seconds is None or not 0 < seconds < float("inf"):
        return None
    seconds = min(seconds, MAX_PREALLOCATED_SECONDS)
    # 0.5% + 1 s of slack: codec priming, resampler tail, durations rounded in headers
    return int(seconds * 1.005 * sample_rate) + sample_rate


class _SampleBuffer:
    """Decoded samples gathered in one growing array, so an hours-long recording is held once
    (not as a list of chunks plus their concatenation: twice). It starts at the expected length
    and, when a header under-reports (or has no duration), doubles with `ndarray.resize`: a
    realloc, which for large blocks moves pages (mremap) rather than copying them."""

    INITIAL = 60 * SAMPLE_RATE  # samples, when the file does not say how long it is

    def __init__(self, expected: int | None):
        try:
            self.array = np.empty(expected or self.INITIAL, dtype=np.float32)  # pages touched as filled
        except MemoryError:  # a header claiming more than this machine has: grow as decoded
            self.array = np.empty(self.INITIAL, dtype=np.float32)
        self.filled = 0

    def append(self, samples: np.ndarray) -> None:
        end = self.filled + samples.size
        if end > self.array.size:
            # no views of self.array exist (none is handed out before result()), so refcheck
            # can be off; it would refuse when a debugger or traceback holds a reference
            self.array.resize(max(end, 2 * self.array.size), refcheck=False)
        self.array[self.filled:end] = samples
        self.filled = end

    def result(self) -> np.ndarray:
        self.array.resize(self.filled, refcheck=False)  # shrink in place, no copy
        return self.array


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM WAV, atomically (temp file + rename)."""
    import wave

    from .fileio import atomic_write

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with atomic_write(path) as fh, wave.open(fh, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def silence_spans(audio: np.ndarray, spans, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """`audio` with the samples of each (start, end) span (seconds from its first sample) set
    to 0; a copy when there is any, `audio` itself when `spans` is empty."""
    if not spans:
        return audio
    out = np.array(audio, dtype=np.float32, copy=True)
    for start, end in spans:
        out[max(int(round(start * sample_rate)), 0):max(int(round(end * sample_rate)), 0)] = 0.0
    return out


def pad_or_trim(array, length: int = N_SAMPLES, axis: int = -1, value: float = 0.0):
    """Pad with `value` or cut `array` (numpy or torch) to `length` along `axis`."""
    import torch

    size = array.shape[axis]
    if size > length:
        index = [slice(None)] * array.ndim
        index[axis] = slice(0, length)
        return array[tuple(index)]
    if size < length:
        if isinstance(array, torch.Tensor):
            pad = [0, 0] * array.ndim
            pad[2 * (array.ndim - 1 - (axis % array.ndim)) + 1] = length - size
            return torch.nn.functional.pad(array, pad, value=value)
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, length - size)
        return np.pad(array, widths, constant_values=value)
    return array
