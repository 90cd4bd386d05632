"""Whisper's log-mel spectrogram, in torch (batched, 80 or 128 bins).

One padding convention is used for training and inference alike, faster-whisper's (and
jumon/whisper-finetuning's): the log-mel is computed from the real audio plus 10 ms of
zeros (`padding=HOP_LENGTH`), and a window shorter than 30 s is then padded with 0.0 *in
log-mel space* to N_FRAMES. Transformers' feature extractor instead pads the audio to 30 s
before the STFT; on short clips the two conventions give different transcripts, so mixing
them between training and inference hurts. Transformers' long-form `generate` also pads the
last segment with 0.0, so our model, our CTranslate2 export and faster-whisper all see the
same input. On a full 30 s window the conventions agree (that is where we compare).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .audio import HOP_LENGTH, N_FFT, N_FRAMES, SAMPLE_RATE, AudioError, pad_or_trim

LOG_MEL_FLOOR = 1e-10  # power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the loudest bin (80 dB)


@lru_cache(maxsize=None)
def mel_filters(n_mels: int) -> torch.Tensor:
    """Slaney-style mel filterbank as Whisper uses it. Returns shape (n_mels, N_FFT // 2 + 1)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )  # (n_freq, n_mels)
    return torch.from_numpy(np.ascontiguousarray(fb.T, dtype=np.float32))


def log_mel_spectrogram(
    audio: np.ndarray | torch.Tensor,
    n_mels: int = 80,
    padding: int = HOP_LENGTH,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Log-mel of `audio`.

    audio: shape (n_samples,) or (batch, n_samples), float32 at 16 kHz.
    padding: zero samples appended before the STFT (HOP_LENGTH = faster-whisper's
        convention; 0 reproduces transformers' WhisperFeatureExtractor on the same samples).
    Returns: float32, shape (n_mels, n_frames) or (batch, n_mels, n_frames),
        n_frames = (n_samples + padding) // HOP_LENGTH.
    """
    x = torch.as_tensor(audio, dtype=torch.float32)
    if device is not None:
        x = x.to(device)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None]
    if padding > 0:
        x = torch.nn.functional.pad(x, (0, padding))
    window = torch.hann_window(N_FFT, device=x.device)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # the last frame looks past the end: Whisper drops it
    mel = mel_filters(n_mels).to(x.device) @ power
    log_spec = torch.clamp(mel, min=LOG_MEL_FLOOR).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec[0] if squeeze else log_spec


def window_features(audio: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Log-mel of one window of at most 30 s, padded with 0.0 (or cut) to N_FRAMES.

    Returns: shape (n_mels, 3000).
    """
    return pad_or_trim(log_mel_spectrogram(audio, n_mels), N_FRAMES, axis=-1, value=0.0)


# --------------------------------------------------------------------------------------------
# Long recordings: the same log-mel, a block of frames at a time


BLOCK_FRAMES = N_FRAMES  # frames computed together (always this many: see `LongLogMel._block`)


class LongLogMel:
    """`log_mel_spectrogram(audio, n_mels, padding)` of a recording of any length, served a
    stretch of frames at a time, with memory bounded whatever the length: neither the
    recording's STFT nor its log-mel (nor, when read from a file, its samples) is ever held whole.

    Whisper's log-mel is clamped at 8 (log10 units) below its loudest bin *over the whole input*
    (openai-whisper and faster-whisper compute the whole file's log-mel, then slice 30 s windows
    out of it), so per-window log-mels would differ wherever a window is quieter than the file.
    Hence two passes: the first (here, in __init__) reads the whole recording once for that peak,
    a block at a time; the second (`frames`) computes the requested frames from the samples with
    the same framing (reflect padding at the ends, `padding` zeros appended) and that peak.

    The frames equal the whole-file computation's (tests/test_features.py): a frame's STFT
    depends only on its 400 samples, and the mel projection of a block of BLOCK_FRAMES frames
    gives the same floats as the whole file's, where a few frames at a time need not (BLAS may
    take another path for a small matrix: a last-bit difference); so a block is always
    BLOCK_FRAMES frames, the last one reaching back from the end. A recording of at most
    BLOCK_FRAMES frames is computed whole, by `log_mel_spectrogram` itself (`whole`).
    Cost: the recording is decoded twice and its STFT computed about twice (once per pass, and
    windows overlap where `seek` moves less than 30 s).

    reader: returns a fresh iterator over the recording's float32 samples, in chunks of any size
        (called once per pass, and again if `frames` is asked to go back before what it holds);
        e.g. `lambda: [audio]` for samples already in memory, `lambda: stream_audio(path)`.
    source: names the recording in errors.
    """

    def __init__(self, reader, n_mels: int = 80, padding: int = HOP_LENGTH,
                 device: str | torch.device | None = None, source: str = "audio"):
        self.reader, self.n_mels, self.padding, self.source = reader, n_mels, padding, source
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.whole: torch.Tensor | None = None  # the log-mel, for a recording of one block or less
        self.n_samples: int | None = None  # known once the first pass has read everything
        self._samples = _SampleWindow(reader)
        self._scan()

    @property
    def n_frames(self) -> int:
        """Frames of the log-mel: (n_samples + padding) // HOP_LENGTH."""
        return (self.n_samples + self.padding) // HOP_LENGTH

    def _scan(self) -> None:
        """First pass: the peak of the log10-mel over the whole recording, and its length."""
        s, B = self._samples, BLOCK_FRAMES
        s.restart()
        peak, start = None, 0
        while True:
            # frames [start, start + B) read samples up to HOP * (start + B - 1) + N_FFT // 2
            # (exclusive): with those read, none of them reaches the (unknown) end
            need = HOP_LENGTH * (start + B - 1) + N_FFT // 2
            if s.fill(need) < need:
                break
            block = self._block(start).amax()
            peak = block if peak is None else torch.maximum(peak, block)
            start += B
            s.drop_before(HOP_LENGTH * (start - B) - N_FFT // 2)  # the last block may reach back B
        self.n_samples = s.end
        if peak is None and self.n_frames <= B:  # nothing was dropped: everything read is held
            self.whole = log_mel_spectrogram(s.data, self.n_mels, self.padding, self.device)
            self._samples = None
            return
        while start < self.n_frames:  # the rest, the last block reaching back from the end
            first = min(start, self.n_frames - B)
            block = self._block(first).amax()
            peak = block if peak is None else torch.maximum(peak, block)
            start = first + B
        self._floor = peak - DYNAMIC_RANGE
        s.close()  # `frames` reads again from the start

    def _block(self, first: int) -> torch.Tensor:
        """log10-mel (before the clamp) of frames [first, first + BLOCK_FRAMES), shape
        (n_mels, BLOCK_FRAMES), from the samples held."""
        s = self._samples
        # the samples (of audio + `padding` zeros, reflect-padded by N_FFT // 2 at both ends, as
        # torch.stft(center=True) does) that frames [first, first + B) look at, as audio indices
        lo = HOP_LENGTH * first - N_FFT // 2
        hi = HOP_LENGTH * (first + BLOCK_FRAMES - 1) + N_FFT // 2
        if lo >= s.start and hi <= s.end and (self.n_samples is None or hi <= self.n_samples):
            x = s.data[lo - s.start:hi - s.start]  # inside the audio: a view
        else:
            index = np.abs(np.arange(lo, hi))  # reflected at the start
            if self.n_samples is not None:
                length = self.n_samples + self.padding
                index = np.where(index >= length, 2 * (length - 1) - index, index)  # and at the end
            real = index < (self.n_samples if self.n_samples is not None else s.end)
            if real.any() and (index[real].min() < s.start or index[real].max() >= s.end):
                raise RuntimeError("LongLogMel: samples needed are not held")  # a bug, not bad input
            x = np.zeros(len(index), dtype=np.float32)  # the appended `padding` zeros stay 0
            x[real] = s.data[index[real] - s.start]
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        window = torch.hann_window(N_FFT, device=x.device)
        stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        mel = mel_filters(self.n_mels).to(x.device) @ (stft.abs() ** 2)
        return torch.clamp(mel, min=LOG_MEL_FLOOR).log10()

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Log-mel frames [start, stop), stop - start <= BLOCK_FRAMES: equal to
        `log_mel_spectrogram(audio, n_mels, padding)[:, start:stop]`. Reading moves forward:
        asking for frames before the last block asked for reads the recording again."""
        if self.whole is not None:
            return self.whole[:, start:stop]
        if not 0 <= start < stop <= self.n_frames or stop - start > BLOCK_FRAMES:
            raise ValueError(f"frames [{start}, {stop}) of {self.n_frames}, at most {BLOCK_FRAMES}")
        s = self._samples
        first = min(start, self.n_frames - BLOCK_FRAMES)
        lo = max(HOP_LENGTH * first - N_FFT // 2, 0)
        hi = min(HOP_LENGTH * (first + BLOCK_FRAMES - 1) + N_FFT // 2, self.n_samples)
        if s.data is None or lo < s.start:
            s.restart()
        s.drop_before(lo)
        if s.fill(hi) < hi:
            raise AudioError(f"{self.source}: the audio ended early on a second reading "
                             f"(it changed while being transcribed?)")
        log_spec = torch.maximum(self._block(first), self._floor)
        return ((log_spec + 4.0) / 4.0)[:, start - first:stop - first]

    def close(self) -> None:
        """Stop reading (closes the file); `frames` reopens it if asked again."""
        if self._samples is not None:
            self._samples.close()


class _SampleWindow:
    """A stretch `data` = samples[start:end] of a recording read in order by `reader()`."""

    def __init__(self, reader):
        self.reader = reader
        self._it = None
        self.data: np.ndarray | None = None
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + (len(self.data) if self.data is not None else 0)

    def restart(self) -> None:
        self.close()
        self._it = iter(self.reader())
        self.data, self.start = np.zeros(0, dtype=np.float32), 0

    def fill(self, upto: int) -> int:
        """Read until samples[:upto] have been read (or the recording ends); return `end`."""
        pending, end = [], self.end
        while end < upto and self._it is not None:
            try:
                chunk = next(self._it)
            except StopIteration:
                self._it = None
                break
            chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
            pending.append(chunk)
            end += chunk.size
        if pending:  # one copy per fill, not per chunk; samples already in memory: no copy at all
            self.data = pending[0] if len(self.data) == 0 and len(pending) == 1 else np.concatenate([self.data, *pending])
        return self.end

    def drop_before(self, index: int) -> None:
        cut = min(max(index - self.start, 0), len(self.data))
        if cut:
            self.data, self.start = self.data[cut:], self.start + cut

    def close(self) -> None:
        it, self._it, self.data, self.start = self._it, None, None, 0
        if it is not None and hasattr(it, "close"):
            it.close()  # a generator over a file: closes the file
