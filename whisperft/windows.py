"""Cut the cues of one recording into Whisper training windows. Pure functions: no torch, no
tokenizer (token counts come from an injected `count_tokens`).

The cutting follows jumon/whisper-finetuning's `create_data.py`, which follows how Whisper's own
training data looks:
  - a window starts at 0 s, then at the end of the last cue that fitted, and lasts up to 30 s;
  - every cue starting inside the window becomes `<|start|> text<|end|>`, times relative to the
    window start and rounded to the timestamp resolution;
  - a cue that starts inside but ends after the window contributes only `<|start|>`, and the
    next window starts at that cue's start (so its text lands in the next window, whole);
  - a window in which no cue starts is a silence window (empty text); the next starts 30 s later;
  - the prompt is the previous text of the recording (timestamps included), at most
    `max_prompt_length` tokens, the most recent kept;
  - a window whose text exceeds `max_tokens_length` tokens is skipped.
Where this module differs from jumon/whisper-finetuning's windowing (its bugs, fixed):
  - a cue over 30 s, a cue that does not end after it starts (reversed or zero-length),
    overlapping cues and cues running past the audio are skipped one by one. jumon's dropped
    the whole window around them, or crashed ("Time ... is out of the segment") when a cue
    started before the end of a skipped long one. Here no window contains audio of a skipped
    cue (windows stop short before it and resume after it, so a window may be shorter than
    30 s), and the prompt starts afresh after it (jumon's kept it across a long cue);
  - the prompt is capped at `max_prompt_length` tokens, whole cues, most recent first (jumon's
    could exceed the cap by most of a cue);
  - cues are sorted by start; overlaps of at most OVERLAP_TOLERANCE_MS (editors' rounding) are
    snapped rather than dropping both cues; an end up to AUDIO_END_TOLERANCE_MS past the audio
    is clamped to it;
  - audio after the last cue also yields silence windows (whole 30 s ones only, like the gaps
    between cues), which jumon's ignored;
  - silence subsampling keeps the windows in order (jumon's moved them to the end) and
    counts across recordings (`silence_offset`).
Windows overlap only where a cue crossed a window end: the next window starts at that cue.

A cue left out by the data check (LEFT_OUT: its text disagrees with its audio) costs only its
own audio: it is cut into windows like any cue, so the windows are those of the subtitles as
they are, but its text is dropped (from the window's text and from later prompts) and its span
is listed in the window's `muted`, whose audio the training data silences. Such a cue that
overlaps another, lasts over 30 s or does not end after it starts is kept out of every window
like the other skipped cues.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from .errors import UserError
from .tokens import NO_SPACE_LANGUAGES, TIMESTAMP_RE, timestamp_token

CHUNK_LENGTH_MS = 30_000  # the 30 s the encoder sees at once
TIMESTAMP_STEP_MS = 20  # Whisper's timestamp tokens are 20 ms apart (<|0.00|>, <|0.02|>, ...)
OVERLAP_TOLERANCE_MS = 50  # overlaps up to this (export rounding, one 25 fps frame) are snapped
AUDIO_END_TOLERANCE_MS = 1_000  # a last cue may end this much after the audio (editors pad it)

# Skip reasons (the closing summary counts skips by these).
LONG_CUE = "cue longer than 30 s"
REVERSED_CUE = "cue does not end after it starts"
OVERLAPPING_CUES = "overlapping cues"
OUTSIDE_AUDIO = "cue outside the audio"
TOO_MANY_TOKENS = "too many tokens"
SILENCE_SUBSAMPLED = "silence subsampled"  # intended, not a problem
LEFT_OUT = "cue left out by the data check"  # a cue given with `skip_reason` set (prepare --max-cue-wer)


@dataclass
class Window:
    """One training example cut from a recording."""

    start: float  # seconds into the recording
    duration: float  # seconds of audio, at most 30
    text: str  # e.g. "<|0.00|> Hello there.<|1.20|><|1.40|> Next cue<|3.00|>"; "" = silence
    prompt: str  # previous text of the recording with its timestamps; "" after a break
    # (start, end) seconds from the window start whose audio is to be silenced: cues left out
    muted: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Skip:
    """Something left out of the windows, and why."""

    reason: str  # one of the reason constants above
    start: float  # seconds into the recording
    message: str  # one line for the user


@dataclass
class _Cue:
    start: int  # ms, clamped into the audio
    end: int  # ms, clamped into the audio
    text: str  # cleaned, with the leading space the language wants
    reason: str | None = None  # why it is skipped, if it is
    original: tuple[int, int] = (0, 0)  # ms as written, for messages
    muted: bool = False  # left out by the data check: windows keep its place, not its text or sound


@dataclass
class _PromptNode:
    text: str
    num_tokens: int


def check_timestamp_resolution(timestamp_resolution_ms: int) -> None:
    if (not isinstance(timestamp_resolution_ms, int) or timestamp_resolution_ms <= 0
            or timestamp_resolution_ms % TIMESTAMP_STEP_MS != 0):
        raise UserError(f"timestamp resolution must be a positive multiple of {TIMESTAMP_STEP_MS} ms "
                        f"(Whisper's timestamp step), not {timestamp_resolution_ms!r}")


def check_window_options(timestamp_resolution_ms: int, max_prompt_length: int, max_tokens_length: int,
                         subsampling_factor_for_silence: int) -> None:
    """Refuse window-cutting parameters that cannot work (UserError, one line naming the option)."""
    check_timestamp_resolution(timestamp_resolution_ms)
    if subsampling_factor_for_silence < 1:
        raise UserError("--subsampling-factor-for-silence must be 1 or more")
    if max_prompt_length < 0 or max_tokens_length < 1:
        raise UserError("--max-prompt-length must be >= 0 and --max-tokens-length >= 1")


def join_cue_lines(text: str, language: str) -> str:
    """One line from a cue's lines: joined by spaces, or for languages written without spaces
    joined directly (unless both sides are Latin letters/digits, like a split English word pair)."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if language not in NO_SPACE_LANGUAGES:
        return " ".join(lines)
    out = ""
    for line in lines:
        if out and out[-1].isascii() and out[-1].isalnum() and line[0].isascii() and line[0].isalnum():
            out += " "
        out += line
    return out


def format_seconds(ms: int) -> str:
    """A time in ms as "1:02:03.450" for messages."""
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours}:{minutes:02d}:{rest / 1000:06.3f}" if hours else f"{minutes}:{rest / 1000:06.3f}"


def speech_seconds(text: str) -> float:
    """Seconds covered by the complete cues (`<|a|> ... <|b|>` pairs) in a window's text."""
    stamps = [float(t) for t in TIMESTAMP_RE.findall(text)]
    return sum(stamps[i + 1] - stamps[i] for i in range(0, len(stamps) - 1, 2))


def _to_ms(seconds: float) -> int:
    return int(round(seconds * 1000.0))


def _prepare_cues(cues, audio_ms: int, language: str, normalize_unicode: bool,
                  skips: list[Skip]) -> tuple[list[_Cue], list[tuple[int, int]]]:
    """Sorted good and muted cues, and the [lo, hi] ms spans of skipped cues, which no window
    may touch."""
    items: list[_Cue] = []
    for cue in cues:
        text = unicodedata.normalize("NFKC", cue.text) if normalize_unicode else cue.text
        text = join_cue_lines(text, language)
        if not text:  # an empty cue is a pause; the gap speaks for itself
            continue
        start, end = _to_ms(cue.start), _to_ms(cue.end)
        if start >= audio_ms:  # nothing of it is in the audio: nothing to keep out of windows
            reason = getattr(cue, "skip_reason", None) or OUTSIDE_AUDIO
            skips.append(Skip(reason, start / 1000,
                              f"{format_seconds(start)}: cue skipped ({reason}: the audio ends at "
                              f"{format_seconds(audio_ms)}): {text[:50]!r}"))
            continue
        reason = OUTSIDE_AUDIO if start < 0 or end > audio_ms + AUDIO_END_TOLERANCE_MS else None
        reason = getattr(cue, "skip_reason", None) or reason
        spaced = text if language in NO_SPACE_LANGUAGES else " " + text
        items.append(_Cue(max(start, 0), min(end, audio_ms), spaced, reason, (start, end)))
    items.sort(key=lambda c: (c.start, c.end))

    # Snap tiny overlaps (a cue starting a few ms before the previous one ends).
    prev_end = None
    for c in items:
        if c.end <= c.start or c.reason not in (None, LEFT_OUT):
            continue
        if prev_end is not None and 0 < prev_end - c.start <= OVERLAP_TOLERANCE_MS and prev_end < c.end:
            c.start = prev_end
        prev_end = c.end if prev_end is None else max(prev_end, c.end)

    for c in items:
        if c.reason is None and c.end <= c.start:
            c.reason = REVERSED_CUE
        elif c.reason is None and c.end - c.start > CHUNK_LENGTH_MS:
            c.reason = LONG_CUE
    # Clusters of cues whose spans overlap; a cluster holding a skipped cue is a barrier.
    order = sorted(items, key=lambda c: (min(c.start, c.end), max(c.start, c.end)))
    clusters: list[list[_Cue]] = []
    cluster_hi = 0
    for c in order:
        lo, hi = min(c.start, c.end), max(c.start, c.end)
        if clusters and lo < cluster_hi:
            clusters[-1].append(c)
            cluster_hi = max(cluster_hi, hi)
        else:
            clusters.append([c])
            cluster_hi = hi
    barriers = []
    for members in clusters:
        if len(members) > 1:
            for c in members:
                c.reason = c.reason or OVERLAPPING_CUES
        elif members[0].reason == LEFT_OUT and 0 < members[0].end - members[0].start <= CHUNK_LENGTH_MS:
            members[0].muted = True  # alone in its span: silencing it touches no other cue
            continue
        if any(c.reason for c in members):
            barriers.append((min(min(c.start, c.end) for c in members),
                             max(max(c.start, c.end) for c in members)))
    for c in items:
        if not c.reason:
            continue
        start, end = c.original
        detail = {LONG_CUE: f"it lasts {(end - start) / 1000:.1f} s",
                  REVERSED_CUE: f"it ends at {format_seconds(max(end, 0))}",
                  OVERLAPPING_CUES: "times overlap",
                  OUTSIDE_AUDIO: f"it ends at {format_seconds(max(end, 0))}, the audio at "
                                 f"{format_seconds(audio_ms)}",
                  LEFT_OUT: "its text dropped, its audio silenced" if c.muted else ""}.get(c.reason, "")
        skips.append(Skip(c.reason, max(start, 0) / 1000,
                          f"{format_seconds(max(start, 0))}: cue skipped ({c.reason}{': ' + detail if detail else ''}): "
                          f"{c.text.strip()[:50]!r}"))
    return [c for c in items if not c.reason or c.muted], barriers


def _runs(good: list[_Cue], barriers: list[tuple[int, int]], audio_ms: int) -> list[tuple[int, int, list[_Cue]]]:
    """(start ms, end ms, good cues starting inside) of each run of usable audio between the
    skipped cues' spans; each run starts with an empty prompt."""
    spans, run_start = [], 0
    for lo, hi in sorted(barriers):
        spans.append((run_start, lo))
        run_start = max(run_start, hi)
    spans.append((run_start, audio_ms))

    runs, cue_index = [], 0
    for run_lo, run_hi in spans:
        run_cues = []
        while cue_index < len(good) and good[cue_index].start < run_hi:
            if good[cue_index].start >= run_lo:
                run_cues.append(good[cue_index])
            cue_index += 1
        runs.append((run_lo, run_hi, run_cues))
    return runs


def _recent_prompt(buffer: deque, max_prompt_length: int) -> str:
    """The prompt from the previous text in `buffer`: whole cues from the end while they fit;
    older ones can never fit again: they are dropped from `buffer`."""
    total, keep = 0, 0
    for node in reversed(buffer):
        if total + node.num_tokens > max_prompt_length:
            break
        total += node.num_tokens
        keep += 1
    while len(buffer) > keep:
        buffer.popleft()
    return "".join(node.text for node in buffer)


def _cue_nodes(cues: list[_Cue], seg_start: int, seg_end: int, time_token: Callable[[int, int, int], str],
               count_tokens: Callable[[str], int]) -> list[_PromptNode]:
    """The text of the window [seg_start, seg_end) ms, one node per cue starting in it: its
    timestamps around its text, or its start timestamp alone when it runs past the window."""
    nodes = []
    for c in cues:
        if c.muted:
            continue
        start_token = time_token(c.start, seg_start, seg_end - seg_start)
        if c.end <= seg_end:
            end_token = time_token(c.end, seg_start, seg_end - seg_start)
            nodes.append(_PromptNode(start_token + c.text + end_token, count_tokens(c.text) + 2))
        else:  # runs past the window: its text goes to the next window
            nodes.append(_PromptNode(start_token, 1))
    return nodes


def split_into_windows(
    cues: Iterable,
    audio_duration: float,
    *,
    count_tokens: Callable[[str], int],
    timestamp_resolution_ms: int = 20,
    max_prompt_length: int = 223,
    max_tokens_length: int = 219,
    subsampling_factor_for_silence: int = 1,
    language: str = "en",
    normalize_unicode: bool = False,
    silence_offset: int = 0,
) -> tuple[list[Window], list[Skip]]:
    """Windows of at most 30 s from the `cues` (anything with .start, .end seconds and .text) of
    one recording lasting `audio_duration` seconds; returns (windows in time order, skips).

    count_tokens: tokens of a plain text (no timestamps); each timestamp counts as one more.
    subsampling_factor_for_silence: keep 1 in N silence windows, counting from `silence_offset`
        silence windows already seen (pass the running count to subsample across recordings).
    """
    check_window_options(timestamp_resolution_ms, max_prompt_length, max_tokens_length,
                         subsampling_factor_for_silence)
    audio_ms = _to_ms(audio_duration)
    skips: list[Skip] = []
    good, barriers = _prepare_cues(cues, audio_ms, language, normalize_unicode, skips)

    windows: list[Window] = []
    silence_seen = silence_offset
    resolution = timestamp_resolution_ms

    def time_token(t: int, window_start: int, limit: int) -> str:
        rel = t - window_start
        rounded = (2 * rel + resolution) // (2 * resolution) * resolution  # half up, in ms
        # Never past the window's end (a coarse resolution could round over it).
        rounded = min(rounded, limit // TIMESTAMP_STEP_MS * TIMESTAMP_STEP_MS)
        return timestamp_token(rounded / 1000)

    def silence(start: int, end: int, prompt: str) -> None:
        nonlocal silence_seen
        keep = silence_seen % subsampling_factor_for_silence == 0
        silence_seen += 1
        if keep:
            windows.append(Window(start / 1000, (end - start) / 1000, "", prompt))
        else:
            skips.append(Skip(SILENCE_SUBSAMPLED, start / 1000,
                              f"{format_seconds(start)}: silence window left out (1 in "
                              f"{subsampling_factor_for_silence} kept)"))

    for run_lo, run_hi, run_cues in _runs(good, barriers, audio_ms):
        prompt_buffer: deque[_PromptNode] = deque()
        seg_start, i = run_lo, 0
        while i < len(run_cues):
            seg_end = min(seg_start + CHUNK_LENGTH_MS, run_hi)
            j = i
            while j < len(run_cues) and run_cues[j].start < seg_end:
                j += 1
            prompt = _recent_prompt(prompt_buffer, max_prompt_length)
            if j == i:  # nothing is said in this window
                silence(seg_start, seg_end, prompt)
                seg_start = seg_end
                continue
            nodes = _cue_nodes(run_cues[i:j], seg_start, seg_end, time_token, count_tokens)
            prompt_buffer.extend(nodes)
            n_tokens = sum(node.num_tokens for node in nodes)
            if n_tokens > max_tokens_length:
                skips.append(Skip(TOO_MANY_TOKENS, seg_start / 1000,
                                  f"{format_seconds(seg_start)}-{format_seconds(seg_end)}: window skipped "
                                  f"({TOO_MANY_TOKENS}: {n_tokens} > --max-tokens-length {max_tokens_length})"))
            else:
                text = "".join(node.text for node in nodes)
                muted = tuple(((max(c.start, seg_start) - seg_start) / 1000, (min(c.end, seg_end) - seg_start) / 1000)
                              for c in run_cues[i:j] if c.muted)
                windows.append(Window(seg_start / 1000, (seg_end - seg_start) / 1000, text, prompt, muted))
            last = run_cues[j - 1]
            if last.end <= seg_end:
                seg_start, i = last.end, j
            else:
                seg_start, i = last.start, j - 1
        # Audio after the last cue: silence windows, full 30 s ones only (as between cues).
        while run_hi - seg_start >= CHUNK_LENGTH_MS:
            silence(seg_start, seg_start + CHUNK_LENGTH_MS, _recent_prompt(prompt_buffer, max_prompt_length))
            seg_start += CHUNK_LENGTH_MS
    skips.sort(key=lambda s: s.start)
    return windows, skips
