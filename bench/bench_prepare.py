"""Data preparation speed (x real time) and feature-loading speedup, measured in one run.

1. `prepare()` on the demo's espeak-ng recordings with SRT (demo/make_data.py, generated into a
   temporary folder): seconds of audio prepared per wall second, writing window WAVs with and
   without precomputed log-mels (--precompute-features, the default, vs
   --no-precompute-features), and with --no-dump (manifest only). The Whisper tokenizer is
   loaded before timing (a one-off ~1 s per run, not per hour of audio).
2. Feature loading: the log-mel of N prepared windows, as training gets it
   (`whisperft.data.WhisperDataset.features`), from the precomputed float16 .npy vs decoding
   the window's WAV and computing the log-mel, vs decoding the source recording (--no-dump).

    python bench/bench_prepare.py [--scale 0.5] [--windows 32] [--repeat 3]

Timings on a shared machine vary; the ratios of one run are what to read.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def time_prepare(opts, repeat: int) -> float:
    """Best wall time of `repeat` runs of prepare(opts) (stdout/stderr of the runs silenced)."""
    import contextlib
    import io

    from whisperft.prepare import prepare

    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            prepare(dataclasses.replace(opts, overwrite=True))
        best = min(best, time.perf_counter() - start)
    return best


def time_features(dataset, records, repeat: int) -> float:
    """Best wall time to get the log-mel of every record through dataset.features."""
    best = float("inf")
    for _ in range(repeat):
        dataset._decoded.clear()  # no decoded audio carried over from the previous pass
        start = time.perf_counter()
        for r in records:
            dataset.features(r)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.5, help="fraction of the demo data set to generate")
    p.add_argument("--windows", type=int, default=32, help="windows whose features are loaded")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = p.parse_args()

    import torch

    from demo.make_data import make_demo_data
    from whisperft.data import DataOptions, WhisperDataset
    from whisperft.manifest import read_manifest
    from whisperft.prepare import PrepareOptions, make_token_counter

    with tempfile.TemporaryDirectory(prefix="whisperft-bench-prepare-") as tmp:
        tmp = Path(tmp)
        info = make_demo_data(tmp / "data", scale=args.scale)["splits"]["train"]
        audio_s = info["duration_s"]
        make_token_counter("multilingual")  # loaded once, before timing
        base = PrepareOptions(audio_dir=info["audio_dir"], transcript_dir=info["transcript_dir"], language="en")
        variants = {
            "WAV + features (default)": dict(precompute_features=True),
            "WAV only (--no-precompute-features)": dict(precompute_features=False),
            "manifest only (--no-dump)": dict(no_dump=True, precompute_features=False),
        }
        rows = []
        for i, (name, kw) in enumerate(variants.items()):
            opts = dataclasses.replace(base, output=str(tmp / f"v{i}.json"), dump_dir=str(tmp / f"dump{i}"), **kw)
            rows.append((name, time_prepare(opts, args.repeat)))

        print(f"\npreparation: {len(info['recordings'])} recordings, {audio_s:.0f} s of audio "
              f"({info['n_sentences']} cues), best of {args.repeat}, {os.cpu_count()} CPU cores, "
              f"torch threads {torch.get_num_threads()}")
        for name, t in rows:
            print(f"  {name:<38} {t:6.2f} s  {audio_s / t:7.0f}x real time")
        t_feat, t_wav = rows[0][1], rows[1][1]
        print(f"  precomputing features costs {t_feat / t_wav:.2f}x the preparation time of WAVs alone")

        records = read_manifest(tmp / "v0.json")
        records = (records * (args.windows // len(records) + 1))[:args.windows]
        # The dataset only reads the layout's `multilingual` here; features() needs nothing else.
        dataset = WhisperDataset(records, SimpleNamespace(multilingual=True), 80, DataOptions())
        from_wav = [dataclasses.replace(r, features_path=None) for r in records]
        nodump = {(Path(r.audio_path).stem, r.start): r for r in read_manifest(tmp / "v2.json")}
        from_source = [nodump[(Path(r.source).stem, r.start)] for r in records]
        t_npy = time_features(dataset, records, args.repeat)
        t_wav_load = time_features(dataset, from_wav, args.repeat)
        t_src = time_features(dataset, from_source, args.repeat)
        n = len(records)
        print(f"\nfeature loading: log-mel (80, 3000) of {n} windows via WhisperDataset.features, best of {args.repeat}")
        print(f"  precomputed float16 .npy           {t_npy:6.3f} s  {1000 * t_npy / n:6.1f} ms/window")
        print(f"  decode window WAV + log-mel        {t_wav_load:6.3f} s  {1000 * t_wav_load / n:6.1f} ms/window"
              f"  -> .npy is {t_wav_load / t_npy:.1f}x faster ({1 - t_npy / t_wav_load:.0%} less time)")
        print(f"  decode source recording + log-mel  {t_src:6.3f} s  {1000 * t_src / n:6.1f} ms/window"
              f"  -> .npy is {t_src / t_npy:.1f}x faster ({1 - t_npy / t_src:.0%} less time)")


if __name__ == "__main__":
    main()
