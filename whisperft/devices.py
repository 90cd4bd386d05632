"""Which device to run on: the one place that knows how to pick and check one, and which mixed
precision (--use-amp) a device trains in."""

from __future__ import annotations

import contextlib
import os
import sys

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


AMP_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}


def mixed_precision(use_amp: bool, device: torch.device) -> str:
    """Accelerate's mixed_precision for --use-amp on this device ('no', 'fp16' or 'bf16')."""
    if not use_amp:
        return "no"
    gpu = device.type in ("cuda", "mps")
    wanted = os.environ.get("AMP_DTYPE", "float16" if gpu else "bfloat16")
    if wanted not in AMP_DTYPES:
        raise UserError(f"AMP_DTYPE={wanted!r}: use bfloat16 or float16")
    if device.type == "mps":  # fp16 autocast with loss scaling, as on CUDA
        return AMP_DTYPES[wanted]
    if device.type == "cuda":
        if wanted == "bfloat16" and not torch.cuda.is_bf16_supported():
            print("note: this GPU has no bfloat16; using float16 with loss scaling", file=sys.stderr)
            return "fp16"
        return AMP_DTYPES[wanted]
    if os.environ.get("WHISPERFT_CPU_AMP") == "1" and wanted == "bfloat16":
        return "bf16"
    print("note: --use-amp ignored on CPU: bf16 autocast measured ~17x slower than fp32 here "
          "(bench/bench_train.py); set WHISPERFT_CPU_AMP=1 to force it", file=sys.stderr)
    return "no"


@contextlib.contextmanager
def repeatable_kernels(device_type: str, asked: bool):
    """PyTorch's deterministic algorithms for the duration of a run, so that the same seed, data
    and flags give the same model bit for bit. On the CPU always: there the kernel that differs
    run to run is the learned positions' gradient, an embedding backward summed over threads (two
    2-thread runs of tiny.en parted by ~1e-7 in 143 of 167 tensors after 4 steps), and its
    ordered version costs no measured time (10 steps of batch 8: 74.4 s against 77.6 s).
    On a GPU only when `asked` (--deterministic): they are slower there, cuBLAS needs a fixed
    workspace (CUBLAS_WORKSPACE_CONFIG, set here unless the user set it) and an op with no
    deterministic kernel warns rather than stops the run. The previous setting is restored."""
    if device_type != "cpu" and not asked:
        yield
        return
    if device_type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before, before_warn = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
