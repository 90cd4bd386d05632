"""Transcription speed and quality, whisperft against faster-whisper, in one run: the tables
bench/RESULTS.md and the README show.

    python bench/bench_transcribe.py [--audio-dir DIR] [--model tiny.en] [--beam-size 5]
                                     [--batch-size 4] [--threads 1] [--sets synthetic,long]
                                     [--extra] [--only ROW ...]

Tables, each on every data set:
  1. default: `transcribe` as it comes (beam 5, float32 on CPU, --backend auto, which is ct2
     here) and with --word-timestamps, its --backend torch, against faster-whisper's
     `WhisperModel.transcribe` with the same beam and compute type;
  2. --batched (ct2 and torch) against faster-whisper's `BatchedInferencePipeline`, same beam,
     compute type and batch size (chunks decoded together);
  3. the torch backend's decision: its own long-form loop against transformers' long-form
     `generate` (same features, same safeguards), greedy and beam 5.
Columns: wall and CPU seconds of decoding (model loading left out, one warm-up first; CPU
seconds of this process, all its threads: the check on a shared machine), real-time factor,
wall time as a ratio to the table's first row, WER (Whisper's English normaliser, corpus rate)
and the median and 90th percentile of |segment start error| against the reference cues
(calculate_metric.py's measure: segments matched to cues by text).

Threads: every system gets --threads CPU threads: faster-whisper's `cpu_threads` (one worker),
whisperft's --threads (with ct2, split among the files decoded at once, at most one per thread),
torch.set_num_threads for the torch backend and transformers.

Data sets (generated unless --audio-dir is given; then references are the transcripts beside
the audio, same stem, .srt/.vtt/.txt):
  synthetic: 4 files of 15-70 s, everyday sentences read by one espeak-ng voice, 0.5 s pauses;
  long: 3 recordings of 2-3 min in the style of a held-out test set: the demo's dictation
        sentences (a domain tiny.en was not tuned on), three voices, pauses of 0.3-1.2 s,
        one SRT cue per sentence (demo/make_data.py's renderer).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from demo import make_data  # noqa: E402

FILE_SECONDS = (15, 35, 50, 70)  # lengths of the synthetic files: one window to several
PAUSE_S = 0.5  # silence between sentences
LONG_RECORDINGS = (("long_01_us-f", "us-f", 120), ("long_02_rp-m", "rp-m", 150), ("long_03_gb-m", "gb-m", 180))
SILENT = 10 ** (make_data.SILENCE_DBFS / 20)  # below this a sample is silence (a cue's edge)


# --------------------------------------------------------------------------------------------
# Data: {audio path: reference cues (or a text, or None)}


def _write_srt(path: Path, cues: list[tuple[float, float, str]]) -> None:
    from whisperft.subtitles import Cue
    from whisperft.writers import write_subtitles

    write_subtitles(path, [Cue(round(s, 3), round(e, 3), t) for s, e, t in cues])


def synthesise(folder: Path) -> list[Path]:
    """The synthetic set: sentences from one voice, 0.5 s apart, with an SRT cue each."""
    from whisperft.audio import SAMPLE_RATE, load_audio, save_wav

    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, s in enumerate(make_data.EVERYDAY_SENTENCES):
        wav = folder / f".sentence{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), s], check=True,
                       capture_output=True)
        clips.append((load_audio(wav), s))
        wav.unlink()
    paths, k = [], 0
    for n, seconds in enumerate(FILE_SECONDS):
        parts, cues, at = [], [], 0
        while at < seconds * SAMPLE_RATE:
            audio, text = clips[k % len(clips)]
            k += 1
            loud = np.flatnonzero(np.abs(audio) > SILENT)
            cues.append(((at + loud[0]) / SAMPLE_RATE, (at + loud[-1] + 1) / SAMPLE_RATE, text))
            parts += [audio, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
            at += audio.size + parts[-1].size
        path = folder / f"speech{n}_{seconds}s.wav"
        save_wav(path, np.concatenate(parts))
        _write_srt(path.with_suffix(".srt"), cues)
        paths.append(path)
    return paths


def long_recordings(folder: Path) -> list[Path]:
    """The long set: the demo's dictation read by three voices, 2-3 min each, SRT cues."""
    from whisperft.audio import SAMPLE_RATE

    folder.mkdir(parents=True, exist_ok=True)
    sentences = make_data.TRAIN_SENTENCES + make_data.DEV_SENTENCES + make_data.TEST_SENTENCES
    paths, k = [], 0
    with tempfile.TemporaryDirectory() as work:
        for name, voice, seconds in LONG_RECORDINGS:
            # ~5.5 s a sentence with its pause: as many as fill the length
            n = max(1, round(seconds / 5.5))
            chosen = tuple(sentences[(k + j) % len(sentences)] for j in range(n))
            k += n
            audio, cues = make_data.render_recording(name, make_data.VOICES[voice], chosen, Path(work))
            path = folder / f"{name}.wav"
            path.write_bytes(make_data.wav_bytes(audio))
            _write_srt(path.with_suffix(".srt"), [(c.start.total_seconds(), c.end.total_seconds(), c.content)
                                                  for c in cues])
            paths.append(path)
    print(f"long set: {len(paths)} recordings, {sum(p.stat().st_size for p in paths) / 2 / SAMPLE_RATE / 60:.1f} min",
          file=sys.stderr)
    return paths


def references(paths: list[Path]) -> dict[Path, list | str | None]:
    """Cues from an .srt/.vtt beside each file, else its .txt's text, else None."""
    from whisperft.subtitles import read_subtitles, read_text

    refs = {}
    for p in paths:
        timed = next((p.with_suffix(s) for s in (".srt", ".vtt") if p.with_suffix(s).is_file()), None)
        plain = p.with_suffix(".txt")
        refs[p] = read_subtitles(timed) if timed else (read_text(plain) if plain.is_file() else None)
    return refs


# --------------------------------------------------------------------------------------------
# Systems: load() -> run(paths, audios) -> {path: [(start, end, text)]}


def ours(model: str, beam: int, batch: int, threads: int, backend: str = "auto", **flags):
    def load():
        from whisperft import transcribe as tr
        from whisperft.transcription import TranscribeOptions

        # transcribe_dir decodes a folder of n files tr.files_at_once(..., n) at a time, longest
        # first: one runner per possible count, loaded here, outside the timing
        options = {k: TranscribeOptions(model=model, beam_size=beam, batch_size=k, backend=backend, device="cpu",
                                        threads=threads, **flags) for k in range(1, max(1, batch) + 1)}
        runners = {k: tr.load_transcriber(o) for k, o in options.items()}

        def run(paths, audios):
            k = tr.files_at_once(options[batch], len(paths))
            runner, opts = runners[k], options[k]
            out = {}
            order = tr.longest_first(paths)
            for p, t in runner.run((p, audios[paths.index(p)]) for p in order):
                tr.snap_words_to_speech(t, audios[paths.index(p)], opts)
                out[p] = [(s.start, s.end, s.text) for s in t.segments]
            return out
        return run
    return load


def faster_whisper(model: str, beam: int, compute_type: str, batch: int | None, threads: int):
    def load():
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from whisperft.models import ct2_model_dir

        m = WhisperModel(str(ct2_model_dir(model)), device="cpu", compute_type=compute_type, cpu_threads=threads)
        pipe = BatchedInferencePipeline(m) if batch else None

        def run(paths, audios):
            out = {}
            for p, a in zip(paths, audios):
                if pipe is None:
                    segments, _ = m.transcribe(a, beam_size=beam, language="en")
                else:  # its defaults otherwise (one segment a chunk), as --batched runs it
                    segments, _ = pipe.transcribe(a, beam_size=beam, language="en", batch_size=batch)
                out[p] = [(s.start, s.end, s.text) for s in segments]
            return out
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
                    res = bundle.model.generate(
                        x, attention_mask=mask, return_timestamps=True, condition_on_prev_tokens=True,
                        num_beams=beam, temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), return_segments=True,
                        compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6)
                for p, segs in zip(paths[i:i + batch], res["segments"]):
                    out[p] = [(float(s["start"]), float(s["end"]),
                               bundle.tokenizer.decode(s["tokens"], skip_special_tokens=True)) for s in segs]
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
            outs = asr([a.copy() for a in audios], chunk_length_s=30, batch_size=batch, return_timestamps=True,
                       generate_kwargs={"num_beams": beam})
            return {p: [(c["timestamp"][0], c["timestamp"][1] or c["timestamp"][0], c["text"])
                        for c in o["chunks"]] for p, o in zip(paths, outs)}
        return run
    return load


def tables(args) -> list[tuple[str, dict]]:
    """(title, {row name: system}) of each table; a row name seen before is measured once."""
    m, b, n, th = args.model, args.beam_size, args.batch_size, args.threads
    out = [
        (f"default: beam {b}, float32, {th} thread(s)", {
            "faster-whisper WhisperModel": faster_whisper(m, b, "float32", None, th),
            "ours (default: auto = ct2)": ours(m, b, n, th),
            "ours --word-timestamps": ours(m, b, n, th, word_timestamps=True),
            "ours --backend torch": ours(m, b, n, th, backend="torch"),
        }),
        (f"--batched: beam {b}, float32, batch {n}, {th} thread(s)", {
            "faster-whisper BatchedInferencePipeline": faster_whisper(m, b, "float32", n, th),
            "ours --batched (auto = ct2)": ours(m, b, n, th, batched=True),
            "ours --batched --backend torch": ours(m, b, n, th, backend="torch", batched=True),
        }),
        (f"torch backend: own long-form loop vs transformers' generate (batch {n})", {
            "own loop, beam 1": ours(m, 1, n, th, backend="torch"),
            "transformers generate, beam 1": hf_longform(m, 1, n),
            **({"ours --backend torch": None} if b == 5 else {"own loop, beam 5": ours(m, 5, n, th, backend="torch")}),
            "transformers generate, beam 5": hf_longform(m, 5, n),
        }),
    ]
    if args.extra:
        out.append((f"others: beam {b}", {
            "faster-whisper WhisperModel": None,
            "faster-whisper int8": faster_whisper(m, b, "int8", None, th),
            f"faster-whisper batched {n}, int8": faster_whisper(m, b, "int8", n, th),
            f"transformers pipeline, batch {n}": hf_pipeline(m, b, n),
        }))
    return out


# --------------------------------------------------------------------------------------------
# Measuring


def quality(refs: dict, hyps: dict) -> tuple[float | None, dict]:
    """(corpus WER, |start error| summary) of `hyps` against `refs`."""
    from whisperft.metrics import score
    from whisperft.quality import start_errors, summarize

    text = lambda segs: " ".join(t.strip() for _, _, t in segs)
    pairs = [(p.name, r if isinstance(r, str) else " ".join(c.text for c in r), text(hyps[p]))
             for p, r in refs.items() if r]
    wer = score(pairs).totals().rate if pairs else None
    errors = []
    for p, r in refs.items():
        if r and not isinstance(r, str):
            from whisperft.quality import Timed

            errors += start_errors(r, [Timed(a, b, t) for a, b, t in hyps[p]])
    return wer, summarize(errors)


def measure(load, paths, audios, refs) -> dict:
    from whisperft.audio import SAMPLE_RATE

    t = time.perf_counter()
    run = load()
    load_s = time.perf_counter() - t
    run(paths[:1], [audios[0][:5 * SAMPLE_RATE]])  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    hyps = run(paths, audios)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    wer, starts = quality(refs, hyps)
    return {"load": load_s, "wall": wall, "cpu": cpu, "wer": wer, "starts": starts}


def print_table(title: str, rows: dict, total_s: float) -> None:
    seconds = lambda v: f"{v:5.2f}" if v is not None else "    -"
    print(f"\n{title}")
    print(f"  {'system':40s} {'wall s':>7s} {'cpu s':>7s} {'x real':>7s} {'vs 1st':>7s} {'WER':>6s} "
          f"{'start err median':>16s} {'p90':>5s}")
    base = next(iter(rows.values()))["wall"]
    for name, r in rows.items():
        wer = f"{100 * r['wer']:5.1f}%" if r["wer"] is not None else "     -"
        print(f"  {name:40s} {r['wall']:7.1f} {r['cpu']:7.1f} {total_s / r['wall']:7.1f} {r['wall'] / base:6.2f}x "
              f"{wer} {seconds(r['starts']['median']):>16s} {seconds(r['starts']['p90'])}")


def data_sets(args, tmp: Path) -> dict[str, list[Path]]:
    if args.audio_dir:
        from whisperft.transcribe import find_audio

        return {Path(args.audio_dir).name: find_audio(Path(args.audio_dir))}
    makers = {"synthetic": synthesise, "long": long_recordings}
    return {name: makers[name](tmp / name) for name in args.sets.split(",")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio-dir", help="folder of recordings (default: the generated sets)")
    ap.add_argument("--sets", default="synthetic,long", help="generated sets to run: synthetic, long")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads of every system (default 1: ratios that hold on a shared machine)")
    ap.add_argument("--only", nargs="*", help="row names to run (ratios are then to a table's first row run)")
    ap.add_argument("--extra", action="store_true", help="also faster-whisper int8 and the transformers pipeline")
    args = ap.parse_args()

    import torch

    from whisperft.audio import SAMPLE_RATE, load_audio

    torch.set_num_threads(args.threads if args.threads > 0 else (os.cpu_count() or 1))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, paths in data_sets(args, Path(tmp)).items():
            refs = references(paths)
            audios = [load_audio(p) for p in paths]
            total_s = sum(len(a) for a in audios) / SAMPLE_RATE
            print(f"\n=== {set_name}: {len(paths)} files, {total_s:.1f} s of audio; model {args.model}, "
                  f"threads {args.threads} (of {os.cpu_count()} cores) ===", flush=True)
            done: dict[str, dict] = {}
            for title, systems in tables(args):
                rows = {}
                for name, load in systems.items():
                    if name not in done and load is not None and (not args.only or name in args.only):
                        done[name] = measure(load, paths, audios, refs)
                        print(f"  {name:40s} {done[name]['wall']:7.1f} s (load average {os.getloadavg()[0]:.1f})",
                              file=sys.stderr, flush=True)
                    if name in done:
                        rows[name] = done[name]
                if rows:
                    print_table(title, rows, total_s)
    print(f"\nbench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
