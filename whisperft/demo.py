"""The end-to-end demo (`make demo` / `whisperft demo`): the whole pipeline on the
bundled tiny.en and a generated domain dataset, showing that fine-tuning helped.

    data (demo/make_data.py: medical dictation read by espeak-ng, long recordings + SRT)
    -> create_data.py for train/dev/test
    -> transcribe.py + calculate_metric.py on test with the original model (baseline)
    -> run_finetuning.py
    -> transcribe.py on test with best_model.pt; calculate_metric.py on both models'
       transcripts (--compare), with the non-speech probes run on both models
    -> interpolate's sweep at alpha 0, 0.5 and 1 on the test recordings and the generated
       general-English set: what the fine-tune cost on everyday speech, and what averaging it
       with the original would keep
    -> report.html (the evaluation page) and report.md: WER, timestamp error and probe words
       before/after, the general set's WER, an SRT excerpt before/after, the loss curve
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .fileio import atomic_write_text, write_json_atomic
from .general_set import load_generator
from .options import opt

@dataclass
class DemoOptions:
    out_dir: str = opt("demo_out", "working folder (data, manifests, transcripts, model, report)")
    model: str = opt("tiny.en", "model to fine-tune (the bundled tiny.en works offline)")
    scale: float = opt(1.0, "size of the generated dataset (1.0 = ~5 min of training speech)")
    train_steps: int = opt(20, "optimizer steps")
    batch_size: int = opt(4, "examples per step")
    lr: float = opt(1e-4, "peak learning rate")
    eval_steps: int = opt(10, "evaluate every this many steps")
    train_only_decoder: bool = opt(False, "freeze the encoder (faster, learns less of the voice)")
    device: str = opt(None, "cuda, mps or cpu (default: a CUDA GPU, else an Apple GPU, else the CPU)")
    general_check: bool = opt(True, "also score the fine-tune and its average with the original "
                                    "(interpolate, alpha 0.5) on a generated general-English set "
                                    "(six more transcription passes)")


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _transcribe(model: str, audio_dir: Path, out: Path, device) -> None:
    from .transcribe import transcribe_dir
    from .transcription import TranscribeOptions

    # greedy: the same decoding before and after, and 2-3x faster than beam 5 on a CPU
    transcribe_dir(TranscribeOptions(audio_dir=str(audio_dir), save_dir=str(out), model=model,
                                     language="en", beam_size=1, overwrite=True,
                                     **({"device": device} if device else {})))


def _evaluate(out: Path, refs: Path, before_model: str, after_model: str) -> dict:
    """calculate_metric.py on the fine-tune's transcripts against the base model's, both models
    probed on non-speech: the numbers and the HTML page a user gets from the same flags. The
    report goes beside the fine-tuned model, where `export` takes it into the model card."""
    from .metrics import EvaluateOptions, evaluate
    from .model_card import EVALUATION_FILE

    results = Path(after_model).parent / EVALUATION_FILE
    evaluate(EvaluateOptions(recognized_dir=str(out / "transcripts_after"), transcript_dir=str(refs),
                             metric="WER", compare=str(out / "transcripts_before"),
                             probes=after_model, probes_before=before_model, json=str(results),
                             html=str(out / "report.html")))
    return json.loads(results.read_text(encoding="utf-8"))


def _measures(results: dict, key: str) -> dict:
    """The headline numbers of one run (before or after) of the evaluation."""
    summary = results["runs"][key]["summary"]
    start = summary.get("start_error") or {}
    return {"wer": summary["wer_weighted"], "start_error_median": start.get("median"),
            "start_error_p90": start.get("p90"), "probe_words": summary.get("probe_words")}


def _summary_lines(before: dict, after: dict) -> list[str]:
    """The before/after table of report.md: WER, timestamp error, words on non-speech probes."""
    from .report import format_value

    rows = [("test WER", "wer", "rate"),
            ("segment start error, median", "start_error_median", "seconds"),
            ("segment start error, p90", "start_error_p90", "seconds"),
            ("words on non-speech probes", "probe_words", "count")]
    lines = [f"{'':<28}{'before':>10}{'after':>10}"]
    lines += [f"{label:<28}{format_value(before[k], kind):>10}{format_value(after[k], kind):>10}"
              for label, k, kind in rows]
    reduction = (before["wer"] - after["wer"]) / max(before["wer"], 1e-9)
    return lines + [f"{'relative WER reduction':<28}{reduction:>20.0%}"]


def _general_check(opts: DemoOptions, out: Path, data: Path, best: str) -> tuple[dict | None, list[str]]:
    """interpolate's sweep at alpha 0, 0.5 and 1 (the original, the average, the fine-tune) on
    the test recordings and the generated general-English set: (sweep.json's contents, the
    report's lines); (None, []) with --no-general-check."""
    if not opts.general_check:
        return None, []
    from .interpolation import InterpolateOptions, run_sweep, summary_lines

    _banner("general check: the original, their average and the fine-tune on general English")
    sweep = run_sweep(InterpolateOptions(base=opts.model, model=best, out=str(out / "interpolation"), sweep=True,
                                         alphas="0.5", domain_audio=str(data / "test_audio"),
                                         domain_transcripts=str(data / "test_transcripts"),
                                         device=opts.device or "auto"))
    write_json_atomic(out / "interpolation" / "sweep.json", sweep)
    return sweep, ["## General English: what the fine-tune kept", "",
                   "Test WER (domain) and WER on a generated general-English set (sentences and voices "
                   "never trained on) of the original (alpha 0), the fine-tune (alpha 1) and their "
                   "average (`whisperft interpolate`):", "", "```", *summary_lines(sweep), "```", ""]


def _excerpt(srt_path: Path, n_cues: int = 3) -> str:
    blocks = srt_path.read_text(encoding="utf-8").strip().split("\n\n")
    return "\n\n".join(blocks[:n_cues])


def run_demo(opts: DemoOptions) -> int:
    from .prepare import PrepareOptions, prepare
    from .train import TrainConfig, train

    t0 = time.time()
    out = Path(opts.out_dir)
    data = out / "data"
    _banner("1/5 generating the demo data (espeak-ng reads medical dictation)")
    load_generator().make_demo_data(data, scale=opts.scale)

    _banner("2/5 create_data.py: 30 s windows with timestamps and prompts")
    for split in ("train", "dev", "test"):
        rc = prepare(PrepareOptions(audio_dir=str(data / f"{split}_audio"),
                                    transcript_dir=str(data / f"{split}_transcripts"), language="en",
                                    output=str(out / f"{split}.json"), dump_dir=str(out / "dump" / split),
                                    tokenizer_type="english", overwrite=True))
        if rc not in (0, 1):
            return rc

    _banner(f"3/5 baseline: {opts.model} on the test recordings")
    _transcribe(opts.model, data / "test_audio", out / "transcripts_before", opts.device)

    _banner("4/5 run_finetuning.py")
    model_dir = out / "model"
    train(TrainConfig(train_json=str(out / "train.json"), dev_json=str(out / "dev.json"), model=opts.model,
                      save_dir=str(model_dir), batch_size=opts.batch_size, accum_grad_steps=1, lr=opts.lr,
                      warmup_steps=max(opts.train_steps // 10, 1), train_steps=opts.train_steps,
                      eval_steps=opts.eval_steps, log_steps=5, device=opts.device,
                      train_only_decoder=opts.train_only_decoder))

    _banner("5/5 fine-tuned model on the same test recordings, then both evaluated")
    best = str(model_dir / "best_model.pt")
    _transcribe(best, data / "test_audio", out / "transcripts_after", opts.device)
    results = _evaluate(out, data / "test_transcripts", opts.model, best)
    sweep, general_lines = _general_check(opts, out, data, best)

    before, after = _measures(results, "before"), _measures(results, "after")
    first = sorted((out / "transcripts_before").glob("*.srt"))[0]
    lines = [
        "# whisperft demo report",
        "",
        f"model {opts.model}, {opts.train_steps} steps, {time.time() - t0:.0f} s in all",
        "",
        "```",
        *_summary_lines(before, after),
        "```",
        "",
        f"HTML report (summary, charts, probes, each file marked word by word): {out / 'report.html'}",
        "",
        *general_lines,
        f"## {first.stem}: before", "", "```", _excerpt(first), "```", "",
        f"## {first.stem}: after", "", "```", _excerpt(out / "transcripts_after" / first.name), "```", "",
        f"loss curve: {model_dir / 'loss_curve.png'}",
    ]
    report = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", report)
    write_json_atomic(out / "summary.json",
                      {"wer_before": before["wer"], "wer_after": after["wer"],
                       "before": before, "after": after, "interpolation": sweep, "seconds": time.time() - t0})
    _banner("report")
    print(report)
    return 0 if after["wer"] < before["wer"] else 1
