"""Which device to run on: the one place that knows how to pick and check one."""

from __future__ import annotations

import torch

from .errors import UserError


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    """Apple-silicon GPU (Metal) through PyTorch's MPS backend."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(requested: str | None, flag: str = "--device") -> str:
    """`requested`, checked; none (or 'auto'): a CUDA GPU, else an Apple GPU, else the CPU."""
    if requested in (None, "", "auto"):
        if cuda_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if requested.startswith("cuda") and not cuda_available():
        raise UserError(f"{flag} {requested}: no CUDA GPU is visible to PyTorch (use {flag} cpu)")
    if requested.startswith("mps") and not mps_available():
        raise UserError(f"{flag} {requested}: no Apple GPU (MPS) is available to PyTorch (use {flag} cpu)")
    return requested
