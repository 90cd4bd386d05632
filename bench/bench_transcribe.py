"""Transcription speed and WER: whisperft's PyTorch decoder, whisperft `--backend ct2`,
faster-whisper (WhisperModel and BatchedInferencePipeline, float32 and int8) and the
transformers ASR pipeline, on the same folder of clips. Times are wall seconds of decoding
(model loading left out, one warm-up first; CPU seconds of this process beside them, a check on
a shared machine), printed as ratios to faster-whisper's WhisperModel at float32, with each
system's WER against the clips' text.

    python bench/bench_transcribe.py [--audio-dir DIR] [--model tiny.en] [--beam-size 1]
                                     [--batch-size 4] [--only ours,fw-f32,...]

Without --audio-dir, espeak-ng speech is synthesised (4 files of 15-70 s, known text). With
one, references are read from a transcript next to each audio file (same stem, .srt/.vtt/
.txt), where there is one.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from demo.make_data import EVERYDAY_SENTENCES  # noqa: E402

FILE_SECONDS = (15, 35, 50, 70)  # lengths of the synthetic files: one window to several
PAUSE_S = 0.5  # silence between sentences


def synthesise(folder: Path) -> dict[Path, str]:
    from whisperft.audio import SAMPLE_RATE, load_audio, save_wav

    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, s in enumerate(EVERYDAY_SENTENCES):
        wav = folder / f".sentence{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), s], check=True,
                       capture_output=True)
        clips.append((load_audio(wav), s))
        wav.unlink()
    refs = {}
    k = 0
    for n, seconds in enumerate(FILE_SECONDS):
        parts, words = [], []
        while sum(len(p) for p in parts) < seconds * SAMPLE_RATE:
            audio, text = clips[k % len(clips)]
            k += 1
            parts += [audio, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
            words.append(text)
        path = folder / f"speech{n}_{seconds}s.wav"
        save_wav(path, np.concatenate(parts))
        refs[path] = " ".join(words)
    return refs


def references(folder: Path) -> dict[Path, str | None]:
    from whisperft.audio import AUDIO_EXTENSIONS
    from whisperft.subtitles import read_text

    refs = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in AUDIO_EXTENSIONS:
            ref = next((p.with_suffix(s) for s in (".srt", ".vtt", ".txt") if p.with_suffix(s).is_file()), None)
            refs[p] = read_text(ref) if ref else None
    return refs


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def corpus_wer(refs: dict[Path, str | None], hyps: dict[Path, str]) -> float | None:
    import jiwer

    pairs = [(normalise(r), normalise(hyps[p])) for p, r in refs.items() if r]
    if not pairs:
        return None
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


# --------------------------------------------------------------------------------------------
# Systems: each is (load() -> run(paths, audios) -> {path: text})


def ours(model: str, beam: int, batch: int, threads: int, backend: str = "torch"):
    def load():
        from whisperft import transcribe as tr
        from whisperft.transcription import TranscribeOptions

        opts = TranscribeOptions(model=model, beam_size=beam, batch_size=batch, backend=backend,
                                 device="cpu", threads=threads)
        runner = tr.load_transcriber(opts)

        def run(paths, audios):
            return {p: t.text for p, t in runner.run(zip(paths, audios))}
        return run
    return load


def _fw_model_dir(model: str) -> str:
    from whisperft.models import ct2_model_dir

    return str(ct2_model_dir(model))


def faster_whisper(model: str, beam: int, compute_type: str, batch: int | None, threads: int):
    def load():
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        m = WhisperModel(_fw_model_dir(model), device="cpu", compute_type=compute_type, cpu_threads=threads)
        if batch is None:
            def run(paths, audios):
                out = {}
                for p, a in zip(paths, audios):
                    segments, _ = m.transcribe(a, beam_size=beam, language="en")
                    out[p] = " ".join(s.text.strip() for s in segments)
                return out
        else:
            pipe = BatchedInferencePipeline(m)

            def run(paths, audios):
                out = {}
                for p, a in zip(paths, audios):
                    segments, _ = pipe.transcribe(a, beam_size=beam, language="en", batch_size=batch)
                    out[p] = " ".join(s.text.strip() for s in segments)
                return out
        return run
    return load


def hf_pipeline(model: str, beam: int, batch: int):
    def load():
        import torch
        from transformers import pipeline

        from whisperft.models import load_model

        bundle = load_model(model)
        asr = pipeline("automatic-speech-recognition", model=bundle.model, tokenizer=bundle.tokenizer,
                       feature_extractor=bundle.feature_extractor, device="cpu", dtype=torch.float32)

        def run(paths, audios):
            # chunked long-form (30 s chunks, 5 s overlap, batched): the pipeline's fast path
            outs = asr([a.copy() for a in audios], chunk_length_s=30, batch_size=batch,
                       generate_kwargs={"num_beams": beam, "language": "en"} if bundle.is_multilingual
                       else {"num_beams": beam})
            return {p: o["text"] for p, o in zip(paths, outs)}
        return run
    return load


def hf_longform(model: str, beam: int, batch: int):
    def load():
        import torch

        from whisperft.features import log_mel_spectrogram
        from whisperft.models import load_model

        bundle = load_model(model)

        def run(paths, audios):
            # transformers' own sequential long-form algorithm, fed our features, `batch` files at once
            out = {}
            for i in range(0, len(audios), batch):
                feats = [log_mel_spectrogram(a, bundle.n_mels)[:, :-1] for a in audios[i:i + batch]]
                width = max(f.shape[-1] for f in feats)
                x = torch.stack([torch.nn.functional.pad(f, (0, width - f.shape[-1])) for f in feats])
                mask = torch.stack([(torch.arange(width) < f.shape[-1]).long() for f in feats])
                with torch.inference_mode():
                    ids = bundle.model.generate(
                        x, attention_mask=mask, return_timestamps=True, condition_on_prev_tokens=True,
                        num_beams=beam, temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                        compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6)
                for p, row in zip(paths[i:i + batch], ids):
                    out[p] = bundle.tokenizer.decode(row, skip_special_tokens=True)
            return out
        return run
    return load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio-dir", help="folder of clips (default: synthesise speech with espeak-ng)")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads per system (default 1: ratios that hold on a shared machine; "
                         "0 = all cores)")
    ap.add_argument("--only", help="comma-separated system names to run")
    args = ap.parse_args()

    from whisperft.audio import SAMPLE_RATE, load_audio

    tmp = None
    if args.audio_dir:
        refs = references(Path(args.audio_dir))
    else:
        tmp = tempfile.TemporaryDirectory()
        refs = synthesise(Path(tmp.name))
    paths = list(refs)
    audios = [load_audio(p) for p in paths]
    total_s = sum(len(a) for a in audios) / SAMPLE_RATE
    import torch

    b, n, th = args.beam_size, args.batch_size, args.threads
    if th > 0:
        torch.set_num_threads(th)
    systems = {
        "fw-f32": faster_whisper(args.model, b, "float32", None, th),  # the baseline: first
        "fw-int8": faster_whisper(args.model, b, "int8", None, th),
        f"fw-batched{n}-f32": faster_whisper(args.model, b, "float32", n, th),
        f"fw-batched{n}-int8": faster_whisper(args.model, b, "int8", n, th),
        "ours-torch-b1": ours(args.model, b, 1, th),
        f"ours-torch-b{n}": ours(args.model, b, n, th),
        "ours-ct2": ours(args.model, b, 1, th, backend="ct2"),
        f"ours-ct2-b{n}": ours(args.model, b, n, th, backend="ct2"),
        f"hf-longform-b{n}": hf_longform(args.model, b, n),
        f"hf-pipeline-b{n}": hf_pipeline(args.model, b, n),
    }
    if args.only:
        wanted = set(args.only.split(","))
        systems = {k: v for k, v in systems.items() if k in wanted or k == "fw-f32"}
    print(f"{len(paths)} files, {total_s:.1f} s of audio; model {args.model}, beam {b}, "
          f"threads {torch.get_num_threads()} (of {os.cpu_count()} cores)")
    rows = []
    for name, load in systems.items():
        t = time.perf_counter()
        run = load()
        load_s = time.perf_counter() - t
        run(paths[:1], [audios[0][:5 * SAMPLE_RATE]])  # warm-up
        t, cpu = time.perf_counter(), time.process_time()
        hyps = run(paths, audios)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        rows.append((name, load_s, wall, cpu, corpus_wer(refs, hyps)))
        print(f"  {name:22s} {wall:7.1f} s (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    base = rows[0][2]
    print(f"{'system':22s} {'load s':>7s} {'wall s':>7s} {'cpu s':>7s} {'x real':>7s} {'vs fw-f32':>9s} {'WER':>6s}")
    for name, load_s, wall, cpu, w in rows:
        wer_s = f"{100 * w:5.1f}%" if w is not None else "    -"
        print(f"{name:22s} {load_s:7.1f} {wall:7.1f} {cpu:7.1f} {total_s / wall:7.1f} {wall / base:8.2f}x {wer_s}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
