"""The `export` command: any model whisperft loads, written as a Hugging Face folder, an
openai-whisper checkpoint, a CTranslate2 folder or a whisper.cpp (ggml) file."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UserError
from .ggml import save_ggml
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


def export(opts: ExportOptions) -> int:
    if not opts.out:
        raise UserError("export needs --out PATH")
    bundle = load_model(opts.model)
    if opts.format == "hf":
        save_hf(bundle, opts.out)
    elif opts.format == "openai":
        dtype = torch.float32 if opts.quantization == "float32" else torch.float16
        save_openai(bundle, opts.out, dtype)
    elif opts.format == "ggml":
        save_ggml(bundle, opts.out, opts.quantization)
    else:
        save_ct2(bundle, opts.out, opts.quantization)
    print(f"wrote {opts.format} model to {opts.out}")
    return 0
