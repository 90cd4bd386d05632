"""The `export` command: any model whisperft loads, written as a Hugging Face folder, an
openai-whisper checkpoint, a CTranslate2 folder or a whisper.cpp (ggml) file. The two folder
formats carry a model card (model_card.py) built from the run the model came from."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .audio import TIME_PRECISION
from .audio_ctx import MARGIN, MIN_POSITIONS, is_marked, positions_for
from .ggml import F32_CPU_NOTE, ftype_name, save_ggml
from .model_card import EVALUATION_FILE, WHISPER_LICENSE, build_card, read_run_facts
from .models import load_model
from .options import opt
from .saving import save_ct2, save_hf, save_openai


@dataclass
class ExportOptions:
    model: str = opt(help="model to export: name, Hub id, folder, .pt or CTranslate2 folder",
                     positional=True)
    format: str = opt("hf", "output format: Hugging Face folder, openai-whisper .pt, CTranslate2 "
                      "folder (faster-whisper) or whisper.cpp file", choices=("hf", "openai", "ct2", "ggml"))
    out: str = opt(None, "output path (folder for hf/ct2, .pt file for openai)", flags=("-o",))
    quantization: str = opt("float16", "weights: ct2 float32/float16/int8/...; openai and ggml "
                            "float16 or float32")
    evaluation: str = opt(None, "hf/ct2: the evaluation report (calculate_metric.py --json) whose "
                          f"numbers go into the model card (default: {EVALUATION_FILE} beside the "
                          "model, when there)", metavar="JSON")
    dataset: str = opt(None, "hf/ct2: Hub dataset id(s) the model was trained on, comma-separated, "
                       "for the model card")
    license: str = opt(WHISPER_LICENSE, "hf/ct2: the license the model card declares (Whisper's "
                       "own is Apache-2.0)")


def export(opts: ExportOptions) -> int:
    if not opts.out:
        raise UserError("export needs --out PATH")
    with_card = opts.format in ("hf", "ct2")
    facts = read_run_facts(opts.model, opts.evaluation) if with_card else None  # bad input before loading
    bundle = load_model(opts.model)
    card = None
    if with_card:
        datasets = [d.strip() for d in (opts.dataset or "").split(",") if d.strip()]
        card = build_card(facts, Path(opts.out).resolve().name, opts.format, bundle.is_multilingual, datasets, opts.license)
    if opts.format == "hf":
        save_hf(bundle, opts.out, card=card)
    elif opts.format == "openai":
        dtype = torch.float32 if opts.quantization == "float32" else torch.float16
        save_openai(bundle, opts.out, dtype)
    elif opts.format == "ggml":
        save_ggml(bundle, opts.out, opts.quantization)
        if ftype_name(opts.quantization) == "f32":
            print(F32_CPU_NOTE, file=sys.stderr)
    else:
        save_ct2(bundle, opts.out, opts.quantization, card=card)
    print(f"wrote {opts.format} model to {opts.out}" + (" with its model card README.md" if card else ""))
    if opts.format == "ggml" and is_marked(bundle.model.generation_config):
        # whisper.cpp cannot read the mark: the context has to be given on its command line
        print(f"this model was trained for a cut audio context: run whisper.cpp with -ac N, N = "
              f"{round(1 / TIME_PRECISION)} x (seconds of audio + {MARGIN:g}), at least {MIN_POSITIONS} "
              f"(e.g. -ac {positions_for(5.0)} for a 5 s clip)")
    return 0
