"""A shorter audio context: the encoder run on only as many positions as the audio needs.

Whisper's encoder always sees 30 s (1500 positions, one per 20 ms), so a 4 s clip costs as much
encoder work as 30 s of speech. whisper.cpp's `audio_ctx` cuts the input instead; an unadapted
model then loses track of where the audio ends and repeats itself, so a model must be trained for
it (`run_finetuning.py --dynamic-audio-ctx`: windows encoded on a cut context, with a distillation
term towards the frozen original on the full one; FUTO's whisper-acft does the same).

This module owns the arithmetic (positions for a length of audio, with the margin of silence
kept after it), the cut encoder forward and the mark a model carries when it was trained for a
cut context; the training objective is evaluation.py's `DynamicContextLoss`.
"""

from __future__ import annotations

import math

import torch

from .audio import FRAMES_PER_SECOND, N_FRAMES, TIME_PRECISION

# log-mel frames per encoder position (the second convolution's stride), i.e. per timestamp token
FRAMES_PER_POSITION = round(TIME_PRECISION * FRAMES_PER_SECOND)  # 2
FULL_POSITIONS = N_FRAMES // FRAMES_PER_POSITION  # 1500 encoder positions: 30 s
MARGIN = 1.0  # seconds of context kept after the audio when transcribing
MIN_POSITIONS = 100  # 2 s: below this even an adapted model has too little to go on
TRAIN_MAX_MARGIN = 4.0  # seconds: training draws its margin from 0..this, so any margin works
# Where a model says it was trained for a cut context: an entry of its generation config, which
# travels with it into every format (Hugging Face folder, openai .pt, CTranslate2's config.json).
CONFIG_MARK = "whisperft_audio_ctx"


def positions_for(seconds: float, margin: float = MARGIN) -> int:
    """Encoder positions for `seconds` of audio plus `margin` of what follows (at most 30 s)."""
    n = math.ceil((max(seconds, 0.0) + margin) / TIME_PRECISION - 1e-9)
    return int(min(FULL_POSITIONS, max(MIN_POSITIONS, n)))


def batch_positions(seconds: list[float], draws: list[float] | None) -> int:
    """One cut context for a batch: the longest of its examples' audio plus a margin; in
    training a random one (`draws`, uniform in [0, 1) from the data layer, so a resumed run
    draws the same), else MARGIN."""
    if draws is None:
        return max(positions_for(s) for s in seconds)
    return max(positions_for(s, d * TRAIN_MAX_MARGIN) for s, d in zip(seconds, draws))


def parse_audio_ctx(value: str | int | None) -> int | str | None:
    """`--audio-ctx`: None (the model decides), "auto", "full" or a number of positions."""
    if value is None or value in ("auto", "full"):
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= FULL_POSITIONS:
        from .errors import UserError

        raise UserError(f"--audio-ctx {value}: use auto, full, or a number of encoder positions "
                        f"from 1 to {FULL_POSITIONS} (50 per second of audio)")
    return n


def resolve(requested: str | None, marked: bool, force: bool, source: str) -> int | str | None:
    """The cut context a transcriber uses: None (full), "auto" or N positions. A model not
    trained for a cut context is refused one (one line) unless `force`."""
    from .errors import UserError

    wanted = parse_audio_ctx(requested)
    if wanted is None:
        return "auto" if marked else None
    if wanted == "full":
        return None
    if not marked and not force:
        raise UserError(f"{source}: --audio-ctx {requested} needs a model trained for a cut context "
                        "(run_finetuning.py --dynamic-audio-ctx); --force to try it anyway")
    return wanted


def positions_to_use(policy: int | str | None, content_frames: int) -> int:
    """Encoder positions for a window holding `content_frames` log-mel frames of audio."""
    if policy is None:
        return FULL_POSITIONS
    needed = positions_for(content_frames / FRAMES_PER_SECOND, MARGIN if policy == "auto" else 0.0)
    if policy == "auto":
        return needed
    return policy if needed <= policy else FULL_POSITIONS


def is_marked(generation_config) -> bool:
    """Whether a model (by its generation config) was trained for a cut context."""
    return getattr(generation_config, CONFIG_MARK, None) == "auto"


def mark(generation_config) -> None:
    setattr(generation_config, CONFIG_MARK, "auto")


def encode(encoder, features: torch.Tensor, n_positions: int) -> torch.Tensor:
    """transformers' WhisperEncoder forward on the first `n_positions` positions only.

    The convolution stem is run on two frames more than the kept positions need, so position
    n-1 sees exactly the frames it sees in the full encoder: the cut encoder equals the full one
    whose attention is kept to the first n positions (tests hold it to that).
    """
    if n_positions >= FULL_POSITIONS:
        return encoder(features).last_hidden_state
    frames = features[..., : n_positions * FRAMES_PER_POSITION + 2]
    x = torch.nn.functional.gelu(encoder.conv1(frames))
    x = torch.nn.functional.gelu(encoder.conv2(x))[..., :n_positions].permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[:n_positions]
    x = torch.nn.functional.dropout(x, p=encoder.dropout, training=encoder.training)
    for layer in encoder.layers:
        x = layer(x, None)
    return encoder.layer_norm(x)
