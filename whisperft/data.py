"""Training data: manifest records -> (log-mel, decoder input, labels); collate; batch sampler.

The dataset only turns one record into tensors; the sampler decides what goes together
(lhotse's split). Randomness per example (prompt use, no-timestamp sampling) is drawn from a
generator seeded by (seed, epoch, index), so an example is the same whether it is seen in one
run or after a resume, in any worker, on any rank.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .audio import CHUNK_LENGTH, FRAMES_PER_SECOND, N_FRAMES, SAMPLE_RATE, load_audio, silence_spans
from .errors import UserError
from .features import window_features
from .manifest import Record, read_manifest
from .tokens import IGNORE_INDEX, TIMESTAMP_RE, TokenLayout

DECODED_FILES_KEPT = 4  # whole recordings kept decoded when windows point into them


def read_manifests(paths: str | list[str]) -> list[Record]:
    """Records of one or several manifests (`"a.json,b.json"`, as --train-json takes them)."""
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    records: list[Record] = []
    for p in paths:
        found = read_manifest(p)
        _check_audio_present(found, p)
        records.extend(found)
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no records (is the manifest empty?)")
    return records


def _check_audio_present(records: list[Record], manifest: str) -> None:
    """Every record's audio (or its precomputed features) is on disk: a moved or deleted file
    is reported now, naming the manifest, not at the step that first draws it."""
    known: dict[str, bool] = {}

    def present(path: str | None) -> bool:
        if path and path not in known:
            known[path] = Path(path).is_file()
        return bool(path) and known[path]

    missing = [r.audio_path for r in records if not present(r.features_path) and not present(r.audio_path)]
    if missing:
        raise UserError(f"{manifest}: {len(missing)} of {len(records)} records name audio that is not "
                        f"there (first: {missing[0]}); moved or deleted since create_data.py?")


@dataclass
class DataOptions:
    prompt_use_rate: float = 0.5  # share of examples conditioned on the previous text
    no_timestamps_rate: float = 0.0  # share of examples trained without timestamp tokens
    no_timestamps_training: bool = False  # never train timestamps (plain-text data)
    seed: int = 42


class WhisperDataset(Dataset):
    """Record i -> {"input_features": (n_mels, 3000), "decoder_input_ids": [..], "labels": [..]}."""

    def __init__(self, records: list[Record], layout: TokenLayout, n_mels: int, options: DataOptions):
        self.records = records
        self.layout = layout
        self.n_mels = n_mels
        self.options = options
        self.epoch = 0
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()
        if not layout.multilingual:
            for r in records:
                if r.language not in ("en", None):
                    raise UserError(f"{r.audio_path}: record in language {r.language!r}, but the model "
                                    "is English-only (choose a multilingual model such as 'base')")

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> random.Random:
        return random.Random(f"{self.options.seed}/{self.epoch}/{index}")

    def _audio(self, r: Record) -> np.ndarray:
        audio = self._decoded.get(r.audio_path)
        if audio is None:
            audio = load_audio(r.audio_path)
            self._decoded[r.audio_path] = audio
            if len(self._decoded) > DECODED_FILES_KEPT:
                self._decoded.popitem(last=False)
        else:
            self._decoded.move_to_end(r.audio_path)
        start = int(round(r.offset * SAMPLE_RATE))
        end = None if r.duration is None else start + int(round(r.duration * SAMPLE_RATE))
        return audio[start:end]

    def features(self, r: Record) -> torch.Tensor:
        """Log-mel of a record: the precomputed one when its mel count fits (prepare computed it
        with the record's `muted` spans silenced), else from its audio, those spans silenced."""
        if r.features_path and r.n_mels == self.n_mels and Path(r.features_path).is_file():
            try:  # allow_pickle=False: an .npy holding a pickle is refused, never run
                features = np.load(r.features_path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise UserError(f"{r.features_path}: not a features .npy ({str(exc).splitlines()[0][:120]}); "
                                "run create_data.py again") from None
            if features.shape != (self.n_mels, N_FRAMES) or features.dtype.kind != "f":
                raise UserError(f"{r.features_path}: features of shape {features.shape} ({features.dtype}), "
                                f"expected ({self.n_mels}, {N_FRAMES}) floats; run create_data.py again")
            return torch.from_numpy(features.astype(np.float32))
        return window_features(silence_spans(self._audio(r), r.muted), self.n_mels)

    def __getitem__(self, index: int) -> dict:
        r = self.records[index]
        rng = self._rng(index)
        o = self.options
        no_timestamps = o.no_timestamps_training or rng.random() < o.no_timestamps_rate
        use_prompt = rng.random() < o.prompt_use_rate
        if r.text and not TIMESTAMP_RE.search(r.text):
            # plain-text clips have no times to learn: training them in timestamp mode would
            # teach the model to emit text without timestamps where it should give them
            no_timestamps = True
        ex = self.layout.example(r.text, r.language, r.prompt, use_prompt=use_prompt,
                                 no_timestamps=no_timestamps, where=r.audio_path)
        feats = self.features(r)
        if ex.trim_at is not None:
            # Without timestamps the model cannot say where a cut-off cue ends: hide the
            # audio from that cue on (jumon trims the log-mel the same way).
            feats = feats.clone()
            feats[:, int(ex.trim_at * FRAMES_PER_SECOND):] = 0.0
        return {"input_features": feats, "decoder_input_ids": ex.decoder_input_ids,
                "labels": ex.labels, "index": index, "trimmed": ex.trim_at is not None,
                "seconds": content_seconds(r, feats) if ex.trim_at is None else ex.trim_at,
                "ctx_draw": rng.random()}  # the margin of a cut context (audio_ctx.py), if trained

    def label_length(self, index: int) -> int:
        """Cheap length proxy for batching (characters of text and prompt)."""
        r = self.records[index]
        return len(r.text) + len(r.prompt)


def content_seconds(r: Record, features: torch.Tensor) -> float:
    """Seconds of audio in an example (at most one window): what a cut context must cover. A
    whole-clip record's log-mel tells: it is padded with exact zeros past the audio."""
    if r.duration is not None:
        return min(r.duration, CHUNK_LENGTH)
    heard = torch.nonzero(features.abs().amax(dim=0) > 0)
    return (int(heard[-1]) + 1) / FRAMES_PER_SECOND if len(heard) else 0.0


def collate(items: list[dict], pad_id: int) -> dict:
    """Stack features; right-pad decoder inputs with `pad_id` and labels with IGNORE_INDEX."""
    width = max(len(it["decoder_input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["decoder_input_ids"])
        ids[i, :n] = torch.tensor(it["decoder_input_ids"])
        labels[i, :n] = torch.tensor(it["labels"])
        mask[i, :n] = 1
    return {
        "input_features": torch.stack([it["input_features"] for it in items]),
        "decoder_input_ids": ids,
        "decoder_attention_mask": mask,
        "labels": labels,
        "index": [it["index"] for it in items],
        "trimmed": [it["trimmed"] for it in items],
        "seconds": [it["seconds"] for it in items],
        "ctx_draws": [it["ctx_draw"] for it in items],
        "n_tokens": int(mask.sum()),
        "n_padded": int(mask.numel()),
    }


class Collator:
    """Picklable collate function (DataLoader workers on Windows/macOS spawn)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items):
        return collate(items, self.pad_id)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar label length, in a random order that depends on (seed, epoch) only.

    Each epoch: shuffle, cut into pools of `pool_batches` batches, sort each pool by length,
    cut into batches, shuffle the batches. Padding stays small and neighbours still vary.
    Invariant: every index appears in exactly one batch per epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 42, pool_batches: int = 50,
                 shuffle: bool = True):
        if batch_size < 1:
            raise UserError("batch size must be at least 1")
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.pool = pool_batches * batch_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        if not self.shuffle:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(f"{self.seed}/batches/{epoch}")
        rng.shuffle(order)
        batches = []
        for p in range(0, len(order), self.pool):
            pool = sorted(order[p:p + self.pool], key=lambda i: self.lengths[i])
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class BatchStream:
    """Batch sampler over the whole run: epochs of bucketed batches, one after another.

    Micro-step k of rank r (of `world` ranks) takes the run's batch k * world + r, so a
    resumed run, or one on more processes with proportionally fewer accumulation steps,
    sees exactly the same batches in the same optimizer steps. Yields (epoch, index) keys.
    """

    def __init__(self, sampler: BucketBatchSampler, world: int, rank: int, start_micro_step: int):
        self.sampler, self.world, self.rank, self.start = sampler, world, rank, start_micro_step

    def __iter__(self):
        per_epoch = len(self.sampler)
        g = self.start * self.world + self.rank
        epoch, cache = -1, []
        while True:
            e, i = divmod(g, per_epoch)
            if e != epoch:
                epoch, cache = e, self.sampler.batches(e)
            yield [(e, idx) for idx in cache[i]]
            g += self.world


class EpochKeyed(Dataset):
    """Dataset view taking (epoch, index) keys, so per-example randomness follows the epoch."""

    def __init__(self, dataset: WhisperDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def manifests_fingerprint(paths: str | list[str]) -> str:
    """sha256 of the manifests' contents: the same data under another path is the same data."""
    import hashlib

    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
        h.update(b"\0")
    return h.hexdigest()
