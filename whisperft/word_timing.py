"""Word timestamps for the torch backend (`--word-timestamps`): each window's text is aligned to
its audio through the decoder's cross-attention in the model's alignment heads (the heads that
follow the audio, listed in `generation_config.alignment_heads`; a fine-tune keeps its base
model's), by dynamic time warping. This is openai-whisper's `find_alignment` and
`add_word_timestamps` as faster-whisper runs them (`--backend ct2` does it natively), so both
backends time words alike; the median filter, the DTW and the split into words are transformers'.

A segment's start and end then move to its first word's start and last word's end: the decoder's
segment timestamps tend to start a segment where the previous one ended, not where speech starts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .audio import FRAMES_PER_SECOND
from .tokens import NO_SPACE_LANGUAGES
from .transcription import Word

TOKENS_PER_SECOND = 50  # encoder positions per second: the alignment's time step is 20 ms
MEDIAN_FILTER_WIDTH = 7
# openai-whisper's (and faster-whisper's) punctuation merged into the word before or after it
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
MAX_MEDIAN_DURATION = 0.7  # seconds: a word is taken as long when over twice min(median, this)


@dataclass
class Piece:
    """A segment of one window being made: its times, tokens and (once timed) words."""

    start: float
    end: float
    tokens: list[int]
    words: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def _eager_attention(model):
    """PyTorch's fused attention gives no attention weights: the plain one does while aligning."""
    saved = model.config._attn_implementation
    if saved == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(saved)


def _split_words(tokenizer, tokens: list[int], language: str) -> tuple[list[str], list[list[int]]]:
    from transformers.models.whisper.tokenization_whisper import _split_tokens_on_spaces, _split_tokens_on_unicode

    split = _split_tokens_on_unicode if language in NO_SPACE_LANGUAGES else _split_tokens_on_spaces
    words, word_tokens, _ = split(tokenizer, tokens)
    return words, word_tokens


@torch.inference_mode()
def find_alignment(model, tokenizer, encoded: torch.Tensor, prefix: list[int], text_tokens: list[int],
                   eot: int, num_frames: int, language: str) -> list[dict]:
    """Words of `text_tokens` (without timestamps) with start/end (seconds from the window's
    start), tokens and probability. `encoded`: the window's encoder output (1500, d_model);
    `prefix`: the sot sequence and <|notimestamps|>; `num_frames`: the window's log-mel frames."""
    from transformers.models.whisper.generation_whisper import _dynamic_time_warping, _median_filter

    if not text_tokens:
        return []
    ids = torch.tensor([prefix + text_tokens + [eot]], device=encoded.device)
    with _eager_attention(model):
        out = model.model.decoder(input_ids=ids, encoder_hidden_states=encoded[None],
                                  output_attentions=True, use_cache=False)
    first = len(prefix) - 1  # the position that predicts the first text token
    logits = model.proj_out(out.last_hidden_state[0, first:first + len(text_tokens), :eot]).float()
    probs = logits.softmax(-1)[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].cpu().numpy()
    heads = model.generation_config.alignment_heads
    weights = torch.stack([out.cross_attentions[layer][0, head] for layer, head in heads]).float()
    # attention over the window's audio only: the softmax restricted to it is the full one renormalised
    weights = weights[:, :, :num_frames // 2]
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-10)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = _median_filter((weights - mean) / std.clamp(min=1e-10), MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(0)[first:first + len(text_tokens) + 1]  # <|notimestamps|> and the text
    text_indices, time_indices = _dynamic_time_warping(-matrix.double().cpu().numpy())
    words, word_tokens = _split_words(tokenizer, text_tokens + [eot], language)
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    return [dict(word=w, tokens=t, start=float(jump_times[i]), end=float(jump_times[j]),
                 probability=float(np.mean(probs[i:j])))
            for w, t, i, j in zip(words, word_tokens, boundaries[:-1], boundaries[1:])]


def merge_punctuations(alignment: list[dict], prepended: str = PREPEND_PUNCTUATIONS,
                       appended: str = APPEND_PUNCTUATIONS) -> None:
    """Punctuation joins the word it belongs to (and takes its time); it leaves an empty word."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous["word"].startswith(" ") and previous["word"].strip() in prepended:
            following["word"] = previous["word"] + following["word"]
            following["tokens"] = previous["tokens"] + following["tokens"]
            previous["word"], previous["tokens"] = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous["word"].endswith(" ") and following["word"] in appended:
            previous["word"] = previous["word"] + following["word"]
            previous["tokens"] = previous["tokens"] + following["tokens"]
            following["word"], following["tokens"] = "", []
        else:
            i = j
        j += 1


def _long_word_limits(alignment: list[dict]) -> tuple[float, float]:
    """(median, max) word duration; words at sentence ends longer than max are cut to it."""
    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(MAX_MEDIAN_DURATION, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        for i in range(1, len(alignment)):
            if alignment[i]["end"] - alignment[i]["start"] > longest:
                if alignment[i]["word"] in SENTENCE_END_MARKS:
                    alignment[i]["end"] = alignment[i]["start"] + longest
                elif alignment[i - 1]["word"] in SENTENCE_END_MARKS:
                    alignment[i]["start"] = alignment[i]["end"] - longest
    return median, longest


def _fit_to_segment(piece: Piece, words: list[dict], median: float, longest: float,
                    last_speech: float) -> None:
    """faster-whisper's boundary rules: a first word after a pause is not longer than `longest`;
    the segment takes its first word's start and last word's end unless that word is too long."""
    if words[0]["end"] - last_speech > median * 4 and (
            words[0]["end"] - words[0]["start"] > longest
            or (len(words) > 1 and words[1]["end"] - words[0]["start"] > longest * 2)):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
            words[0]["end"] = words[1]["start"] = boundary
        words[0]["start"] = max(0, words[0]["end"] - longest)
    if piece.start < words[0]["end"] and piece.start - 0.5 > words[0]["start"]:
        words[0]["start"] = max(0, min(words[0]["end"] - median, piece.start))
    else:
        piece.start = words[0]["start"]
    if piece.end > words[-1]["start"] and piece.end + 0.5 < words[-1]["end"]:
        words[-1]["end"] = max(words[-1]["start"] + median, piece.end)
    else:
        piece.end = words[-1]["end"]


def add_word_timestamps(pieces: list[Piece], alignment: list[dict], time_offset: float,
                        eot: int, last_speech: float) -> float:
    """Give each piece of a window its words from the window's `alignment` (times from the window
    start; `time_offset` is that start) and snap its times to them. Returns the new end of speech."""
    median, longest = _long_word_limits(alignment)
    merge_punctuations(alignment)
    index = 0
    for piece in pieces:
        n_text, taken, words = sum(t < eot for t in piece.tokens), 0, []
        while index < len(alignment) and taken < n_text:
            timing = alignment[index]
            if timing["word"]:
                words.append(dict(word=timing["word"], start=round(time_offset + timing["start"], 2),
                                  end=round(time_offset + timing["end"], 2), probability=timing["probability"]))
            taken += len(timing["tokens"])
            index += 1
        if words:
            _fit_to_segment(piece, words, median, longest, last_speech)
            last_speech = piece.end
        piece.words = words
    return last_speech


def last_word_end(pieces: list[Piece]) -> float | None:
    """End of the last word of the window (faster-whisper's `get_end`), else of its last piece."""
    for piece in reversed(pieces):
        if piece.words:
            return piece.words[-1]["end"]
    return pieces[-1].end if pieces else None


def seek_after_words(pieces: list[Piece], time_offset: float, seek: int) -> int:
    """Where the next window starts when words are timed and the window did not end in silence:
    at its last word's end, when that is after the window's start."""
    end = last_word_end(pieces)
    return round(end * FRAMES_PER_SECOND) if end is not None and end > time_offset else seek


def as_words(words: list[dict]) -> list[Word]:
    return [Word(w["start"], w["end"], w["word"], round(float(w["probability"]), 4)) for w in words]
