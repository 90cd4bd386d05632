"""Training step time and peak memory of whisperft's memory/speed options, as ratios against
the plain fp32 run, measured in one invocation on this machine.

Each configuration runs the real `whisperft train` in its own process (so peak memory is its
own) on the same windows: batch B x 30 s, N optimizer steps; the first step is warm-up and
not timed. The cached configuration's run includes encoding every window once (its "cache s"):
the last line says after how many epochs that build has paid for itself. The windows are a prepared manifest (--train-json, e.g. the demo's) or, by default,
synthetic ones shaped like real 30 s windows of dictation (~70 words with timestamps, every
other one with a ~100-word previous-text prompt; noise for features).

    python bench/bench_train.py [--model tiny.en] [--batch-size 8] [--steps 3] [--only NAME ...]
                                [--train-json train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "fp32 (baseline)": [],
    "gradient checkpointing": ["--gradient-checkpointing"],
    "8-bit AdamW": ["--use-adam-8bit"],
    "frozen encoder": ["--train-only-decoder", "--no-cache-encoder-outputs"],
    "frozen encoder, cached": ["--train-only-decoder"],
    "AMP bf16": ["--use-amp"],
}


def make_manifest(folder: Path, n: int, n_mels: int) -> Path:
    from whisperft.manifest import Record, write_manifest

    rng = np.random.default_rng(0)
    words = "the patient was given forty milligrams of atorvastatin twice daily".split()
    sentence = lambda k: " ".join(words[j % len(words)] for j in range(k, k + 12 + k % 4))
    records = []
    for i in range(n):
        fp = folder / f"w{i}.npy"
        np.save(fp, (rng.standard_normal((n_mels, 3000)) * 0.3).astype(np.float16))
        # five sentences in 30 s (~70 words, as the demo's dictation); a prompt on every other window
        text = "".join(f"<|{6 * k:.2f}|> {sentence(k + i)}.<|{6 * k + 5.5:.2f}|>" for k in range(5))
        prompt = " ".join(sentence(k) + "." for k in range(8)) if i % 2 else ""
        records.append(Record(audio_path=str(fp), text=text, prompt=prompt, duration=30.0, features_path=str(fp),
                              n_mels=n_mels))
    path = folder / "train.json"
    write_manifest(path, records)
    return path


def run(name: str, extra: list[str], manifest: Path, args, workdir: Path) -> dict:
    out = workdir / name.replace(" ", "_").replace("(", "").replace(")", "")
    cmd = [sys.executable, "-m", "whisperft", "train", "--train-json", str(manifest), "--model", args.model,
           "--batch-size", str(args.batch_size), "--accum-grad-steps", "1", "--train-steps", str(args.steps),
           "--eval-steps", str(args.steps), "--log-steps", "1", "--warmup-steps", "1",
           "--save-dir", str(out), *extra]
    env = {**os.environ, "WHISPERFT_CPU_AMP": "1"}
    # peak RSS of the child: ru_maxrss of RUSAGE_CHILDREN is the max over waited children, so
    # every configuration runs in a fresh helper process that reports only its own child.
    code = ("import resource,subprocess,sys,json;"
            "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
            "import re;c=re.search(r'encoder cache: \\d+ windows encoded once in ([\\d.]+) s',r.stderr);"
            "print(json.dumps({'rc':r.returncode,'err':r.stderr[-1500:],'cache_s':float(c.group(1)) if c else 0.0,"
            "'maxrss_kb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    res = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, env=env, cwd=REPO)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if info["rc"] != 0:
        return {"name": name, "error": info["err"].strip().splitlines()[-1] if info["err"].strip() else "failed"}
    log = [json.loads(l) for l in open(out / "metrics.jsonl") if '"loss"' in l]
    timed = [e["sec_per_step"] for e in log[1:]] or [log[0]["sec_per_step"]]
    # the cached run's cost includes encoding every window once, before its first step
    return {"name": name, "sec_per_step": float(np.mean(timed)), "peak_gb": info["maxrss_kb"] / 1e6,
            "cache_s": info["cache_s"], "run_s": float(np.mean(timed)) * args.steps + info["cache_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, help="subset of: " + ", ".join(CONFIGS))
    p.add_argument("--train-json", default=None, help="a prepared manifest to train on (default: synthetic)")
    args = p.parse_args()
    from whisperft.manifest import read_manifest
    from whisperft.models import load_model

    n_mels = load_model(args.model).n_mels
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = Path(args.train_json).resolve() if args.train_json else make_manifest(tmp, args.batch_size, n_mels)
        n_windows = len(read_manifest(manifest))
        rows = [run(n, e, manifest, args, tmp) for n, e in CONFIGS.items() if not args.only or n in args.only]
    base = next((r for r in rows if "sec_per_step" in r), None)
    data = args.train_json or "synthetic windows"
    print(f"\n{args.model}, batch {args.batch_size} x 30 s of {data}, {os.cpu_count()} CPU cores "
          f"(peak = process max RSS)")
    print(f"{'configuration':<24} {'s/step':>8} {'vs fp32':>8} {'peak GB':>8} {'vs fp32':>8} "
          f"{'cache s':>8} {f'{args.steps} steps s':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<24} failed: {r['error']}")
            continue
        print(f"{r['name']:<24} {r['sec_per_step']:8.2f} {r['sec_per_step'] / base['sec_per_step']:7.2f}x "
              f"{r['peak_gb']:8.2f} {r['peak_gb'] / base['peak_gb']:7.2f}x {r['cache_s']:8.2f} {r['run_s']:12.2f}")
    print_cache_payoff({r["name"]: r for r in rows if "error" not in r}, n_windows, args.batch_size)


def print_cache_payoff(rows: dict, n_windows: int, batch_size: int) -> None:
    """After how many epochs encoding every window once costs less than encoding it every step:
    the build against the per-step saving of the cached run over the uncached one."""
    cached, plain = rows.get("frozen encoder, cached"), rows.get("frozen encoder")
    if not cached or not plain:
        return
    per_window = cached["cache_s"] / n_windows  # the build encodes each window once
    saved = (plain["sec_per_step"] - cached["sec_per_step"]) / batch_size  # per window trained on
    if saved <= 0:
        print(f"encoder cache: built in {cached['cache_s']:.2f} s and saves nothing per step here: it never pays off")
        return
    epochs = per_window / saved
    print(f"encoder cache: built in {cached['cache_s']:.2f} s ({per_window:.3f} s a window); a cached step saves "
          f"{saved:.3f} s a window: caching pays off after {epochs:.2f} epoch(s)")


if __name__ == "__main__":
    main()
