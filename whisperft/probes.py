"""Non-speech probes: a few seconds of sound with no word in it, transcribed by a model. A
model that writes words on silence, noise, mains hum or music hallucinates; the right count on
each is 0. The signals are generated here, the same on every run (fixed seed); only
`transcribe_probes` needs torch, and imports it when called.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .audio import SAMPLE_RATE

PROBE_SECONDS = 10.0
PROBE_SEED = 0
PROBE_NAMES = ("silence", "white noise", "mains hum", "music")


def _at_dbfs(signal: np.ndarray, dbfs: float) -> np.ndarray:
    """`signal` scaled to an RMS level of `dbfs` (0 dBFS: a full-scale sine's RMS, 1/sqrt(2))."""
    rms = float(np.sqrt(np.mean(signal ** 2)))
    target = 10 ** (dbfs / 20) / np.sqrt(2)
    return (signal * (target / rms)).astype(np.float32)


def _tones(t: np.ndarray, sample_rate: int) -> np.ndarray:
    """A melody of half-second notes (C major, up and down), each with two overtones and a
    short attack and decay, so that it sounds played rather than beeped."""
    notes = [261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 293.66, 349.23, 440.00, 349.23]
    note_len = int(0.5 * sample_rate)
    out = np.zeros_like(t)
    local = np.arange(note_len) / sample_rate
    envelope = np.minimum(local / 0.02, 1.0) * np.exp(-3.0 * local)
    for k, start in enumerate(range(0, len(t) - note_len + 1, note_len)):
        f = notes[k % len(notes)]
        note = sum(a * np.sin(2 * np.pi * f * h * local) for h, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
        out[start:start + note_len] = envelope * note
    return out


def probe_signals(seconds: float = PROBE_SECONDS, sample_rate: int = SAMPLE_RATE
                  ) -> dict[str, np.ndarray]:
    """The probes, float32 mono at `sample_rate`: digital silence, white noise at -30 dBFS,
    50 Hz mains hum with its odd and even harmonics at -30 dBFS, and sine-tone music at
    -20 dBFS. Always the same samples."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(PROBE_SEED)
    hum = sum(a * np.sin(2 * np.pi * 50 * h * t) for h, a in
              ((1, 1.0), (2, 0.5), (3, 0.35), (4, 0.2), (5, 0.15), (6, 0.1)))
    return {
        "silence": np.zeros(n, dtype=np.float32),
        "white noise": _at_dbfs(rng.standard_normal(n), -30.0),
        "mains hum": _at_dbfs(hum, -30.0),
        "music": _at_dbfs(_tones(t, sample_rate), -20.0),
    }


def _seed_fallback_sampling() -> None:
    """Non-speech is where the default temperature fallback samples most, so the count would
    change from run to run of one model (1 to 6 words on the same music): both backends' random
    draws start from PROBE_SEED."""
    import torch

    torch.manual_seed(PROBE_SEED)
    try:
        import ctranslate2
    except ImportError:  # the torch backend alone
        return
    ctranslate2.set_random_seed(PROBE_SEED)


def transcribe_probes(model: str, count_words: Callable[[str], int]) -> list[dict]:
    """Each probe transcribed by `model` (any name `transcribe` takes; its default options):
    [{"name", "words" (count_words of the text), "text"}], in PROBE_NAMES order."""
    from .transcribe import load_transcriber
    from .transcription import TranscribeOptions

    runner = load_transcriber(TranscribeOptions(model=model))
    signals = probe_signals()
    _seed_fallback_sampling()
    results = dict(runner.run(list(signals.items())))
    out = []
    for name in signals:
        result = results[name]
        if isinstance(result, Exception):
            raise result
        out.append({"name": name, "words": count_words(result.text), "text": result.text})
    return out
