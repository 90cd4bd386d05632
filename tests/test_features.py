"""Our torch log-mel equals transformers' WhisperFeatureExtractor (80 and 128 bins) and
faster-whisper's, batched or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whisperft.audio import N_FRAMES, N_SAMPLES, SAMPLE_RATE
from whisperft.features import log_mel_spectrogram, window_features


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate loudness changes
    tone = sum(np.sin(2 * np.pi * f * t) for f in (180, 360, 720, 2500))
    return (0.05 * env * tone + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_transformers_feature_extractor(n_mels):
    from transformers import WhisperFeatureExtractor

    audio = _speechlike(N_SAMPLES)  # a full window: where every padding convention agrees
    reference = WhisperFeatureExtractor(feature_size=n_mels)(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    ours = log_mel_spectrogram(audio, n_mels, padding=0).numpy()
    assert ours.shape == reference.shape == (n_mels, N_FRAMES)
    assert np.abs(ours - reference).max() <= 1e-3


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_faster_whisper_on_short_audio(n_mels):
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    audio = _speechlike(7 * SAMPLE_RATE + 123, seed=1)
    reference = fw.FeatureExtractor(feature_size=n_mels)(audio)
    ours = log_mel_spectrogram(audio, n_mels).numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4


def test_batched_equals_one_by_one():
    batch = np.stack([_speechlike(SAMPLE_RATE * 3, seed=s) for s in range(3)])
    together = log_mel_spectrogram(batch, 80)
    for i in range(3):
        assert torch.allclose(together[i], log_mel_spectrogram(batch[i], 80), atol=1e-5)


def test_window_features_pads_log_mel_with_zero():
    audio = _speechlike(SAMPLE_RATE * 2)
    feats = window_features(audio, 80)
    n_real = (len(audio) + 160) // 160
    assert feats.shape == (80, N_FRAMES)
    assert torch.equal(feats[:, n_real:], torch.zeros(80, N_FRAMES - n_real))
    assert torch.equal(feats[:, :n_real], log_mel_spectrogram(audio, 80))
    long = window_features(_speechlike(N_SAMPLES + SAMPLE_RATE), 80)
    assert long.shape == (80, N_FRAMES)
