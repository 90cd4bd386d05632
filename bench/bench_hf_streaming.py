"""Peak memory (RSS) of `create_data.py --hf-dataset` on a small and a ten times larger dataset.

One parquet file of N rows (espeak-ng sentences, 2-5 s each, every row made distinct by faint
noise so parquet cannot share their bytes: about 100 kB of WAV a row; row groups of
ROW_GROUP_ROWS rows, about 10 MB, as the Hub's own parquet files of audio hold) is prepared as clips
by the real `whisperft prepare --hf-dataset FILE`, each run in its own process, which reports its own
high-water RSS (VmHWM) at the end. Arms:
  - streaming: `--streaming`, rows read from the parquet file a few at a time (hf_data.ParquetStream);
  - cached: `load_dataset` as it comes: the file converted into datasets' Arrow cache first,
    then read from the memory-mapped cache (whose touched pages count in RSS).
The manifest and the dump (WAVs, and log-mels unless --no-features) are written as usual.
Flat memory: the peak for N_LARGE rows over the peak for N_SMALL rows stays near 1: a streamed
file is read a few rows at a time, so the peak grows with the rows of a batch, not of the file.

    python bench/bench_hf_streaming.py [--rows 200 2000] [--arms streaming cached] [--no-features]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet again next Tuesday at three o'clock in the afternoon.",
    "A short line.",
    "Numbers like forty two are spoken one word at a time.",
]

# Run in the child: prepare, then print its own peak RSS as JSON (the last line of stdout). The
# peak is VmHWM, its own address space's high-water mark: ru_maxrss also takes in the RSS of the
# parent at the fork (Linux carries it over exec), which hid the child's own peak under the
# parent's after it had built a large file.
CHILD = """
import contextlib, io, json, re, sys, time
from pathlib import Path
from whisperft.cli import main
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(sys.argv[1:])
hwm_kb = int(re.search(r"VmHWM:\\s*(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - start, "peak_mb": hwm_kb / 1024}))
"""


def speech(root: Path) -> list[tuple[np.ndarray, str]]:
    from whisperft.audio import load_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is needed (apt-get install espeak-ng)")
    out = []
    for i, text in enumerate(SENTENCES):
        path = root / f"s{i}.wav"
        subprocess.run([exe, "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        out.append((load_audio(path), text))
    return out


ROW_GROUP_ROWS = 100


def write_parquet(path: Path, n_rows: int, clips: list[tuple[np.ndarray, str]], cache: Path) -> None:
    """N distinct rows {audio: {bytes, path}, sentence} as a datasets parquet file."""
    import datasets

    from whisperft.audio import save_wav

    def rows():
        rng = np.random.default_rng(0)
        for i in range(n_rows):
            audio, text = clips[i % len(clips)]
            noisy = audio + rng.normal(0, 1e-3, audio.size).astype(np.float32)
            with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
                save_wav(tmp.name, noisy)
                data = Path(tmp.name).read_bytes()
            yield {"audio": {"bytes": data, "path": f"row{i}.wav"}, "sentence": text}

    dataset = datasets.Dataset.from_generator(rows, cache_dir=str(cache))
    dataset.cast_column("audio", datasets.Audio()).to_parquet(str(path), batch_size=ROW_GROUP_ROWS)


def run_arm(parquet: Path, streaming: bool, features: bool, work: Path) -> dict:
    output = work / "out" / "data.json"
    shutil.rmtree(work / "out", ignore_errors=True)
    args = ["prepare", "--hf-dataset", str(parquet), "--output", str(output), "--overwrite"]
    args += ["--streaming"] if streaming else []
    args += [] if features else ["--no-precompute-features"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(work / "hf-cache"),
           "OMP_NUM_THREADS": "1"}
    shutil.rmtree(work / "hf-cache", ignore_errors=True)  # each cached run converts afresh
    result = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        sys.exit(f"prepare failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["examples"] = sum(1 for _ in output.open())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[200, 2000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--arms", nargs="+", choices=["streaming", "cached"], default=["streaming", "cached"])
    parser.add_argument("--no-features", action="store_true", help="--no-precompute-features in the runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_hf_") as tmp:
        work = Path(tmp)
        clips = speech(work)
        files = {}
        for n in args.rows:
            files[n] = work / f"rows{n}.parquet"
            write_parquet(files[n], n, clips, work / "build-cache")
            print(f"{files[n].name}: {n} rows, {files[n].stat().st_size / 2**20:.0f} MiB", flush=True)
        for arm in args.arms:
            peaks = []
            for n in args.rows:
                report = run_arm(files[n], arm == "streaming", not args.no_features, work)
                assert report["examples"] == n, report
                peaks.append(report["peak_mb"])
                print(f"{arm:9s} {n:6d} rows: peak RSS {report['peak_mb']:7.1f} MiB, "
                      f"{report['seconds']:6.1f} s, {report['examples']} examples", flush=True)
            print(f"{arm:9s} peak RSS ratio {args.rows[1]} / {args.rows[0]} rows: {peaks[1] / peaks[0]:.3f}"
                  f" (+{peaks[1] - peaks[0]:.1f} MiB)", flush=True)


if __name__ == "__main__":
    main()
