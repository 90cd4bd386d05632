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


# --------------------------------------------------------------------------------------------
# LongLogMel: the whole file's log-mel, a block at a time


def _long_recording(seconds: float, seed: int = 2) -> np.ndarray:
    """Speech-like audio, quiet but for one loud second: the whole file's clamp (8 below its
    loudest bin) differs from any quiet window's own."""
    audio = _speechlike(int(seconds * SAMPLE_RATE) + 77, seed=seed) * 0.05
    loud = slice(int(40.5 * SAMPLE_RATE), int(41.5 * SAMPLE_RATE))
    audio[loud] *= 100
    return audio


def _in_chunks(audio: np.ndarray, size: int):
    return lambda: (audio[i:i + size] for i in range(0, len(audio), size))


@pytest.mark.parametrize("n_mels, source", [(80, "stream"), (128, "array")])
def test_long_log_mel_equals_the_whole_files(n_mels, source):
    """Invariant: any frames [a, b) of a recording longer than a window equal the slice of
    the whole-file log-mel (global clamp, reflect padding at both ends), whichever order
    they are asked in, while at most a few windows of samples are held."""
    from whisperft.features import BLOCK_FRAMES, LongLogMel

    audio = _long_recording(95.3)
    whole = log_mel_spectrogram(audio, n_mels)
    reader = (lambda: [audio]) if source == "array" else _in_chunks(audio, 1000)
    lm = LongLogMel(reader, n_mels)
    assert lm.whole is None and lm.n_samples == len(audio) and lm.n_frames == whole.shape[-1]
    n = lm.n_frames
    held = 0
    starts = [0, 1, 1234, 2999, 3000, 4500, 6000, n - N_FRAMES, n - 700, n - 2, n - 1, 5]  # 5: back again
    for a in starts:
        b = min(a + N_FRAMES, n)
        got = lm.frames(a, b)
        assert got.shape == (n_mels, b - a)
        assert (got - whole[:, a:b]).abs().max().item() <= 1e-6, (a, b)
        held = max(held, len(lm._samples.data))
    if source == "stream":  # two blocks of samples and a chunk, never the recording
        assert held <= 2 * BLOCK_FRAMES * 160 + 400 + 1000
    # the global clamp matters here: a window's own log-mel is not the file's
    alone = log_mel_spectrogram(audio[:N_SAMPLES], n_mels)[:, :N_FRAMES]
    assert (alone - whole[:, :N_FRAMES]).abs().max().item() > 0.1


def test_long_log_mel_of_one_window_or_less_is_computed_whole():
    from whisperft.features import LongLogMel

    for n in (N_SAMPLES - 1, 3 * SAMPLE_RATE):  # (n + 160) // 160 <= 3000 frames
        audio = _speechlike(n, seed=3)
        lm = LongLogMel(_in_chunks(audio, 4096), 80)
        assert lm.whole is not None and torch.equal(lm.whole, log_mel_spectrogram(audio, 80))
        assert torch.equal(lm.frames(10, 20), lm.whole[:, 10:20])


def test_long_log_mel_from_a_file_equals_the_loaded_files(tmp_path):
    """stream_audio gives load_audio's samples; LongLogMel over it, the whole-file log-mel."""
    from whisperft.audio import load_audio, save_wav, stream_audio
    from whisperft.features import LongLogMel

    path = tmp_path / "long.wav"
    save_wav(path, _long_recording(64.0))
    audio = load_audio(path)
    assert np.array_equal(np.concatenate(list(stream_audio(path))), audio)
    lm = LongLogMel(lambda: stream_audio(path), 80, source=str(path))
    whole = log_mel_spectrogram(audio, 80)
    for a in (0, 2500, lm.n_frames - N_FRAMES):
        assert (lm.frames(a, a + N_FRAMES) - whole[:, a:a + N_FRAMES]).abs().max().item() <= 1e-6
    lm.close()
