"""Command line: argparse only. Each subcommand builds one options dataclass and calls one
library function; the flags are generated from the dataclass fields (see options.py)."""

from __future__ import annotations

import argparse
import os
import sys

from . import datacheck, demo, exporting, interpolation, metrics, prepare, train, transcribe, transcription
from .errors import UserError
from .options import add_dataclass_arguments, dataclass_from_args

# subcommand -> (options dataclass, function, one-line help)
COMMANDS = {
    "prepare": (prepare.PrepareOptions, prepare.prepare,
                "turn audio + SRT/VTT (or clip lists) into a JSONL manifest of 30 s windows"),
    "check-data": (datacheck.CheckOptions, datacheck.check_data,
                   "check subtitles against their audio: timing offset/drift, cue text vs what a "
                   "model hears, cues without speech, past the end or overlapping"),
    "train": (train.TrainConfig, train.train, "fine-tune a Whisper model on prepared manifests"),
    "transcribe": (transcription.TranscribeOptions, transcribe.transcribe_dir,
                   "transcribe a folder of audio into SRT/VTT/TXT/JSON"),
    "evaluate": (metrics.EvaluateOptions, metrics.evaluate, "WER/CER of transcripts against references"),
    "export": (exporting.ExportOptions, exporting.export,
               "convert a model to a Hugging Face folder, openai-whisper .pt or CTranslate2 folder"),
    "interpolate": (interpolation.InterpolateOptions, interpolation.interpolate,
                    "average a fine-tune with its original (WiSE-FT); --sweep finds the weight"),
    "demo": (demo.DemoOptions, demo.run_demo,
             "end-to-end demo: prepare, baseline, fine-tune bundled tiny.en, evaluate"),
}


def build_parser(prog: str | None = None, only: str | None = None) -> argparse.ArgumentParser:
    """The `whisperft` parser; with `only`, just that subcommand's flags are built (faster)."""
    parser = argparse.ArgumentParser(prog=prog or "whisperft",
                                     description="Fine-tune OpenAI Whisper on your own audio.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (options, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            add_dataclass_arguments(p, options)
    return parser


def _run(command: str, args: argparse.Namespace) -> int:
    cls, func, _ = COMMANDS[command]
    try:
        return int(func(dataclass_from_args(cls, args)) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _console_never_raises() -> None:
    """A file name the console's code page cannot show (cp1252 on Windows) is printed escaped,
    never raised as UnicodeEncodeError in the middle of a run; files are UTF-8 regardless."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    _console_never_raises()
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(prog, only).parse_args(argv)
    return _run(args.command, args)


def script_main(command: str) -> None:
    """Entry point of the root scripts (create_data.py, ...): one command under its own name."""
    _console_never_raises()
    prog = os.path.basename(sys.argv[0]) or command
    parser = argparse.ArgumentParser(prog=prog, description=COMMANDS[command][2])
    add_dataclass_arguments(parser, COMMANDS[command][0])
    sys.exit(_run(command, parser.parse_args(sys.argv[1:])))
