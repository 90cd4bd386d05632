"""The loss curve of a run (loss_curve.png): training and validation loss against the step,
drawn from the run's metrics history; with --eval-wer a second panel shows validation WER and
start error median."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from .fileio import atomic_write


def _pyplot():
    """matplotlib.pyplot (Agg), imported the first time in a thread of its own: pyparsing, which
    matplotlib imports, keeps the frames that first import it alive for good, and the trainer's
    would keep the model, the optimizer and the data workers with them."""
    if "matplotlib.pyplot" not in sys.modules:
        def load():
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        thread = threading.Thread(target=load)
        thread.start()
        thread.join()
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(history: list[dict], path: Path) -> None:
    """Train and validation loss against step, as a PNG (written atomically); below it, when the
    history has `dev_wer` (--eval-wer), a second panel: validation WER and start error median."""
    plt = _pyplot()

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev = [(h["step"], h["dev_loss"]) for h in history if "dev_loss" in h]
    decoded = any(h.get("dev_wer") is not None for h in history)
    fig, axes = plt.subplots(2 if decoded else 1, 1, figsize=(7, 7 if decoded else 4), dpi=100, sharex=True,
                             squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", alpha=0.8)
    if dev:
        ax.plot(*zip(*dev), "o-", label="validation loss", color="tab:orange")
    if not decoded:  # else the panel below carries the step axis
        ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("whisperft fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    if decoded:
        _plot_decoding(axes[1][0], history)
    fig.tight_layout()
    try:
        with atomic_write(path) as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)


def _plot_decoding(ax, history: list[dict]) -> None:
    """Validation WER (left axis) and start error median (right axis) against step."""
    wer = [(h["step"], 100 * h["dev_wer"]) for h in history if h.get("dev_wer") is not None]
    start = [(h["step"], h["dev_start_error_median"]) for h in history
             if h.get("dev_start_error_median") is not None]
    lines = ax.plot(*zip(*wer), "o-", label="validation WER", color="tab:green")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("WER (%)")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    if start:
        lines += right.plot(*zip(*start), "s--", label="start error median", color="tab:purple")
    right.set_ylabel("start error median (s)")
    ax.legend(lines, [line.get_label() for line in lines])
