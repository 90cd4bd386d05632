"""`--preserve-weight W`: L2-SP (Li et al. 2018), a pull of the trained weights back toward the
ones training started from, W·Σ‖θ − θ₀‖² over the trained tensors, so a fine-tune learns its
domain while moving the model less. It is the training-time counterpart of `interpolate`.

The anchors θ₀ are a frozen copy of the trained tensors on the training device: the original
model's weights in a full fine-tune, the adapters' initial values with LoRA (B starts at zero,
so the model starts as the original; pulling B back toward zero pulls the merged weights back).
The term's gradient, 2W(θ − θ₀), is added to the data's after clipping (so --max-grad-norm bounds
the data's gradient alone, and a loss scale has already been taken off), as two in-place
multiply-adds per trained weight: no temporary, so it costs about two passes over the weights
per step (README, "Keep what Whisper knew"), plus the anchors' memory. The term's value is computed only when
a step is logged.

Resume: a full fine-tune's anchors are read again from the model the run started from (its name
travels in the resume state); a LoRA run's, as small as the adapters, travel in the resume state.
"""

from __future__ import annotations

import torch

from .errors import UserError
from .options import flag


def check_preserve_weight(weight: float) -> None:
    if not weight >= 0.0:  # NaN too
        raise UserError(f"{flag('preserve_weight')} {weight}: must be 0 (off) or more")


class WeightAnchor:
    """The frozen θ₀ of each trained tensor and the pull toward it."""

    def __init__(self, weight: float, params: list, anchors: list):
        if len(params) != len(anchors):
            raise ValueError("one anchor per trained tensor")
        self.weight = float(weight)
        self.params = params
        self.anchors = [a.detach().to(p.device, p.dtype).clone() for p, a in zip(params, anchors)]

    def penalty(self) -> float:
        """W·Σ‖θ − θ₀‖² now."""
        with torch.no_grad():
            return self.weight * sum(float((p - a).pow(2).sum()) for p, a in zip(self.params, self.anchors))

    def pull(self) -> None:
        """Add the term's gradient 2W(θ − θ₀) to every trained tensor's gradient."""
        with torch.no_grad():
            for p, a in zip(self.params, self.anchors):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                # two in-place adds rather than p − a: no temporary the size of the model
                p.grad.add_(p, alpha=2 * self.weight).add_(a, alpha=-2 * self.weight)


def make_anchor(weight: float, params: list, names: list[str], train_state: dict | None,
                model: str, lora: bool) -> WeightAnchor | None:
    """The anchor of a run (None when `weight` is 0): for a new run the trained tensors as they
    start; for a resumed one what the resume state names or holds (see the module docstring)."""
    if not weight:
        return None
    if train_state is None:
        return WeightAnchor(weight, params, params)
    if lora:
        saved = train_state.get("preserve_anchors")
        if saved is None:
            raise UserError(f"{flag('preserve_weight')}: the resumed checkpoint holds no anchors")
        return WeightAnchor(weight, params, [saved[n] for n in names])
    from .models import load_model

    original = dict(load_model(model).model.named_parameters())
    missing = [n for n in names if n not in original]
    if missing:
        raise UserError(f"{flag('preserve_weight')}: the original model has no {missing[0]}: "
                        "not the model this run started from")
    return WeightAnchor(weight, params, [original[n] for n in names])


def anchor_state(anchor: WeightAnchor | None, names: list[str], lora: bool) -> dict:
    """What the resume state carries so `make_anchor` finds the same anchors again (a full
    fine-tune's are the model the run started from, which the state names anyway)."""
    if anchor is None or not lora:
        return {}
    return {"preserve_anchors": {n: a.detach().cpu() for n, a in zip(names, anchor.anchors)}}
