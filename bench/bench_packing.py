"""Packed vs one-clip-per-window training on short clips, in one run.

Data: espeak-ng readings of the demo's training sentences (demo/make_data.py: 5 voices,
medical dictation), one clip per sentence, kept when 3-8 s long (Common Voice's range),
listed voice by voice; dev: the demo's dev sentences, one clip each.
Both arms prepare the same list.tsv with `prepare()` (real Whisper tokenizer) and train the
bundled tiny.en with `whisperft.train.train`, same batch size, same learning rate and
schedule, the SAME NUMBER OF OPTIMIZER STEPS (each step encodes batch x 30 s either way, so
the wall times come out close; both are printed):
  - one clip per window: `--without-timestamps --data-file list.tsv`, trained with
    --no-timestamps-training (plain-text clips: the Hugging Face blog recipe);
  - packed: `... --pack`, trained with the defaults (timestamps, half the examples without);
  - peer, "HF Seq2SeqTrainer (blog recipe)" (bench/peer_hf_trainer.py, skip with --no-peer):
    the same clips and weights (tiny.en converted to a Hugging Face folder), same batch size,
    steps and learning rate, trained the way the Hugging Face fine-tuning blog does (feature
    extractor `map`, padding collator, Seq2SeqTrainer), one clip per window, no timestamps.
Printed: seconds of labelled speech consumed per wall second of training (steps only: no model
loading, evaluation or saving), and dev WER of tiny.en before and after each run, decoding
greedily without and with timestamps.

    python bench/bench_packing.py [--clips 120] [--steps 12] [--batch-size 4] [--lr 1e-4] [--no-peer]

The defaults take ~10 minutes on 2 CPU cores; the must-show scale (hours of speech,
thousands of steps) wants a GPU. Timings on a shared machine vary; read the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MIN_CLIP_S, MAX_CLIP_S = 3.0, 8.0  # Common Voice-style clip lengths kept for training
DEV_VOICE = "us-f"


def make_clips(folder: Path, n_train: int, n_dev: int) -> tuple[Path, Path, float]:
    """Synthesise the clips; write train/list.tsv and dev/list.tsv. Returns (train, dev, train seconds)."""
    from demo.make_data import DEV_SENTENCES, SAMPLE_RATE, TRAIN_SENTENCES, VOICES, synthesize
    from whisperft.audio import save_wav

    work = folder / "espeak"
    work.mkdir(parents=True)
    lines, seconds = [], 0.0
    (folder / "train").mkdir()
    # voice by voice (speaker order), each reading the sentences in order, until n_train clips
    pairs = [(v, s) for v in VOICES.values() for s in TRAIN_SENTENCES]
    for i, (voice, sentence) in enumerate(pairs):
        if len(lines) >= n_train:
            break
        audio = synthesize(sentence, voice, work)
        if not MIN_CLIP_S <= len(audio) / SAMPLE_RATE <= MAX_CLIP_S:
            continue
        name = f"train/{voice.key}_{i:04d}.wav"
        save_wav(folder / name, audio)
        lines.append(f"{name}\t{sentence}\n")
        seconds += len(audio) / SAMPLE_RATE
    (folder / "train.tsv").write_text("".join(lines), encoding="utf-8")
    dev_lines = []
    (folder / "dev").mkdir()
    for i, sentence in enumerate(DEV_SENTENCES[:n_dev]):
        name = f"dev/{DEV_VOICE}_{i:04d}.wav"
        save_wav(folder / name, synthesize(sentence, VOICES[DEV_VOICE], work))
        dev_lines.append(f"{name}\t{sentence}\n")
    (folder / "dev.tsv").write_text("".join(dev_lines), encoding="utf-8")
    return folder / "train.tsv", folder / "dev.tsv", seconds


def run_prepare(data_file: Path, output: Path, pack: bool) -> float:
    from whisperft.prepare import PrepareOptions, prepare

    opts = PrepareOptions(data_file=str(data_file), without_timestamps=True, pack=pack, output=str(output),
                          tokenizer_type="english", overwrite=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        prepare(opts)
    print("   ", out.getvalue().strip().replace("\n", "\n    "))
    return time.perf_counter() - start


def speech_seconds_of(record) -> float:
    from whisperft.windows import speech_seconds

    if "<|" in record.text:
        return speech_seconds(record.text)  # the clips between their timestamps (grid-rounded up, < 20 ms)
    return record.duration if record.text else 0.0


def speech_per_step(manifest: Path, batch_size: int, steps: int, seed: int) -> tuple[list[float], list[int]]:
    """Seconds of labelled speech, and examples, in each batch train() draws in `steps` steps
    (accum 1, 1 process)."""
    from whisperft.data import BucketBatchSampler
    from whisperft.manifest import read_manifest
    from whisperft.data import BatchStream

    records = read_manifest(manifest)
    sampler = BucketBatchSampler([len(r.text) + len(r.prompt) for r in records], batch_size, seed=seed)
    stream = iter(BatchStream(sampler, world=1, rank=0, start_micro_step=0))
    batches = [[i for _, i in next(stream)] for _ in range(steps)]
    return [sum(speech_seconds_of(records[i]) for i in b) for b in batches], [len(b) for b in batches]


def steady_throughput(r: dict, batch_size: int) -> float | None:
    """Speech per second over the steps with a full batch, the first (warm-up) step left out:
    what a long run sees, where the one short batch at each epoch's end no longer counts."""
    keep = [i for i, n in enumerate(r["step_sizes"]) if i > 0 and n == batch_size]
    if not keep:
        return None
    return sum(r["step_speech"][i] for i in keep) / sum(r["step_times"][i] for i in keep)


def run_train(name: str, manifest: Path, save_dir: Path, args, **kw) -> dict:
    from whisperft.train import TrainConfig, train

    cfg = TrainConfig(train_json=str(manifest), model=args.model, save_dir=str(save_dir),
                      batch_size=args.batch_size, accum_grad_steps=1, lr=args.lr, warmup_steps=1,
                      train_steps=args.steps, eval_steps=args.steps, log_steps=1, device="cpu",
                      seed=args.seed, **kw)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(cfg)
    total = time.perf_counter() - start
    log = [json.loads(line) for line in open(save_dir / "metrics.jsonl") if '"loss"' in line]
    step_times = [e["sec_per_step"] for e in log]
    step_s = sum(step_times)
    print(f"    {name}: {args.steps} steps in {step_s:.1f} s ({total:.1f} s with loading and saving); "
          f"loss {log[0]['loss']:.2f} -> {log[-1]['loss']:.2f}")
    return {"step_seconds": step_s, "step_times": step_times, "wall_seconds": total, "last_loss": log[-1]["loss"]}


def dev_wer(model_ref: str, dev_manifest: Path, timestamps: bool, batch_size: int = 8) -> float:
    """WER (Whisper's English normaliser) of greedy decoding on the dev clips."""
    import torch

    from whisperft.audio import load_audio
    from whisperft.features import window_features
    from whisperft.manifest import read_manifest
    from whisperft.metrics import score
    from whisperft.models import load_model
    from whisperft.tokens import TokenLayout

    bundle = load_model(model_ref)
    model = bundle.model.eval()
    layout = TokenLayout(bundle.tokenizer, bundle.is_multilingual, model.config.max_target_positions)
    records = read_manifest(dev_manifest)
    pairs = []
    for b in range(0, len(records), batch_size):
        chunk = records[b:b + batch_size]
        feats = torch.stack([window_features(load_audio(r.audio_path), bundle.n_mels) for r in chunk])
        prefix = layout.prefix("en", no_timestamps=not timestamps)
        with torch.no_grad():
            out = model.generate(feats, decoder_input_ids=torch.tensor([prefix] * len(chunk)),
                                 return_timestamps=timestamps, max_new_tokens=200)
        ids = out.sequences if hasattr(out, "sequences") else out
        for r, seq in zip(chunk, ids.tolist()):
            text = bundle.tokenizer.decode([t for t in seq[len(prefix):] if t < layout.eot], skip_special_tokens=True)
            pairs.append((r.audio_path, r.text.strip(), text))
    return score(pairs, metric="WER", language="en").weighted_average()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=120, help="training clips (3-8 s each)")
    p.add_argument("--dev-clips", type=int, default=12, help="dev clips (at most 12)")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps of each arm")
    p.add_argument("--batch-size", type=int, default=4, help="windows per step, both arms")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-wer", action="store_true", help="throughput only")
    p.add_argument("--no-peer", action="store_true", help="skip the Hugging Face Seq2SeqTrainer arm")
    p.add_argument("--work-dir", default=None, help="keep data and checkpoints here (default: a temp folder)")
    args = p.parse_args()

    import torch

    from whisperft.manifest import read_manifest

    with contextlib.ExitStack() as stack:
        work = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="whisperft-bench-packing-")))
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        train_tsv, dev_tsv, train_s = make_clips(work / "clips", args.clips, args.dev_clips)
        n_train = len(train_tsv.read_text().splitlines())
        print(f"{n_train} training clips, {train_s:.0f} s of speech ({train_s / n_train:.1f} s per clip), "
              f"synthesised in {time.perf_counter() - t0:.0f} s")
        print("preparing:")
        run_prepare(train_tsv, work / "single.json", pack=False)
        run_prepare(train_tsv, work / "packed.json", pack=True)
        run_prepare(dev_tsv, work / "dev.json", pack=False)

        print(f"training {args.model}, batch {args.batch_size}, {args.steps} steps, lr {args.lr} "
              f"({os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.1f}):")
        arms = {
            "one clip per window": (work / "single.json", dict(no_timestamps_training=True)),
            "packed": (work / "packed.json", {}),
        }
        results = {}
        for name, (manifest, kw) in arms.items():
            res = run_train(name, manifest, work / name.replace(" ", "_"), args, **kw)
            res["step_speech"], res["step_sizes"] = speech_per_step(manifest, args.batch_size, args.steps, args.seed)
            res["speech_s"] = sum(res["step_speech"])
            res["speech_per_s"] = res["speech_s"] / res["step_seconds"]
            records = read_manifest(manifest)
            res["per_window"] = sum(speech_seconds_of(r) for r in records) / len(records)
            results[name] = res

        peer = None
        if not args.no_peer:
            from peer_hf_trainer import NAME as PEER, convert_model, run_peer

            # conversion is model loading: outside every arm's timing, as for the whisperft arms
            with contextlib.redirect_stderr(io.StringIO()):
                model_dir = convert_model(args.model, work / "hf_model")
            start = time.perf_counter()
            # the trainer prints its log dicts and progress bars: keep the bench's output its own
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                peer = run_peer(train_tsv, model_dir, work / "hf_peer", args.batch_size, args.steps,
                                args.lr, args.seed)
            total = time.perf_counter() - start
            peer["speech_per_s"] = peer["speech_s"] / peer["step_seconds"]
            print(f"    {PEER}: {args.steps} steps in {peer['step_seconds']:.1f} s ({total:.1f} s with "
                  f"loading, feature-extraction map ({peer['prepare_seconds']:.1f} s) and saving); "
                  f"loss {peer['first_loss']:.2f} -> {peer['last_loss']:.2f}")

        single, packed = results["one clip per window"], results["packed"]
        print("\nthroughput (seconds of labelled speech consumed per wall second of training steps):")
        rows = {**results, **({PEER: peer} if peer is not None else {})}
        width = max(20, *map(len, rows))
        for name, r in rows.items():
            print(f"  {name:<{width}} {r['speech_s']:7.1f} s of speech in {r['step_seconds']:6.1f} s "
                  f"-> {r['speech_per_s']:5.2f} s/s")
        print(f"  packed / one clip per window: {packed['speech_per_s'] / single['speech_per_s']:.2f}x "
              f"(step time ratio {packed['step_seconds'] / single['step_seconds']:.2f})")
        if peer is not None:
            for name, r in results.items():
                print(f"  {name} / {PEER}: {r['speech_per_s'] / peer['speech_per_s']:.2f}x "
                      f"(step time ratio {r['step_seconds'] / peer['step_seconds']:.2f})")
        for name, r in results.items():
            n_windows = len(read_manifest(arms[name][0]))
            partial = n_windows % args.batch_size
            note = f"; each epoch ends with a batch of {partial}" if partial else ""
            print(f"  {name}: {n_windows} windows, {r['per_window']:.1f} s of speech per window on average{note}")
        print(f"  speech per window, packed / one clip: {packed['per_window'] / single['per_window']:.2f}x "
              f"(the throughput ratio once batches are full, at equal step time)")
        steady = {name: steady_throughput(r, args.batch_size) for name, r in rows.items()}
        print("steady state (full batches only, first step left out):")
        for name, v in steady.items():
            print(f"  {name:<{width}} " + (f"{v:5.2f} s/s" if v else "no full batch after the first step"))
        others = [n for n in steady if n != "packed" and steady[n] and steady["packed"]]
        for name in others:
            print(f"  packed / {name}: {steady['packed'] / steady[name]:.2f}x")

        if not args.skip_wer:
            print(f"\ndev WER after {args.steps} steps each ({len(dev_tsv.read_text().splitlines())} clips, "
                  f"greedy, Whisper English normaliser):")
            models = {f"{args.model} (not fine-tuned)": args.model,
                      **{name: str(work / name.replace(" ", "_") / "last_model.pt") for name in results}}
            if peer is not None:
                models[PEER] = peer["model_path"]
            wers = {name: (dev_wer(ref, work / "dev.json", False), dev_wer(ref, work / "dev.json", True))
                    for name, ref in models.items()}
            width = max(28, *map(len, wers))
            print(f"  {'model':<{width}} {'no timestamps':>14} {'timestamps':>11}")
            for name, (plain, stamped) in wers.items():
                print(f"  {name:<{width}} {plain:14.2%} {stamped:11.2%}")
            pairs = [("packed", "one clip per window")]
            if peer is not None:
                pairs += [(name, PEER) for name in results]
            for a, b in pairs:
                (ap, at), (bp, bt) = wers[a], wers[b]
                print(f"  {a} - {b}: {100 * (ap - bp):+.1f} points (no timestamps), "
                      f"{100 * (at - bt):+.1f} points (timestamps)")


if __name__ == "__main__":
    main()
