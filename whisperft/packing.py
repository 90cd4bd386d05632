"""Packing short clips into 30 s windows (`create_data.py --data-file list.tsv --pack`).

Whisper's encoder always sees 30 s. A 5 s clip trained alone pays for 30 s of encoder compute
and teaches no timestamps; packed, five such clips share one window, and since their
boundaries are known exactly, the window's text is timestamped for free:

    <|0.00|> clip one text<|3.42|><|3.92|> clip two<|7.10|>

How a pack is built (pure functions here; prepare.py decodes and writes):
  - clips are taken in list order; each language has its own open pack, so languages never
    mix and each language's clips keep their list order (put one speaker's or recording's
    clips next to each other in the list to keep them together);
  - a clip starts on the timestamp grid (`resolution_ms`, 20 ms by default), PACK_GAP_MS of
    silence after the previous clip's end token (the first clip at 0.00);
  - its end token is the first grid point at or after its last sample, and the samples up
    to it are zeros, so `<|start|>` and `<|end|>` bracket exactly the clip's samples (no
    rounding: every time is a multiple of the resolution) and nothing else is said inside;
  - the pack closes when the next clip of its language would end past 30 s or bring the
    text over `max_tokens_length` tokens (text + 2 timestamps per clip); the next pack
    starts with that clip;
  - packs have no prompt: the clips of a clip list are independent sentences, so the
    previous pack's text tells nothing about this one, and a prompt that does not predict
    would teach the decoder to ignore prompts (at inference the prompt is the same
    recording's previous text). The window's own earlier clips give the decoder context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE
from .tokens import timestamp_token
from .windows import CHUNK_LENGTH_MS, TIMESTAMP_STEP_MS, check_timestamp_resolution

PACK_GAP_MS = 500  # ms of silence between two packed clips (a pause between sentences)
SAMPLES_PER_MS = SAMPLE_RATE // 1000  # 16 samples in one millisecond
TIMESTAMP_TOKENS_PER_CLIP = 2  # <|start|> and <|end|>


@dataclass(frozen=True)
class Clip:
    """One clip to pack: what the packer needs to know, not its audio."""

    key: object  # the caller's handle (e.g. the clip list's line number)
    n_samples: int  # length at 16 kHz
    text: str  # as Whisper writes it (" Hello there." with the leading space, or "你好")
    language: str  # Whisper language code
    n_tokens: int  # tokens of `text`, without timestamps


@dataclass(frozen=True)
class Placement:
    """Where a clip sits in its pack."""

    clip: Clip
    start_ms: int  # its first sample, on the grid
    end_ms: int  # the grid point at or after its last sample (the end timestamp)

    @property
    def start_sample(self) -> int:
        return self.start_ms * SAMPLES_PER_MS


@dataclass
class Pack:
    """Clips of one language laid end to end with silence gaps, at most 30 s."""

    language: str
    placements: list[Placement] = field(default_factory=list)

    @property
    def duration_ms(self) -> int:
        """Length of the window: up to the last clip's end timestamp."""
        return self.placements[-1].end_ms if self.placements else 0

    @property
    def n_tokens(self) -> int:
        return sum(p.clip.n_tokens + TIMESTAMP_TOKENS_PER_CLIP for p in self.placements)

    @property
    def text(self) -> str:
        """The window's timestamped text, in windows.py's format."""
        return "".join(f"{timestamp(p.start_ms)}{p.clip.text}{timestamp(p.end_ms)}" for p in self.placements)

    @property
    def speech_seconds(self) -> float:
        return sum(p.clip.n_samples for p in self.placements) / SAMPLE_RATE

    def render(self, audios: list[np.ndarray]) -> np.ndarray:
        """The window's audio from the clips' audio (in placement order), zeros elsewhere.

        Returns: float32, shape (duration_ms * 16,).
        """
        if len(audios) != len(self.placements):
            raise ValueError(f"{len(audios)} audio arrays for {len(self.placements)} clips")
        out = np.zeros(self.duration_ms * SAMPLES_PER_MS, dtype=np.float32)
        for p, audio in zip(self.placements, audios):
            if len(audio) != p.clip.n_samples:
                raise ValueError(f"clip {p.clip.key!r}: {len(audio)} samples, planned {p.clip.n_samples}")
            out[p.start_sample:p.start_sample + len(audio)] = audio
        return out


def timestamp(ms: int) -> str:
    """`<|t.tt|>` for a time in ms on Whisper's 20 ms grid."""
    if ms % TIMESTAMP_STEP_MS:
        raise ValueError(f"{ms} ms is not on the {TIMESTAMP_STEP_MS} ms timestamp grid")
    return timestamp_token(ms / 1000)


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


class Packer:
    """Packs clips as they come (only the open packs are held): `add` each clip, then `finish`.

    Invariants (tests/test_packing.py): no pack exceeds 30 s or `max_tokens_length`; every
    clip lands in exactly one pack, in order; a pack holds one language; a pack is closed only
    when the next clip of its language does not fit.
    """

    def __init__(self, *, gap_ms: int = PACK_GAP_MS, resolution_ms: int = TIMESTAMP_STEP_MS,
                 max_tokens_length: int = 219, max_ms: int = CHUNK_LENGTH_MS):
        check_timestamp_resolution(resolution_ms)
        if max_ms % TIMESTAMP_STEP_MS:
            raise ValueError(f"window length must be on the {TIMESTAMP_STEP_MS} ms grid, not {max_ms} ms")
        if gap_ms < 0:
            raise ValueError(f"gap must be >= 0 ms, not {gap_ms}")
        self.gap_ms, self.resolution_ms = gap_ms, resolution_ms
        self.max_tokens_length, self.max_ms = max_tokens_length, max_ms
        self._open: dict[str, Pack] = {}  # language -> its open pack (insertion order = first seen)

    def fits_alone(self, clip: Clip) -> bool:
        """Whether the clip can be packed at all (else the caller skips it)."""
        return (clip.n_samples <= self.max_ms * SAMPLES_PER_MS
                and clip.n_tokens + TIMESTAMP_TOKENS_PER_CLIP <= self.max_tokens_length)

    def _place(self, clip: Clip, start_ms: int) -> Placement:
        end_sample = start_ms * SAMPLES_PER_MS + clip.n_samples
        end_ms = _ceil_to(-(-end_sample // SAMPLES_PER_MS), self.resolution_ms)
        # A resolution that does not divide 30 s may round past it; 30.00 is a token too.
        return Placement(clip, start_ms, min(end_ms, self.max_ms))

    def add(self, clip: Clip) -> list[Pack]:
        """Add the next clip; returns the pack it closed, if any ([] or [pack])."""
        if not self.fits_alone(clip):
            raise ValueError(f"clip {clip.key!r} cannot be packed: longer than {self.max_ms} ms "
                             f"or more than {self.max_tokens_length} tokens")
        pack = self._open.get(clip.language)
        closed = []
        if pack is not None:
            start_ms = _ceil_to(pack.duration_ms + self.gap_ms, self.resolution_ms)
            fits = (start_ms * SAMPLES_PER_MS + clip.n_samples <= self.max_ms * SAMPLES_PER_MS
                    and pack.n_tokens + clip.n_tokens + TIMESTAMP_TOKENS_PER_CLIP <= self.max_tokens_length)
            if fits:
                pack.placements.append(self._place(clip, start_ms))
                return []
            closed.append(self._open.pop(clip.language))
        self._open[clip.language] = Pack(clip.language, [self._place(clip, 0)])
        return closed

    def finish(self) -> list[Pack]:
        """The packs still open, in the order their languages first came."""
        packs = list(self._open.values())
        self._open.clear()
        return packs


def pack_clips(clips, **options) -> list[Pack]:
    """All packs of `clips` (in the order they close; see Packer for `options`)."""
    packer = Packer(**options)
    packs = []
    for clip in clips:
        packs += packer.add(clip)
    return packs + packer.finish()
