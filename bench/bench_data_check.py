"""What checking and repairing subtitles costs and buys, in one run, same threads throughout.

    python bench/bench_data_check.py [--threads 2] [--part time|train|all] [--out DIR]

time:  check-data on generated recordings with known faults (demo/make_faulty_data.py) against
       its peers, one transcription pass of the same files with the same model (tiny.en,
       backend auto), greedy as the check decodes and with transcribe.py's default beam 5:
       wall seconds of each, the ratios, and each against real time.
train: the demo's dictation with faults injected into the training subtitles (shifted and
       drifting files, wrong-text cues, cues over silence, a cue past the end), fine-tuned with
       the same settings, once per seed (--seeds), on each version of the training set:
         as is | --fix-timing | --fix-timing --max-cue-cer C for each C of --max-cue-cers |
         the clean subtitles (the oracle a repair could at best reach).
       A left-out cue keeps its place in the windows: its text is dropped and its audio
       silenced (windows.py), so every version has the windows of the set as is (printed).
       A wrong-text cue holds a sentence said at another moment of the set (--wrong-texts
       elsewhere) or everyday English said nowhere in it (unrelated).
       Every model transcribes the demo's clean dev and test recordings, as generated and with a
       pause of --test-pause-s seconds after every third sentence (dictation pauses to think; a
       model taught text over silence writes text into them). WER, inserted words and segment
       start error against the reference cues, and the words written on 40 s of non-speech
       probes, come from the evaluation tools (calculate_metric.py, --probes). One row per
       version: the mean over the seeds and each seed's number; then each version minus the set
       as is, seed by seed (mean, standard error, in how many seeds lower). Runs go seed by seed, so an
       interrupted bench still compares like with like; each finished run is printed at once
       and kept in OUT/train_results.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "tiny.en"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def faulty_module():
    return _module("whisperft_faulty_data", REPO / "demo" / "make_faulty_data.py")


def demo_module():
    return _module("whisperft_demo_data", REPO / "demo" / "make_data.py")


def _pass_seconds(files: list[Path], beam_size: int) -> float:
    """Wall seconds of one transcription pass over `files` (model loading included, as in the
    check), default settings but the beam."""
    from whisperft.audio import load_audio
    from whisperft.transcribe import load_transcriber
    from whisperft.transcription import TranscribeOptions

    t0 = time.perf_counter()
    runner = load_transcriber(TranscribeOptions(model=MODEL, language="en", beam_size=beam_size))
    for _ in runner.run((i, load_audio(p)) for i, p in enumerate(files)):
        pass
    return time.perf_counter() - t0


def bench_time(root: Path) -> dict:
    from whisperft.datacheck import CheckOptions, check_data
    from whisperft.transcribe import load_transcriber
    from whisperft.transcription import TranscribeOptions

    truth = faulty_module().make_faulty_set(root / "faulty", n_files=8, per_file=10)
    audio_seconds = sum(f["duration"] for f in truth["files"].values())
    load_transcriber(TranscribeOptions(model=MODEL, language="en"))  # conversions cached, not timed
    files = sorted((root / "faulty" / "audio").glob("*.wav"))
    greedy_s = _pass_seconds(files, beam_size=1)
    default_s = _pass_seconds(files, beam_size=5)
    t0 = time.perf_counter()
    check_data(CheckOptions(audio_dir=str(root / "faulty" / "audio"),
                            transcript_dir=str(root / "faulty" / "subtitles"), model=MODEL,
                            json=str(root / "faulty_check.json")))
    check_s = time.perf_counter() - t0
    return {"audio_s": audio_seconds, "greedy_s": greedy_s, "default_s": default_s, "check_s": check_s}


def _prepare(audio: Path, subtitles: Path, out: Path, **repairs) -> None:
    from whisperft.prepare import PrepareOptions, prepare

    prepare(PrepareOptions(audio_dir=str(audio), transcript_dir=str(subtitles), output=str(out),
                           dump_dir=str(out.with_suffix("")) + "_dump", tokenizer_type="english",
                           overwrite=True, **repairs))


def _fine_tune(train_json: Path, save_dir: Path, steps: int, seed: int) -> Path:
    from whisperft.train import TrainConfig, train

    train(TrainConfig(train_json=str(train_json), model=MODEL, save_dir=str(save_dir), batch_size=4,
                      accum_grad_steps=1, lr=1e-4, warmup_steps=max(steps // 10, 1), train_steps=steps,
                      eval_steps=steps, log_steps=5, seed=seed))
    return save_dir / "last_model.pt"


PAUSE_EVERY = 3  # sentences between two long pauses of the paused test set


def paused_copy(wav: Path, srt_path: Path, audio_dir: Path, refs_dir: Path, pause_s: float) -> None:
    """The recording with `pause_s` of silence added in the gap after every PAUSE_EVERY-th cue,
    and its reference cues moved to match."""
    from datetime import timedelta

    import srt

    from whisperft.audio import SAMPLE_RATE, load_audio

    md = demo_module()
    audio = load_audio(wav)
    cues = list(srt.parse(srt_path.read_text(encoding="utf-8")))
    pieces, moved, cursor, shift = [], [], 0, 0.0
    for k, cue in enumerate(cues):
        moved.append(srt.Subtitle(k + 1, cue.start + timedelta(seconds=shift),
                                  cue.end + timedelta(seconds=shift), cue.content))
        if (k + 1) % PAUSE_EVERY or k + 1 == len(cues):
            continue
        cut = round((cue.end.total_seconds() + cues[k + 1].start.total_seconds()) / 2 * SAMPLE_RATE)
        pieces += [audio[cursor:cut], np.zeros(round(pause_s * SAMPLE_RATE), np.float32)]
        cursor, shift = cut, shift + pause_s
    pieces.append(audio[cursor:])
    audio_dir.mkdir(parents=True, exist_ok=True)
    refs_dir.mkdir(parents=True, exist_ok=True)
    (audio_dir / wav.name).write_bytes(md.wav_bytes(np.concatenate(pieces)))
    (refs_dir / srt_path.name).write_text(srt.compose(moved), encoding="utf-8")


def _score(model: str, test_audio: Path, refs: Path, out: Path, probes: bool = False) -> dict:
    from whisperft.transcribe import transcribe_dir
    from whisperft.transcription import TranscribeOptions

    transcribe_dir(TranscribeOptions(audio_dir=str(test_audio), save_dir=str(out), model=model,
                                     language="en", beam_size=1, overwrite=True,
                                     # no fallback: a fallback samples, and the same model would
                                     # score differently from run to run
                                     temperature_increment=0.0))
    return _evaluate(out, refs, model if probes else None)


def _evaluate(out: Path, refs: Path, probes: str | None = None) -> dict:
    """The measures of the transcripts in `out` against `refs` (calculate_metric.py's)."""
    from whisperft.metrics import EvaluateOptions, evaluate

    evaluate(EvaluateOptions(recognized_dir=str(out), transcript_dir=str(refs), metric="WER",
                             json=str(out / "evaluation.json"), probes=probes))
    after = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))["runs"]["after"]
    summary, start = after["summary"], after["summary"].get("start_error") or {}
    # the mean as well: the p90 of ~30 segments is the third-worst one, so it jumps when one
    # segment (a recording's first, whose speech starts at 0.5 s) comes out early or not
    errors = [abs(e) for f in after["files"] for e in f.get("start_errors") or []]
    return {"wer": summary["wer_weighted"], "insertions": summary["insertions"],
            "probe_words": summary.get("probe_words"),
            "start_median": start.get("median"), "start_p90": start.get("p90"),
            "start_mean": sum(errors) / len(errors) if errors else None, "segments": len(errors)}


def _tests(root: Path) -> dict[str, tuple[Path, Path]]:
    """Test set -> (audio folder, reference folder) in the work folder: "t" the recordings as
    generated, "p" with pauses; a model's transcripts of set X go to X_NAME there."""
    return {key: (root / folder / "audio", root / folder / "transcripts")
            for key, folder in (("t", "clean_test"), ("p", "paused_test"))}


def rescore(root: Path) -> dict:
    """OUT/train_results.json with every kept transcript measured again by the current
    evaluation tools (the probes' words are kept: they do not depend on the measures), written
    to OUT/train_results_rescored.json."""
    results = json.loads((root / "train_results.json").read_text(encoding="utf-8"))
    tests = _tests(root)

    def again(run: dict, name: str) -> dict:
        dense = {**_evaluate(root / f"t_{name}", tests["t"][1]), "probe_words": run.get("probe_words")}
        return {**dense, "paused": _evaluate(root / f"p_{name}", tests["p"][1])}

    results["original"] = again(results["original"], "original")
    for key, version in results["versions"].items():
        version["runs"] = {seed: again(run, f"{key}_{seed}") for seed, run in version["runs"].items()}
    (root / "train_results_rescored.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


def _versions(max_cue_cers: list[float]) -> dict[str, tuple[str, dict]]:
    """name -> (label, prepare's repair options); "clean" reads the clean subtitles."""
    versions = {"asis": ("faulty, as is", {}), "fix": ("--fix-timing", {"fix_timing": True})}
    for cer in max_cue_cers:
        versions[f"cer{cer}"] = (f"--fix-timing --max-cue-cer {cer}", {"fix_timing": True, "max_cue_cer": cer})
    versions["clean"] = ("clean subtitles (oracle)", {})
    return versions


def bench_train(root: Path, steps: int, seeds: list[int], max_cue_cers: list[float],
                wrong: str = "elsewhere", only: list[str] | None = None, test_pause_s: float = 4.0) -> dict:
    from whisperft.manifest import read_manifest

    md = demo_module()
    data = md.make_demo_data(root / "demo", scale=1.0)
    # the dev and test recordings together (three voices, 329 words): one word is 0.3 points
    tests = _tests(root)
    test_audio, test_refs = tests["t"]
    for split in ("dev", "test"):
        for wav, srt_path in data["splits"][split]["recordings"]:
            for folder, path in ((test_audio, Path(wav)), (test_refs, Path(srt_path))):
                folder.mkdir(parents=True, exist_ok=True)
                if not (folder / path.name).exists():
                    (folder / path.name).symlink_to(path)
            paused_copy(Path(wav), Path(srt_path), *tests["p"], test_pause_s)
    voices = tuple(v for v in md.RECORDING_VOICES["train"])
    faulty = faulty_module()
    # "elsewhere": a wrong cue holds a sentence said at another moment of the set (what a
    # misaligned subtitle holds); "unrelated": everyday English said nowhere in it
    wrong_texts = md.TRAIN_SENTENCES if wrong == "elsewhere" else faulty.WRONG_TEXTS
    truth = faulty.make_faulty_set(root / "train_faulty", n_files=5, per_file=13,
                                   sentences=md.TRAIN_SENTENCES, voices=voices, wrong_texts=wrong_texts)
    audio, subtitles = root / "train_faulty" / "audio", root / "train_faulty" / "subtitles"
    t0 = time.perf_counter()
    from whisperft.datacheck import CheckOptions, check_data

    check_data(CheckOptions(audio_dir=str(audio), transcript_dir=str(subtitles), model=MODEL,
                            json=str(root / "train_check.json"), html=str(root / "train_check.html")))
    results = {"check_s": time.perf_counter() - t0, "truth": truth, "steps": steps, "seeds": seeds,
               "wrong_texts": wrong, "versions": {}}
    for name, (label, repairs) in _versions(max_cue_cers).items():
        if only and name not in only:
            continue
        folder = root / "train_faulty" / ("clean" if name == "clean" else "subtitles")
        if repairs:
            repairs = {**repairs, "check_report": str(root / "train_check.json")}
        _prepare(audio, folder, root / f"{name}.json", **repairs)
        records = read_manifest(root / f"{name}.json")
        results["versions"][name] = {"label": label, "windows": len(records),
                                     "muted_spans": sum(len(r.muted or []) for r in records), "runs": {}}
    def score(model: str, name: str) -> dict:
        return {**_score(model, test_audio, test_refs, root / f"t_{name}", probes=True),
                "paused": _score(model, *tests["p"], root / f"p_{name}")}

    results["original"] = score(MODEL, "original")
    for seed in seeds:
        for name, version in results["versions"].items():
            model = _fine_tune(root / f"{name}.json", root / f"model_{name}_{seed}", steps, seed)
            version["runs"][str(seed)] = score(str(model), f"{name}_{seed}")
            print(f"RUN {name} seed {seed}: {json.dumps(version['runs'][str(seed)])}", flush=True)
            (root / "train_results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


def train_rows(r: dict) -> list[str]:
    """The tables, dense test then paused: per version the mean over the seeds, then each
    seed's number."""
    def cell(runs: list[dict], key: str, scale: float, fmt: str) -> str:
        values = [scale * run[key] for run in runs if run.get(key) is not None]
        mean = sum(values) / len(values) if values else float("nan")
        return f"{mean:{fmt}} ({'/'.join(f'{v:{fmt}}' for v in values)})"

    columns = (("test WER %", "wer", 100, ".2f"), ("inserted words", "insertions", 1, ".1f"),
               ("start error mean s", "start_mean", 1, ".3f"),
               ("start error p90 s", "start_p90", 1, ".3f"))
    lines = []
    for test, pick in (("test as generated", lambda run: run),
                       ("test with pauses", lambda run: run["paused"])):
        heads = [name for name, *_ in columns] + (["probe words"] if test == "test as generated" else [])
        lines.append(f"{test}: {'training subtitles':<34}{'windows':>8} {'muted':>5}  "
                     + "  |  ".join(f"{h} mean (per seed)" for h in heads))
        rows = [("original tiny.en", "-", "-", [r["original"]])]
        rows += [(v["label"], v["windows"], v["muted_spans"], list(v["runs"].values())) for v in r["versions"].values()]
        for label, windows, muted, runs in rows:
            picked = [pick(run) for run in runs]
            cells = [cell(picked, key, scale, fmt) for _, key, scale, fmt in columns]
            if test == "test as generated":
                cells.append(cell(picked, "probe_words", 1, ".1f"))
            lines.append(f"{'':<{len(test) + 2}}{label:<34}{windows!s:>8} {muted!s:>5}  " + "  |  ".join(cells))
    return lines + paired_rows(r, columns)


def paired_rows(r: dict, columns) -> list[str]:
    """Each version against the set as is, seed by seed (one seed's two runs share the data
    order and initial draws, so their difference is the repair's, less the run-to-run spread):
    the mean difference, its standard error over the seeds, and in how many seeds it is lower."""
    asis = r["versions"].get("asis", {}).get("runs", {})

    def compared(diffs: list[float], fmt: str) -> str:
        se = float(np.std(diffs, ddof=1)) / len(diffs) ** 0.5
        return f"{np.mean(diffs):+{fmt}} ± {se:{fmt}} (lower in {sum(x < 0 for x in diffs)}/{len(diffs)})"

    lines = []
    for name, version in r["versions"].items():
        seeds = [s for s in version["runs"] if s in asis]
        if name == "asis" or len(seeds) < 2:
            continue
        cells = []
        for test, pick in (("", lambda run: run), ("paused ", lambda run: run["paused"])):
            for head, key, scale, fmt in columns:
                pairs = [(pick(version["runs"][s]).get(key), pick(asis[s]).get(key)) for s in seeds]
                d = [scale * (a - b) for a, b in pairs if a is not None and b is not None]
                if len(d) > 1:
                    cells.append(f"{test}{head} {compared(d, fmt)}")
        d = [version["runs"][s]["probe_words"] - asis[s]["probe_words"] for s in seeds]
        cells.append(f"probe words {np.mean(d):+.1f} (lower in {sum(x < 0 for x in d)}/{len(d)})")
        lines.append(f"{version['label']} minus as is, same seed (mean ± standard error): " + "; ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=("time", "train", "all"), default="all")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", default="42,1,2,3", help="fine-tuning seeds, the same for every version")
    parser.add_argument("--out", default=None)
    # tiny.en mangles the drug names of the demo's dictation: its correct cues reach CER 0.66
    # there, wrong ones 0.75 and more (see the check page); 0.6 is check-data's default
    parser.add_argument("--max-cue-cers", default="0.6,0.7")
    parser.add_argument("--versions", default=None,
                        help="comma-separated subset of asis,fix,cerC...,clean (default: all)")
    parser.add_argument("--wrong-texts", choices=("elsewhere", "unrelated"), default="elsewhere",
                        help="what a wrong-text cue holds: a sentence from another moment of the set, "
                             "or everyday English said nowhere in it")
    parser.add_argument("--test-pause-s", type=float, default=4.0,
                        help=f"seconds of silence added after each {PAUSE_EVERY} sentences of the paused test set")
    parser.add_argument("--rescore", action="store_true",
                        help="measure the transcripts a finished --part train run kept in --out again")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_data_check_"))
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"threads {args.threads}, model {MODEL}, greedy decoding, work folder {root}"]
    if args.part in ("time", "all") and not args.rescore:
        t = bench_time(root)
        lines += [f"{t['audio_s']:.0f} s of audio (8 recordings), backend auto, model loading included",
                  f"check-data (greedy pass + VAD + fit + alignment) {t['check_s']:7.1f} s "
                  f"({t['audio_s'] / t['check_s']:.1f}x real time)",
                  f"transcription pass, greedy                        {t['greedy_s']:7.1f} s "
                  f"({t['audio_s'] / t['greedy_s']:.1f}x real time)  check / this = {t['check_s'] / t['greedy_s']:.2f}",
                  f"transcription pass, transcribe.py's default beam 5 {t['default_s']:6.1f} s "
                  f"({t['audio_s'] / t['default_s']:.1f}x real time)  check / this = {t['check_s'] / t['default_s']:.2f}"]
    if args.rescore:
        r = rescore(root)
        lines += [f"the kept transcripts of {root} measured again", *train_rows(r)]
    elif args.part in ("train", "all"):
        r = bench_train(root, args.steps, [int(x) for x in args.seeds.split(",")],
                        [float(x) for x in args.max_cue_cers.split(",")], args.wrong_texts,
                        args.versions.split(",") if args.versions else None, args.test_pause_s)
        lines += [f"fine-tune on faulty subtitles (wrong texts: {args.wrong_texts}), {args.steps} steps of "
                  f"batch 4, seeds {args.seeds}, test = the demo's clean dev and test recordings", *train_rows(r),
                  f"(check of the training set: {r['check_s']:.1f} s)"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
