"""The end-to-end demo (`make demo` / `whisperft demo`): the whole pipeline on the
bundled tiny.en and a generated domain dataset, showing that fine-tuning helped.

    data (demo/make_data.py: medical dictation read by espeak-ng, long recordings + SRT)
    -> create_data.py for train/dev/test
    -> transcribe.py + calculate_metric.py on test with the original model (baseline)
    -> run_finetuning.py
    -> transcribe.py + calculate_metric.py on test with best_model.pt
    -> a short report: WER before/after, an SRT excerpt before/after, the loss curve
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write_text, write_json_atomic
from .options import opt

REPO = Path(__file__).resolve().parents[1]


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


def _load_generator():
    path = REPO / "demo" / "make_data.py"
    if not path.is_file():
        raise UserError(f"{path}: the demo data generator is missing (run the demo from a clone "
                        "of the repository)")
    spec = importlib.util.spec_from_file_location("whisperft_demo_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _transcribe_and_score(model: str, audio_dir: Path, refs: Path, out: Path, device) -> dict:
    from .metrics import EvaluateOptions, evaluate
    from .transcribe import transcribe_dir
    from .transcription import TranscribeOptions

    # greedy: the same decoding before and after, and 2-3x faster than beam 5 on a CPU
    transcribe_dir(TranscribeOptions(audio_dir=str(audio_dir), save_dir=str(out), model=model,
                                     language="en", beam_size=1, overwrite=True,
                                     **({"device": device} if device else {})))
    report = out / "wer.json"
    evaluate(EvaluateOptions(recognized_dir=str(out), transcript_dir=str(refs), metric="WER",
                             json=str(report)))
    return json.loads(report.read_text(encoding="utf-8"))


def _wer(report: dict) -> float:
    for key in ("weighted_average", "weighted"):
        if key in report:
            value = report[key]
            return value["rate"] if isinstance(value, dict) else float(value)
    raise KeyError("weighted average missing from the WER report")


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
    _load_generator().make_demo_data(data, scale=opts.scale)

    _banner("2/5 create_data.py: 30 s windows with timestamps and prompts")
    for split in ("train", "dev", "test"):
        rc = prepare(PrepareOptions(audio_dir=str(data / f"{split}_audio"),
                                    transcript_dir=str(data / f"{split}_transcripts"), language="en",
                                    output=str(out / f"{split}.json"), dump_dir=str(out / "dump" / split),
                                    tokenizer_type="english", overwrite=True))
        if rc not in (0, 1):
            return rc

    _banner(f"3/5 baseline: {opts.model} on the test recordings")
    before = _transcribe_and_score(opts.model, data / "test_audio", data / "test_transcripts",
                                   out / "transcripts_before", opts.device)

    _banner("4/5 run_finetuning.py")
    model_dir = out / "model"
    train(TrainConfig(train_json=str(out / "train.json"), dev_json=str(out / "dev.json"), model=opts.model,
                      save_dir=str(model_dir), batch_size=opts.batch_size, accum_grad_steps=1, lr=opts.lr,
                      warmup_steps=max(opts.train_steps // 10, 1), train_steps=opts.train_steps,
                      eval_steps=opts.eval_steps, log_steps=5, device=opts.device,
                      train_only_decoder=opts.train_only_decoder))

    _banner("5/5 fine-tuned model on the same test recordings")
    after = _transcribe_and_score(str(model_dir / "best_model.pt"), data / "test_audio",
                                  data / "test_transcripts", out / "transcripts_after", opts.device)

    wer_before, wer_after = _wer(before), _wer(after)
    first = sorted((out / "transcripts_before").glob("*.srt"))[0]
    lines = [
        "# whisperft demo report",
        "",
        f"model {opts.model}, {opts.train_steps} steps, {time.time() - t0:.0f} s in all",
        "",
        f"test WER before fine-tuning: {wer_before:.2%}",
        f"test WER after fine-tuning:  {wer_after:.2%}",
        f"relative reduction:          {(wer_before - wer_after) / max(wer_before, 1e-9):.0%}",
        "",
        f"## {first.stem}: before", "", "```", _excerpt(first), "```", "",
        f"## {first.stem}: after", "", "```", _excerpt(out / "transcripts_after" / first.name), "```", "",
        f"loss curve: {model_dir / 'loss_curve.png'}",
    ]
    report = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", report)
    write_json_atomic(out / "summary.json",
                      {"wer_before": wer_before, "wer_after": wer_after, "seconds": time.time() - t0})
    _banner("report")
    print(report)
    return 0 if wer_after < wer_before else 1
