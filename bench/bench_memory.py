"""Peak memory (CPU RSS) of transcribing a long file, and of a LoRA run's checkpoints.

Arm "transcribe": the real `whisperft transcribe` (`transcribe_dir`, torch backend, tiny.en,
greedy) on one synthetic 10-minute file and one synthetic 2-hour file, each in its own process.
The peak is the process's high-water RSS from just after the model is loaded (/proc/self/
clear_refs resets it) to the end; the RSS after loading is printed beside it. Both files are
decoded to the end through the ordinary path (file decoding, log-mel, every 30 s window through
the encoder and the decoder): nothing is cut short. To make 2 hours affordable on a small CPU the
files are speech (espeak-ng, ~40 s) at both ends and faint noise (-70 dBFS) in between: a
window of noise costs one encoder pass and a short decode before it is skipped as no-speech,
which is the real cost of such a window, not a shortcut.

Arm "features": only the feature path of the same files (the transcriber's per-file features,
then every window of them once), in its own process: the part whose memory grew with the length.

Arm "lora": a real `whisperft train --lora-rank 8` on base, 2 steps with validation (and so a
best_model.pt) at each step, in its own process. Its peak is the training steps'; what matters
here is each checkpoint write on its own (`save_checkpoint` and `_save_adapter` of
whisperft.train, wrapped): the RSS when it starts and how much higher the high-water mark goes
while it runs, against the size of the adapter and of the model. A write that merges into a
copy of the model shows up as ~1x the model; one that adds only the adapter, as ~0. Each pair runs
twice: with glibc's malloc as it comes, and with a fixed mmap threshold, which keeps freed blocks
from staying in the process and so shows what a save actually holds.

    python bench/bench_memory.py [--only transcribe features lora] [--hours 2] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

NOISE_DBFS = -70.0


# --------------------------------------------------------------------------------------------
# memory of this process


def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def _reset_peak() -> None:
    """Restart the high-water RSS (VmHWM, ru_maxrss) from the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _settle() -> int:
    """Collect garbage and hand free heap pages back to the OS (glibc keeps freed blocks
    resident, which later allocations reuse unseen); return the RSS in kB: what is live."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _status_kb("VmRSS")


# --------------------------------------------------------------------------------------------
# synthetic audio


def _speech(workdir: Path) -> np.ndarray:
    from demo.make_data import EVERYDAY_SENTENCES
    from whisperft.audio import SAMPLE_RATE, load_audio

    parts = []
    for i, s in enumerate(EVERYDAY_SENTENCES[:8]):
        wav = workdir / f".s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), s], check=True,
                       capture_output=True)
        parts += [load_audio(wav), np.zeros(SAMPLE_RATE // 2, np.float32)]
        wav.unlink()
    return np.concatenate(parts)


def write_flac(path: Path, seconds: float, speech: np.ndarray) -> Path:
    """speech, then noise, then speech again: `seconds` long in all, written a block at a time
    (the file is never held whole here either) as 16-bit FLAC."""
    import av

    from whisperft.audio import SAMPLE_RATE

    rng = np.random.default_rng(0)
    total = int(seconds * SAMPLE_RATE)
    noise_len = total - 2 * len(speech)
    assert noise_len > 0
    amp = 10 ** (NOISE_DBFS / 20)

    def blocks():
        yield speech
        left = noise_len
        while left > 0:
            n = min(left, 60 * SAMPLE_RATE)
            yield (amp * rng.standard_normal(n)).astype(np.float32)
            left -= n
        yield speech

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        stream.format = "s16"
        for block in blocks():
            pcm = (np.clip(block, -1, 1) * 32767).round().astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# --------------------------------------------------------------------------------------------
# children (each runs in a fresh process)


def child_transcribe(audio: str, model: str) -> dict:
    from whisperft import transcribe as tr
    from whisperft.transcription import TranscribeOptions

    marks = {}
    load = tr.load_transcriber

    def loaded_then_reset(opts):
        runner = load(opts)
        marks["rss_loaded_kb"] = _settle()
        _reset_peak()
        marks["t0"] = time.perf_counter()
        return runner

    tr.load_transcriber = loaded_then_reset
    with tempfile.TemporaryDirectory() as out:
        opts = TranscribeOptions(audio_dir=audio, save_dir=out, model=model, beam_size=1, batch_size=1,
                                 device="cpu", format="txt", overwrite=True)
        rc = tr.transcribe_dir(opts)
        text = next(Path(out).glob("*.txt")).read_text() if rc == 0 else ""
    return {"rc": rc, "peak_kb": _status_kb("VmHWM"), "rss_loaded_kb": marks["rss_loaded_kb"],
            "seconds": time.perf_counter() - marks["t0"], "words": len(text.split())}


def child_features(audio: str, model: str) -> dict:
    """The transcriber's features of the file, every window once (seek moved by 30 s)."""
    from whisperft import transcribe as tr
    from whisperft.audio import N_FRAMES, load_audio
    from whisperft.transcription import TranscribeOptions

    runner = tr.load_transcriber(TranscribeOptions(model=model, device="cpu"))
    loaded = _settle()
    _reset_peak()
    t0 = time.perf_counter()
    opener = getattr(runner, "open_audio", None)  # streaming from the file, where there is one
    source = opener(audio) if opener is not None else load_audio(audio)
    st = runner._start(0, source)
    windows = 0
    while st.seek < st.content_frames:
        st.window()
        st.seek += N_FRAMES
        windows += 1
    return {"rc": 0, "peak_kb": _status_kb("VmHWM"), "rss_loaded_kb": loaded,
            "seconds": time.perf_counter() - t0, "windows": windows,
            "path": "streamed from the file" if opener is not None else "load_audio + whole-file log-mel"}


def child_lora(manifest: str, out: str, model: str, steps: int, rank: str = "8") -> dict:
    """A real `whisperft train --lora-rank 8` run, each checkpoint write measured on its own:
    the RSS when it starts, and how far above that the high-water mark goes while it runs."""
    import functools
    import resource

    from whisperft import cli
    from whisperft import train as train_module

    saves, high = [], [0]  # high: the run's high-water mark before each restart of it

    def measured(fn, what):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            high[0] = max(high[0], _status_kb("VmHWM"))
            before = _settle()
            _reset_peak()
            try:
                return fn(*args, **kwargs)
            finally:
                dtype = kwargs.get("dtype", args[3] if len(args) > 3 else None)
                saves.append({"what": what(args), "dtype": str(dtype).replace("torch.", ""),
                              "rss_before_kb": before, "added_kb": _status_kb("VmHWM") - before})
        return wrapper

    # looked up in the module at call time by train(): whichever of these exist are measured
    if hasattr(train_module, "save_checkpoint"):
        train_module.save_checkpoint = measured(train_module.save_checkpoint, lambda a: Path(a[1]).name)
    if hasattr(train_module, "_save_adapter"):
        train_module._save_adapter = measured(train_module._save_adapter, lambda a: "lora_adapter/")
    t0 = time.perf_counter()
    rc = cli.main(["train", "--train-json", manifest, "--dev-json", manifest, "--model", model,
                   "--lora-rank", rank, "--batch-size", "1", "--dev-batch-size", "1", "--accum-grad-steps", "1",
                   "--train-steps", str(steps), "--eval-steps", "1", "--log-steps", "1", "--warmup-steps", "1",
                   "--device", "cpu", "--num-workers", "0", "--save-dir", out])
    # the high-water mark was restarted at each save: the run's is the highest of its stretches
    return {"rc": rc, "peak_kb": max(high[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "saves": saves,
            "seconds": time.perf_counter() - t0}


CHILDREN = {"transcribe": child_transcribe, "features": child_features, "lora": child_lora}


def spawn(name: str, *args, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", name, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, **(env or {})})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"rc": proc.returncode or 1, "error": tail}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------
# arms


def mb(kb: float) -> float:
    return kb / 1024


def arm_audio(kind: str, files: dict[str, Path], model: str) -> None:
    rows = {label: spawn(kind, path, model) for label, path in files.items()}
    print(f"\n== {kind}: {model}, torch backend, CPU, beam 1, batch 1 (peak = high-water RSS after the model "
          f"is loaded)")
    print(f"{'file':<10} {'RSS loaded MB':>14} {'peak MB':>9} {'peak - loaded':>14} {'seconds':>8}  notes")
    for label, r in rows.items():
        if "error" in r or r["rc"] != 0:
            print(f"{label:<10} failed: {r.get('error', r)}")
            continue
        note = f"{r['words']} words" if "words" in r else f"{r['windows']} windows, {r['path']}"
        print(f"{label:<10} {mb(r['rss_loaded_kb']):14.0f} {mb(r['peak_kb']):9.0f} "
              f"{mb(r['peak_kb'] - r['rss_loaded_kb']):14.0f} {r['seconds']:8.1f}  {note}")
    ok = [r for r in rows.values() if "error" not in r and r["rc"] == 0]
    if len(ok) == 2:
        short, long = ok
        grow = mb(long["peak_kb"] - short["peak_kb"])
        print(f"long/short peak: {long['peak_kb'] / short['peak_kb']:.2f}x; the long file's peak is "
              f"{grow:+.0f} MB from the short one's; transcription's own memory (peak - loaded): "
              f"{mb(short['peak_kb'] - short['rss_loaded_kb']):.0f} MB vs "
              f"{mb(long['peak_kb'] - long['rss_loaded_kb']):.0f} MB")


def arm_lora(model: str, steps: int, workdir: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import torch
    from bench_train import make_manifest

    from whisperft.models import load_model

    bundle = load_model(model)
    n_params = sum(p.numel() for p in bundle.model.parameters())
    # the adapter: rank-8 A and B of every targeted Linear (training's default targets)
    targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    adapter = sum(8 * (m.in_features + m.out_features) for name, m in bundle.model.named_modules()
                  if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets)
    n_mels = bundle.n_mels
    del bundle
    manifest = make_manifest(workdir, 2, n_mels)
    model_mb, adapter_mb = n_params * 4 / 2**20, adapter * 4 / 2**20
    for i, (allocator, env) in enumerate(ALLOCATORS.items()):
        runs = {"LoRA r=8": spawn("lora", manifest, workdir / f"lora{i}", model, steps, 8, env=env),
                # the peer: the same run as a full fine-tune, whose checkpoint is a plain model's
                "full fine-tuning": spawn("lora", manifest, workdir / f"full{i}", model, steps, 0, env=env)}
        print(f"\n== checkpoint memory: whisperft train on {model}, {steps} steps, validation + best_model.pt "
              f"at every step, CPU, {allocator}; LoRA r=8 against a full fine-tune")
        print(f"model: {n_params / 1e6:.1f} M parameters = {model_mb:.0f} MB fp32, {model_mb / 2:.0f} MB fp16; "
              f"adapter: {adapter / 1e6:.2f} M parameters = {adapter_mb:.1f} MB fp32")
        _print_saves(runs, model_mb, adapter_mb)


# glibc's malloc raises its mmap threshold each time a large block is freed, after which blocks
# of that size come from the heap and freed ones stay in the process: RSS then counts memory no
# longer held. A fixed threshold shows what a save holds.
ALLOCATORS = {"glibc malloc as it comes": {}, "glibc malloc, fixed mmap threshold": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def _print_saves(runs: dict, model_mb: float, adapter_mb: float) -> None:
    worst = {}
    for label, r in runs.items():
        if "error" in r or r["rc"] != 0:
            print(f"{label}: failed: {r.get('error', r)}")
            continue
        print(f"{label}: {r['seconds']:.0f} s, peak RSS of the process {mb(r['peak_kb']):.0f} MB "
              f"(training steps included)")
        print(f"  {'write':<16} {'dtype':<8} {'RSS before MB':>14} {'added MB':>9} {'x adapter':>10} "
              f"{'x model fp32':>13}")
        for save in r["saves"]:
            added = mb(save["added_kb"])
            print(f"  {save['what']:<16} {save['dtype'] if save['dtype'] != 'None' else '':<8} "
                  f"{mb(save['rss_before_kb']):14.0f} {added:9.0f} {added / adapter_mb:10.1f} "
                  f"{added / model_mb:13.2f}")
            key = (save["what"], save["dtype"])
            worst.setdefault(label, {})[key] = max(worst.get(label, {}).get(key, 0.0), added)
    if len(worst) == 2:
        lora, full = worst["LoRA r=8"], worst["full fine-tuning"]
        for key in sorted(set(lora) & set(full)):
            extra = lora[key] - full[key]
            print(f"{key[0]} ({key[1]}): LoRA adds {lora[key]:.0f} MB, a full fine-tune {full[key]:.0f} MB: "
                  f"{extra:+.0f} MB = {extra / adapter_mb:+.1f}x the adapter, {extra / model_mb:+.2f}x the "
                  f"fp32 model (a merged copy of the model on the device would be +1x)")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        name, args = sys.argv[2], sys.argv[3:]
        if name == "lora":
            args = [args[0], args[1], args[2], int(args[3]), *args[4:]]
        print(json.dumps(CHILDREN[name](*args)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=["transcribe", "features", "lora"], default=None)
    p.add_argument("--hours", type=float, default=2.0, help="length of the long file")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the short file")
    p.add_argument("--model", default="tiny.en", help="transcription model")
    p.add_argument("--lora-model", default="base")
    p.add_argument("--lora-steps", type=int, default=2)
    args = p.parse_args()
    arms = args.only or ["features", "transcribe", "lora"]
    print(f"{os.cpu_count()} CPU cores; {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if {"transcribe", "features"} & set(arms):
            speech = _speech(tmp)
            files = {f"{args.minutes:g} min": write_flac(tmp / "short" / "short.flac", args.minutes * 60, speech),
                     f"{args.hours:g} h": write_flac(tmp / "long" / "long.flac", args.hours * 3600, speech)}
            for kind in ("features", "transcribe"):
                if kind in arms:
                    arm_audio(kind, files, args.model)
        if "lora" in arms:
            arm_lora(args.lora_model, args.lora_steps, tmp)


if __name__ == "__main__":
    main()
