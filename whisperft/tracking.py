"""Experiment trackers of a training run (`--report-to tensorboard|wandb`): Accelerate's
trackers, given the same entries as metrics.jsonl (step as the x axis), writing under
SAVE_DIR/runs. Weights & Biases runs offline unless WANDB_MODE says otherwise."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from pathlib import Path

from .errors import UserError

REPORT_TO = ("none", "tensorboard", "wandb")
PROJECT = "whisperft"  # the run's name in the tracker: TensorBoard writes SAVE_DIR/runs/whisperft
# the packages Accelerate's tracker can use (its TensorBoard tracker falls back to tensorboardX)
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_report_to(report_to: str) -> None:
    """Refuse (one line) an unknown tracker or one whose package is missing."""
    if report_to not in REPORT_TO:
        raise UserError(f"--report-to {report_to}: use {', '.join(REPORT_TO)}")
    if report_to != "none" and not any(importlib.util.find_spec(p) for p in _PACKAGES[report_to]):
        raise UserError(f"--report-to {report_to} needs the {report_to} package: "
                        f"pip install 'whisperft[{report_to}]'")


def logging_dir(save_dir: str | Path) -> Path:
    return Path(save_dir) / "runs"


def accelerator_kwargs(report_to: str, save_dir: str | Path) -> dict:
    """What `Accelerator(...)` takes to report to `report_to` ({} for none)."""
    if report_to == "none":
        return {}
    return {"log_with": report_to, "project_dir": str(logging_dir(save_dir))}


def start_tracking(accelerator, cfg) -> None:
    """Open the tracker's run with the run's flags (`cfg`, a TrainConfig) as its configuration;
    nothing without --report-to."""
    if cfg.report_to == "none":
        return
    folder = logging_dir(cfg.save_dir)
    init_kwargs = {}
    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        init_kwargs["wandb"] = {"dir": str(folder)}
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
    # hyperparameter tables take numbers, strings and booleans: an unset flag is written as ""
    config = {k: "" if v is None else v for k, v in dataclasses.asdict(cfg).items()}
    accelerator.init_trackers(PROJECT, config=config, init_kwargs=init_kwargs)


def track(accelerator, entry: dict) -> None:
    """One metrics.jsonl entry to the trackers (a no-op without any): its numbers, at its step."""
    values = {k: v for k, v in entry.items() if k != "step" and isinstance(v, (int, float))
              and not isinstance(v, bool) and math.isfinite(v)}
    if values:
        accelerator.log(values, step=entry["step"])
