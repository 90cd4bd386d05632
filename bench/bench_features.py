"""Log-mel speed: whisperft's torch implementation vs transformers' WhisperFeatureExtractor
(numpy) and faster-whisper's, on the same 30 s windows. Prints ratios measured in one run.

    python bench/bench_features.py [--windows 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from transformers import WhisperFeatureExtractor

    from whisperft.audio import N_SAMPLES
    from whisperft.features import log_mel_spectrogram

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((args.windows, N_SAMPLES))).astype(np.float32)
    rows = []
    for n_mels in (80, 128):
        hf = WhisperFeatureExtractor(feature_size=n_mels)
        t_hf = best_of(lambda: [hf(a, sampling_rate=16000, return_tensors="np") for a in audio], args.repeat)
        t_one = best_of(lambda: [log_mel_spectrogram(a, n_mels, padding=0) for a in audio], args.repeat)
        t_batch = best_of(lambda: log_mel_spectrogram(audio, n_mels, padding=0), args.repeat)
        row = {"n_mels": n_mels, "transformers_s": t_hf, "ours_s": t_one, "ours_batched_s": t_batch}
        try:
            from faster_whisper.feature_extractor import FeatureExtractor

            fw = FeatureExtractor(feature_size=n_mels)
            row["faster_whisper_s"] = best_of(lambda: [fw(a) for a in audio], args.repeat)
        except ImportError:
            pass
        rows.append(row)
    print(f"log-mel of {args.windows} x 30 s windows, best of {args.repeat}:")
    for r in rows:
        line = (f"  {r['n_mels']:>3} mels: transformers {r['transformers_s']:.3f}s | ours {r['ours_s']:.3f}s "
                f"({r['transformers_s'] / r['ours_s']:.1f}x faster) | ours batched {r['ours_batched_s']:.3f}s "
                f"({r['transformers_s'] / r['ours_batched_s']:.1f}x)")
        if "faster_whisper_s" in r:
            line += f" | faster-whisper {r['faster_whisper_s']:.3f}s ({r['faster_whisper_s'] / r['ours_s']:.1f}x slower than ours)"
        print(line)


if __name__ == "__main__":
    main()
