"""Short clips, fast: a cut audio context (transcribe --audio-ctx) against the full one, in one run
with the same threads for every system.

    python bench/bench_short_audio.py --adapted output/best_model.pt [--base tiny.en]
                                      [--clips DIR] [--count 60] [--threads 2] [--beam-size 1]
                                      [--repeat N] [--no-fallback] [--only SYSTEM,...]

--adapted is a model trained with run_finetuning.py --dynamic-audio-ctx from --base (README,
"Short audio, fast"). Without --clips, 1-10 s clips are synthesised (demo/make_short_clips.py,
test split: sentences and voices the training split does not use). Each system transcribes
every clip one after another (model loading left out, one warm-up clip first; with --repeat N,
the fastest of N passes); wall seconds and this process's CPU seconds are printed beside WER
against the clips' SRT text, and each system's time as a ratio to faster-whisper int8 on the
original model. Every system decodes with the same temperature fallback (0, 0.2, ... 1, each
one's default), or none with --no-fallback. whisper.cpp (pywhispercpp) runs the ggml export with
and without `audio_ctx` where pywhispercpp is installed; its texts are compared with our
decoder's on the same context, and on the original model at full context (how far
whisper.cpp's own log-mel and decoding rules take it from faster-whisper's with no cut). Texts
are only comparable with --no-fallback: a fallback samples.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")



def references(folder: Path) -> dict[Path, str]:
    """Each clip's text: the cues of the .srt beside it."""
    from whisperft.subtitles import read_text

    return {wav: read_text(wav.with_suffix(".srt")) for wav in sorted(folder.glob("*.wav"))
            if wav.with_suffix(".srt").is_file()}


def corpus_wer(refs: dict[Path, str], hyps: dict[Path, str]) -> float:
    from whisperft.metrics import score

    return score([(p.name, r, hyps[p]) for p, r in refs.items()]).totals().rate


def normalise(text: str) -> str:
    from whisperft.normalizers import get_normalizer

    return get_normalizer("auto", "en")(text)


def temperatures(step: float) -> tuple[float, ...]:
    """The fallback temperatures every system decodes with: 0, step, ... 1 (just 0 when step is 0)."""
    from whisperft.transcription import TranscribeOptions

    return TranscribeOptions(temperature_increment=step).temperatures()


def faster_whisper(model: str, compute_type: str, beam: int, threads: int, step: float):
    def load():
        from faster_whisper import WhisperModel

        from whisperft.models import ct2_model_dir

        m = WhisperModel(str(ct2_model_dir(model)), device="cpu", compute_type=compute_type, cpu_threads=threads)

        def run(audio):
            segments, _ = m.transcribe(audio, beam_size=beam, language="en", temperature=temperatures(step))
            return " ".join(s.text.strip() for s in segments)
        return run
    return load


def ours(model: str, beam: int, threads: int, backend: str, step: float, audio_ctx: str | None = None,
         compute_type: str = "auto", force: bool = False):
    def load():
        from whisperft.transcribe import load_transcriber
        from whisperft.transcription import TranscribeOptions

        runner = load_transcriber(TranscribeOptions(model=model, beam_size=beam, batch_size=1, backend=backend,
                                                    device="cpu", threads=threads, audio_ctx=audio_ctx,
                                                    compute_type=compute_type, force=force,
                                                    temperature_increment=step))

        def run(audio):
            ((_, result),) = list(runner.run([(0, audio)]))
            return result.text
        return run
    return load


def whisper_cpp(model: str, threads: int, cut: bool, workdir: Path, step: float):
    def load():
        from pywhispercpp.model import Model

        from whisperft import audio_ctx, load_model
        from whisperft.audio import SAMPLE_RATE
        from whisperft.ggml import save_ggml

        path = save_ggml(load_model(model), workdir / f"ggml-{abs(hash(model))}.bin", "f16")
        m = Model(str(path), n_threads=threads, redirect_whispercpp_logs_to=None, print_progress=False,
                  language="en", temperature_inc=step, suppress_nst=True)

        def run(audio):
            n = audio_ctx.positions_for(len(audio) / SAMPLE_RATE) if cut else 0
            return " ".join(s.text.strip() for s in m.transcribe(audio, audio_ctx=n)).strip()
        return run
    return load


def measure(load, audios: dict, repeat: int = 1) -> tuple[dict, float, float]:
    """Texts of the first pass; wall and CPU seconds of the fastest of `repeat` passes (a pass
    slowed by something else on the machine says nothing about the system)."""
    run = load()
    run(next(iter(audios.values())))  # warm-up: first-call allocations are not the system's speed
    passes = []
    for _ in range(repeat):
        texts, wall, cpu = {}, time.perf_counter(), time.process_time()
        for path, audio in audios.items():
            texts[path] = run(audio)
        passes.append((texts, time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = min((p[1], p[2]) for p in passes)
    return passes[0][0], wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapted", required=True, help="model trained with --dynamic-audio-ctx")
    parser.add_argument("--base", default="tiny.en", help="the model it was trained from")
    parser.add_argument("--clips", help="folder of clips with .srt references (default: synthesised)")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--only", help="comma-separated system names")
    parser.add_argument("--no-fallback", action="store_true",
                        help="decode at temperature 0 only (every system): the texts then depend on nothing random")
    parser.add_argument("--repeat", type=int, default=1, help="passes per system; the fastest is timed")
    args = parser.parse_args()

    import torch

    from whisperft.audio import SAMPLE_RATE, load_audio
    from whisperft.transcription import TEMPERATURE_INCREMENT

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="whisperft-bench-short-"))
    if args.clips:
        folder = Path(args.clips)
    else:
        from demo.make_short_clips import make_clips

        folder = work / "clips"
        make_clips(folder, "test", args.count, seed=2)
    refs = references(folder)
    audios = {p: load_audio(p) for p in refs}
    seconds = [len(a) / SAMPLE_RATE for a in audios.values()]
    b, t, f = args.beam_size, args.threads, 0.0 if args.no_fallback else TEMPERATURE_INCREMENT
    systems = {
        "fw-int8 (base)": faster_whisper(args.base, "int8", b, t, f),
        "fw-f32 (base)": faster_whisper(args.base, "float32", b, t, f),
        "ours default (base)": ours(args.base, b, t, "auto", f),
        "ours cut unadapted (base)": ours(args.base, b, t, "auto", f, "auto", force=True),
        "ours full (adapted)": ours(args.adapted, b, t, "auto", f, "full"),
        "ours cut (adapted)": ours(args.adapted, b, t, "auto", f),
        "ours cut int8 (adapted)": ours(args.adapted, b, t, "auto", f, compute_type="int8"),
        "ours cut torch (adapted)": ours(args.adapted, b, t, "torch", f),
        "whisper.cpp full (adapted)": whisper_cpp(args.adapted, t, False, work, f),
        "whisper.cpp cut (adapted)": whisper_cpp(args.adapted, t, True, work, f),
        "whisper.cpp cut (base)": whisper_cpp(args.base, t, True, work, f),
        "whisper.cpp full (base)": whisper_cpp(args.base, t, False, work, f),
    }
    wanted = set(args.only.split(",")) if args.only else set(systems)
    print(f"{len(audios)} clips, {min(seconds):.1f}-{max(seconds):.1f} s (mean {sum(seconds) / len(seconds):.1f} s, "
          f"{sum(seconds):.0f} s in all); base {args.base}, adapted {args.adapted}; beam {b}, threads {t}, "
          f"temperatures {temperatures(f)}, fastest of {args.repeat} pass(es)")
    results = {}
    print(f"{'system':30s} {'wall s':>7s} {'cpu s':>7s} {'x real':>7s} {'vs fw-int8':>10s} {'WER':>7s}")
    for name, load in systems.items():
        if name not in wanted:
            continue
        try:
            texts, wall, cpu = measure(load, audios, args.repeat)
        except ImportError as exc:
            print(f"{name:30s} skipped: {exc}")
            continue
        results[name] = (texts, wall)
        ref = results.get("fw-int8 (base)")
        ratio = f"{wall / ref[1]:9.2f}x" if ref else f"{'-':>10s}"  # no fw-int8 row in this run
        print(f"{name:30s} {wall:7.1f} {cpu:7.1f} {sum(seconds) / wall:7.1f} {ratio} "
              f"{corpus_wer(refs, texts):7.2%}", flush=True)
    # The last pair is the yardstick: how often whisper.cpp and our decoder (token for token
    # faster-whisper's) agree on the original model, with no cut context involved.
    pairs = [("whisper.cpp cut (adapted)", "ours cut torch (adapted)"), ("whisper.cpp cut (adapted)", "ours cut (adapted)"),
             ("whisper.cpp full (adapted)", "ours full (adapted)"), ("whisper.cpp full (base)", "ours default (base)")]
    for a, c in pairs:
        if a in results and c in results:
            same = sum(normalise(results[a][0][p]) == normalise(results[c][0][p]) for p in audios)
            print(f"same text, {a} vs {c}: {same}/{len(audios)} clips")


if __name__ == "__main__":
    main()
