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

from .audio import HOP_LENGTH, N_FFT, N_FRAMES, SAMPLE_RATE, pad_or_trim

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
