"""The loss curve of a run (loss_curve.png): training and validation loss against the step,
drawn from the run's metrics history."""

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
    """Train and validation loss against step, as a PNG (written atomically)."""
    plt = _pyplot()

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev = [(h["step"], h["dev_loss"]) for h in history if "dev_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", alpha=0.8)
    if dev:
        ax.plot(*zip(*dev), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("whisperft fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_write(path) as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)
