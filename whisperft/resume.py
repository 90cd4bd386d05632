"""Resuming a training run exactly: the training state a last_model.pt carries, read back and
checked against the run that continues it (flags, data, trained tensors), then restored
(optimizer, RNG, loss scale, step, best loss, history)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from .devices import mps_available
from .errors import UserError
from .options import flag

# Flags whose change breaks an exact continuation: which batches come, which examples get a
# prompt or timestamps, which weights train, with what optimizer and what pull toward the start
# (--preserve-weight); and --best-by, though the
# weights would continue the same: best_model.pt and the best value the checkpoint stores were
# chosen by the run's measure, and the weights of the evaluations before the resume are gone, so
# a new measure could not choose among them (best_model.pt would be picked by two measures).
RESUME_FIXED = ("batch_size", "seed", "prompt_use_rate", "no_timestamps_rate", "no_timestamps_training",
                "train_only_decoder", "cache_encoder_outputs", "use_amp", "use_adam_8bit", "lora_rank",
                "lora_alpha", "lora_dropout", "lora_targets", "best_by", "preserve_weight")
# What a checkpoint that predates a flag in RESUME_FIXED ran with (best_model.pt was always the
# lowest validation loss; nothing pulled the weights back).
RESUME_FIXED_BEFORE = {"best_by": "loss", "preserve_weight": 0.0}
# Flags that only reshape the schedule from the resumed step on: allowed, and said.
RESUME_SCHEDULE = ("train_steps", "lr", "warmup_steps", "weight_decay", "max_grad_norm")


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if mps_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and mps_available():
        torch.mps.set_rng_state(state["mps"])


def read_resume_state(path: str) -> dict:
    resume = Path(path)
    if not resume.is_file():
        raise UserError(f"--resume {resume}: no such checkpoint")
    from .models import load_weights_only

    state = load_weights_only(resume).get("whisperft_train_state")  # a code-running pickle is refused
    if state is None:
        raise UserError(f"{resume}: holds weights but no training state to resume "
                        "(use it as --model to start a new run from it)")
    return state


def started_from(train_state: dict | None, cfg) -> str:
    """The model a run started from (what LoRA adapters sit on, what --preserve-weight pulls
    toward, the teacher of --dynamic-audio-ctx): --model for a new run; for a resumed one its
    checkpoint's record, since the resuming command may leave --model at its default."""
    if train_state is None:
        return cfg.model
    saved = json.loads(train_state.get("config") or "{}")
    return train_state.get("started_from") or train_state.get("lora_base") or saved.get("model") or cfg.model


def check_resume_flags(state: dict, cfg, world: int, train_fingerprint: str) -> list[str]:
    """Refuse (one line) a resume whose flags (`cfg`, the run's TrainConfig) change the run;
    return notes for safe changes."""
    saved = {**RESUME_FIXED_BEFORE, **json.loads(state.get("config") or "{}")}
    # the best WER so far is over that many validation windows: with another count it is not comparable
    fixed = RESUME_FIXED + (("eval_wer",) if cfg.best_by == "wer" else ())
    changed = [f"{flag(n)} {saved[n]} -> {getattr(cfg, n)}" for n in fixed
               if n in saved and saved[n] != getattr(cfg, n)]
    if cfg.lora_rank and saved.get("model") not in (None, cfg.model):
        changed.append(f"--model {saved['model']} -> {cfg.model}")
    if "accum_grad_steps" in saved:
        was, now = saved["accum_grad_steps"] * state.get("world", 1), cfg.accum_grad_steps * world
        if was != now:
            changed.append(f"micro-batches per step (--accum-grad-steps x processes) {was} -> {now}")
    if state.get("train_data_sha256", train_fingerprint) != train_fingerprint:
        changed.append(f"--train-json {cfg.train_json}: not the manifest(s) of that run")
    if changed:
        raise UserError(f"--resume {cfg.resume}: {'; '.join(changed)}: that would not continue the run "
                        f"(resume with its flags, or start a new run with --model {cfg.resume})")
    step = int(state["step"])
    return [f"note: {flag(n)} {saved[n]} -> {getattr(cfg, n)} on resume: the learning-rate schedule "
            f"follows the new value from step {step} on" for n in RESUME_SCHEDULE
            if n in saved and saved[n] != getattr(cfg, n)]


def load_optimizer_state(optimizer, state: dict, names: list[str], where: str) -> None:
    """Optimizer state matched to the parameters by name; a different set is refused."""
    opt_state = state["optimizer"]
    saved = state.get("param_names")
    if saved is None:  # a checkpoint that kept no names: only the count can be checked
        count = sum(len(g["params"]) for g in opt_state["param_groups"])
        if count != len(names):
            raise UserError(f"--resume {where}: its optimizer covers {count} tensors, this model trains "
                            f"{len(names)}: not the same run's model")
    elif saved != names:
        only_saved, only_here = sorted(set(saved) - set(names)), sorted(set(names) - set(saved))
        if only_saved or only_here:
            raise UserError(f"--resume {where}: trained tensors differ (only in the checkpoint: "
                            f"{only_saved[:2]}, only here: {only_here[:2]}): not the same run's model")
        position = {n: i for i, n in enumerate(saved)}
        old = opt_state["state"]
        opt_state = {"state": {i: old[position[n]] for i, n in enumerate(names) if position[n] in old},
                     "param_groups": [{**opt_state["param_groups"][0], "params": list(range(len(names)))}]}
    optimizer.load_state_dict(opt_state)


def restore_train_state(state: dict, cfg, optimizer, names: list[str], scaler) -> tuple[int, float, list[dict]]:
    """Put the optimizer, the RNG and fp16's loss scale (`scaler`, or None) back as `state` left
    them, for the run `cfg` (a TrainConfig) describes; returns (step, best validation loss,
    metrics history). (The best WER is `state.get("best_wer")`: older checkpoints lack it.)"""
    load_optimizer_state(optimizer, state, names, cfg.resume)
    start_step = int(state["step"])
    best_loss = float(state["best_loss"])
    history = json.loads(state["history"])
    set_rng_state(state["rng"])
    if state.get("scaler") is not None and scaler is not None:
        scaler.load_state_dict(state["scaler"])  # fp16's loss scale
    if start_step >= cfg.train_steps:
        raise UserError(f"--resume {cfg.resume}: already at step {start_step} of --train-steps "
                        f"{cfg.train_steps}; raise --train-steps to continue")
    return start_step, best_loss, history
