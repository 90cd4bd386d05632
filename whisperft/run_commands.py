"""What a training run says when it ends: where its outputs are, and the commands that continue
it (resume), use it (transcribe) and publish it (export), written out so they can be pasted.

The resume command repeats every flag the run was given a non-default value (the checks in
resume.py refuse a resume with other flags), so it continues the same run whatever it was.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .options import flag

# the outputs a run leaves in its save dir, in the order they are listed, with what each is
OUTPUTS = (("best_model.pt", "the best weights: transcribe or export this"),
           ("last_model.pt", "the last weights and the training state --resume reads"),
           ("loss_curve.png", "training and validation loss"),
           ("metrics.jsonl", "every logged step and evaluation"),
           ("args.json", "the run's settings"),
           ("lora_adapter", "the LoRA adapter alone (peft)"),
           ("runs", "TensorBoard / W&B logs"))
# flags that name where the run's files are or how it starts: the resume command sets them itself
NOT_REPEATED = ("resume", "train_steps")


def _quote(value) -> str:
    return shlex.quote(str(value))


def changed_flags(cfg) -> list[str]:
    """The flags of the options dataclass `cfg` whose values differ from their defaults, as a
    command line gives them (a required field counts as changed)."""
    args: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        if f.name in NOT_REPEATED or not f.metadata.get("cli", True) or value == default:
            continue
        if isinstance(value, bool):
            args.append(flag(f.name) if value else "--no-" + flag(f.name)[2:])
        elif value is not None:
            args += [flag(f.name), _quote(value)]
    return args


def launcher(world: int) -> str:
    """How to start whisperft training on `world` processes (this machine)."""
    return "whisperft train" if world == 1 else f"torchrun --nproc_per_node {world} -m whisperft train"


def resume_command(cfg, world: int, train_steps: int) -> str:
    """The command that continues the run `cfg` (a TrainConfig) from its last_model.pt up to
    `train_steps`."""
    last = Path(cfg.save_dir) / "last_model.pt"
    return " ".join([launcher(world), *changed_flags(cfg), "--resume", _quote(last),
                     "--train-steps", str(train_steps)])


def transcribe_command(model: Path, audio_dir: str | None, language: str | None) -> str:
    """Transcribing a folder with the trained `model`; AUDIO_DIR when no folder is known."""
    parts = ["whisperft transcribe", "--model", _quote(model),
             "--audio-dir", _quote(audio_dir) if audio_dir else "AUDIO_DIR"]
    if language:
        parts += ["--language", language]
    return " ".join(parts + ["--save-dir", _quote(model.parent / "transcripts")])


def audio_folder(records) -> str | None:
    """The folder of the recordings behind manifest `records` (their first one's), if there is one."""
    for record in records or ():
        recording = Path(record.source or record.audio_path)
        folder = recording.parent
        return str(folder) if recording.suffix.lower() in AUDIO_EXTENSIONS and folder.is_dir() else None
    return None


def print_end_of_run(cfg, world: int, step: int, records) -> None:
    print("\n".join(end_of_run_lines(cfg, world, step, records)), flush=True)


def end_of_run_lines(cfg, world: int, step: int, records) -> list[str]:
    """The lines a run `cfg` (a TrainConfig) on `world` processes prints when it ends after
    `step`, at --train-steps or stopped. `records` are the validation (else training) manifest's,
    whose recordings and language the transcribe command takes."""
    finished = step >= cfg.train_steps
    save_dir = Path(cfg.save_dir)
    present = [(name, what) for name, what in OUTPUTS if (save_dir / name).exists()]
    lines = [f"outputs in {save_dir}:"]
    lines += [f"  {name:<16}{what}" for name, what in present]
    more = 2 * cfg.train_steps if finished else cfg.train_steps
    lines.append(f"{'train further' if finished else 'resume'} (from step {step}):")
    lines.append(f"  {resume_command(cfg, world, more)}")
    best = save_dir / "best_model.pt"
    if best.exists():
        languages = sorted({r.language for r in records or ()})
        language = languages[0] if len(languages) == 1 else None
        lines.append("transcribe with the best model:")
        lines.append(f"  {transcribe_command(best, audio_folder(records), language)}")
        lines.append("export it for the Hugging Face Hub (a folder with a model card):")
        lines.append(f"  whisperft export {_quote(best)} --format hf --out {_quote(save_dir / 'hf')}")
    return lines
