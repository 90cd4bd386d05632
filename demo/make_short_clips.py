"""Short recordings (1-10 s, a realistic mix for voice input: a few words, one sentence, two
sentences) with one SRT cue per sentence, synthesised with espeak-ng: data to train a cut audio
context on (README, "Short audio, fast") and bench/bench_short_audio.py's clips.

    python demo/make_short_clips.py OUT_DIR --split train|test [--count N] [--seed S]

The training split reads the demo's dictation and the general set's sentences; the test split
the demo's everyday and test sentences, in voices the training split does not use.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demo.make_data import (DEV_SENTENCES, EVERYDAY_SENTENCES, TEST_SENTENCES, TRAIN_SENTENCES,  # noqa: E402
                            VOICES, Voice, synthesize, wav_bytes)
from whisperft.general_set import GENERAL_SETS  # noqa: E402

GENERAL = GENERAL_SETS["en"]

MAX_SECONDS = 10.0
LEAD_S = (0.1, 0.5)  # silence before the speech, drawn uniformly
GAP_S = (0.3, 0.7)  # between two sentences
TAIL_S = (0.2, 0.6)  # after the speech

SPLIT_VOICES = {
    "train": tuple(VOICES[k] for k in ("us-m", "gb-m", "gb-f")),
    "test": (VOICES["rp-m"], VOICES["us-f"], *(Voice(k, *v) for k, v in list(GENERAL.voices.items())[:2])),
}


def split_sentences(split: str) -> list[str]:
    if split == "train":
        return [*TRAIN_SENTENCES, *DEV_SENTENCES, *(s for group in GENERAL.sentences for s in group)]
    return [*EVERYDAY_SENTENCES, *TEST_SENTENCES]


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def make_clips(out_dir: str | Path, split: str, count: int, seed: int = 0) -> list[Path]:
    """`count` WAV files with SRTs beside them in `out_dir`; returns the WAV paths."""
    from whisperft.audio import SAMPLE_RATE

    out, rng = Path(out_dir), random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    sentences, voices, paths = split_sentences(split), SPLIT_VOICES[split], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            voice, kind = voices[i % len(voices)], rng.choice(("words", "sentence", "sentence", "two"))
            texts = [rng.choice(sentences)]
            if kind == "words":
                words = texts[0].split()
                start = rng.randrange(max(1, len(words) - 3))
                texts = [" ".join(words[start:start + rng.randint(2, 4)]).rstrip(",;:")]
            elif kind == "two":
                texts.append(rng.choice(sentences))
            parts, cues, t = [], [], rng.uniform(*LEAD_S)
            parts.append(np.zeros(int(t * SAMPLE_RATE), np.float32))
            for k, text in enumerate(texts):
                speech = synthesize(text, voice, Path(tmp))
                if k and t + len(speech) / SAMPLE_RATE > MAX_SECONDS - TAIL_S[1]:
                    break
                cues.append((t, t + len(speech) / SAMPLE_RATE, text))
                gap = rng.uniform(*GAP_S)
                parts += [speech, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
                t += len(speech) / SAMPLE_RATE + gap
            audio = np.concatenate(parts[:-1] + [np.zeros(int(rng.uniform(*TAIL_S) * SAMPLE_RATE), np.float32)])
            path = out / f"{split}{i:03d}_{voice.key}.wav"
            path.write_bytes(wav_bytes(audio))
            srt = "".join(f"{n}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n\n" for n, (a, b, text) in enumerate(cues, 1))
            path.with_suffix(".srt").write_text(srt, encoding="utf-8")
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--split", choices=tuple(SPLIT_VOICES), default="test")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = make_clips(args.out_dir, args.split, args.count, args.seed)
    print(f"{len(paths)} clips in {args.out_dir}")


if __name__ == "__main__":
    main()
