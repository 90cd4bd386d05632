"""Encoder outputs computed once, for decoder-only training (--train-only-decoder).

With a frozen encoder every step would otherwise recompute the same encoder outputs: on
CPU that is ~3/4 of a tiny.en step. Here every training window is encoded once into a
float16 memory-mapped array (n_windows, 1500, d_model) on disk, and the decoder trains from
it. The file's name is a hash of the encoder weights and of each window's features source,
so a different model, manifest or feature set never reads a stale cache.

Not used for windows whose audio is altered per step (no-timestamp examples trimmed at a
cut-off cue): those few are encoded on the fly.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .fileio import replace

CACHE_DTYPE = np.float16  # halves disk and memory; the decoder sees fp16-rounded states


def cache_key(encoder: torch.nn.Module, records, n_mels: int) -> str:
    h = hashlib.sha256(f"n_mels={n_mels}".encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for r in records:
        src = r.features_path if r.features_path and r.n_mels == n_mels else r.audio_path
        try:
            st = os.stat(src)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{src}|{r.offset}|{r.duration}|{stamp}|{r.muted}".encode())
    return h.hexdigest()[:20]


class EncoderCache:
    """Memory-mapped encoder outputs of every record of a dataset, built on first use."""

    def __init__(self, path: Path, n_records: int, n_positions: int, d_model: int):
        self.path = path
        self.shape = (n_records, n_positions, d_model)
        self.array = None

    @classmethod
    def build(cls, model, dataset, folder: Path, device, batch_size: int = 8,
              progress: bool = True) -> "EncoderCache":
        from tqdm.auto import tqdm

        encoder = model.model.encoder
        key = cache_key(encoder, dataset.records, dataset.n_mels)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"encoder-{key}.npy"
        cfg = model.config
        cache = cls(path, len(dataset), cfg.max_source_positions, cfg.d_model)
        if path.is_file():
            cache.open()
            if cache.array.shape == cache.shape:
                return cache
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:  # an interrupted build leaves nothing behind: the next run starts it afresh
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=CACHE_DTYPE, shape=cache.shape)
            with torch.no_grad():
                for start in tqdm(range(0, len(dataset), batch_size), desc="encoding windows once",
                                  disable=not progress, unit="batch"):
                    idx = list(range(start, min(start + batch_size, len(dataset))))
                    feats = torch.stack([dataset.features(dataset.records[i]) for i in idx]).to(device)
                    states = encoder(feats.to(next(encoder.parameters()).dtype)).last_hidden_state
                    out[idx[0]:idx[-1] + 1] = states.float().cpu().numpy().astype(CACHE_DTYPE)
            out.flush()
            del out
            replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        model.train(was_training)
        if progress:  # what caching cost, to weigh against the steps it saves
            print(f"encoder cache: {len(dataset)} windows encoded once in {time.perf_counter() - started:.2f} s",
                  file=sys.stderr, flush=True)
        cache.open()
        return cache

    def open(self) -> None:
        self.array = np.load(self.path, mmap_mode="r")

    def get(self, indices: list[int], device, dtype=torch.float32) -> torch.Tensor:
        """Encoder outputs of these records: (len(indices), n_positions, d_model)."""
        rows = np.stack([self.array[i] for i in indices])
        return torch.from_numpy(rows).to(device=device, dtype=dtype)
