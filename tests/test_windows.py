"""Cutting cues into 30 s windows: hand-computed cases, then invariants under hypothesis."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whisperft.errors import UserError
from whisperft.subtitles import Cue, parse_srt
from whisperft.windows import (LONG_CUE, OUTSIDE_AUDIO, OVERLAP_TOLERANCE_MS, OVERLAPPING_CUES,
                               REVERSED_CUE, SILENCE_SUBSAMPLED, TOO_MANY_TOKENS, Window, speech_seconds,
                               split_into_windows)

TIMESTAMP = re.compile(r"<\|(\d+\.\d\d)\|>")


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word."""
    return len(text.split())


def split(cues, audio_duration, **kwargs):
    return split_into_windows(cues, audio_duration, count_tokens=words, **kwargs)


BASIC_SRT = """\
1
00:00:01,000 --> 00:00:02,500
Hello there.

2
00:00:03,000 --> 00:00:05,000
Second

3
00:00:28,000 --> 00:00:33,000
crossing
cue

4
00:00:40,000 --> 00:00:45,000
after
"""


def test_windows_from_srt_text_hand_computed():
    windows, skips = split(parse_srt(BASIC_SRT), 60.0)
    first = "<|1.00|> Hello there.<|2.50|><|3.00|> Second<|5.00|><|28.00|>"
    assert windows == [
        # The cue crossing 30 s contributes only its start token ...
        Window(start=0.0, duration=30.0, text=first, prompt=""),
        # ... and opens the next window, which starts at it; the first window's text is the prompt.
        Window(start=28.0, duration=30.0, text="<|0.00|> crossing cue<|5.00|><|12.00|> after<|17.00|>",
               prompt=first),
    ]  # after 45 s only 15 s are left: no silence window
    assert skips == []


def test_prompt_is_capped_keeping_the_most_recent_whole_cues():
    # Tokens (words + one per timestamp): "Hello there." 4, "Second" 3, "<|28.00|>" 1.
    windows, _ = split(parse_srt(BASIC_SRT), 60.0, max_prompt_length=4)
    assert windows[1].prompt == "<|3.00|> Second<|5.00|><|28.00|>"
    windows, _ = split(parse_srt(BASIC_SRT), 60.0, max_prompt_length=0)
    assert windows[1].prompt == ""


def test_window_with_too_many_tokens_is_skipped_and_its_text_still_prompts():
    # First window: 4 + 3 + 1 = 8 tokens; second: 4 + 3 = 7.
    windows, skips = split(parse_srt(BASIC_SRT), 60.0, max_tokens_length=7)
    assert [w.start for w in windows] == [28.0]
    assert windows[0].prompt.startswith("<|1.00|> Hello there.")
    assert [(s.reason, s.start) for s in skips] == [(TOO_MANY_TOKENS, 0.0)]
    assert "8 > --max-tokens-length 7" in skips[0].message


def test_long_cue_is_skipped_breaks_the_prompt_and_no_window_holds_its_audio():
    cues = [Cue(1, 3, "a"), Cue(10, 50, "long"), Cue(52, 54, "b")]
    windows, skips = split(cues, 90.0)
    assert windows == [
        Window(0.0, 10.0, "<|1.00|> a<|3.00|>", ""),  # stops where the long cue starts
        Window(50.0, 30.0, "<|2.00|> b<|4.00|>", ""),  # resumes after it, with no prompt
        Window(54.0, 30.0, "", "<|2.00|> b<|4.00|>"),  # 36 s of audio after the last cue
    ]
    assert [(s.reason, s.start) for s in skips] == [(LONG_CUE, 10.0)]
    assert "lasts 40.0 s" in skips[0].message and "'long'" in skips[0].message


def test_a_cue_of_exactly_30_s_is_kept():
    windows, skips = split([Cue(2, 32, "thirty")], 40.0)
    assert skips == []
    # It crosses the first window, so it opens the second, where it fits exactly.
    assert [(w.start, w.text) for w in windows] == [(0.0, "<|2.00|>"), (2.0, "<|0.00|> thirty<|30.00|>")]


def test_overlapping_cues_are_both_skipped():
    cues = [Cue(1, 4, "a"), Cue(3, 6, "b"), Cue(8, 9, "c")]
    windows, skips = split(cues, 20.0)
    assert windows == [Window(6.0, 14.0, "<|2.00|> c<|3.00|>", "")]
    assert [(s.reason, s.start) for s in skips] == [(OVERLAPPING_CUES, 1.0), (OVERLAPPING_CUES, 3.0)]


def test_overlap_of_a_few_ms_is_snapped_not_skipped():
    windows, skips = split([Cue(1, 4.02, "a"), Cue(4.0, 6, "b")], 20.0)
    assert skips == []
    assert windows[0].text == "<|1.00|> a<|4.02|><|4.02|> b<|6.00|>"


def test_reversed_and_zero_length_cues_are_skipped():
    cues = [Cue(5, 3, "reversed"), Cue(10, 12, "x"), Cue(14, 14, "instant"), Cue(15, 16, "y")]
    windows, skips = split(cues, 20.0)
    assert [(s.reason, s.start) for s in skips] == [(REVERSED_CUE, 5.0), (REVERSED_CUE, 14.0)]
    assert windows == [Window(5.0, 9.0, "<|5.00|> x<|7.00|>", ""),
                       Window(14.0, 6.0, "<|1.00|> y<|2.00|>", "")]


def test_cues_are_sorted_first():
    windows, _ = split([Cue(3, 4, "second"), Cue(1, 2, "first")], 10.0)
    assert windows[0].text == "<|1.00|> first<|2.00|><|3.00|> second<|4.00|>"


def test_silence_windows_and_their_subsampling():
    cues = [Cue(70, 72, "late")]
    windows, skips = split(cues, 100.0)
    assert [(w.start, w.duration, w.text) for w in windows] == [
        (0.0, 30.0, ""), (30.0, 30.0, ""), (60.0, 30.0, "<|10.00|> late<|12.00|>")]
    assert skips == []

    windows, skips = split(cues, 100.0, subsampling_factor_for_silence=2)
    assert [w.start for w in windows] == [0.0, 60.0]  # order kept
    assert [(s.reason, s.start) for s in skips] == [(SILENCE_SUBSAMPLED, 30.0)]

    # Counting goes on across recordings: one silence window was seen before this one.
    windows, _ = split(cues, 100.0, subsampling_factor_for_silence=2, silence_offset=1)
    assert [w.start for w in windows] == [30.0, 60.0]


@pytest.mark.parametrize("resolution, expected", [
    (20, "<|1.04|> x<|2.06|>"),  # 1030 ms -> 1040 (halves round up), 2050 -> 2060
    (40, "<|1.04|> x<|2.04|>"),
    (100, "<|1.00|> x<|2.10|>"),
])
def test_timestamps_are_rounded_to_the_resolution(resolution, expected):
    windows, _ = split([Cue(1.03, 2.05, "x")], 10.0, timestamp_resolution_ms=resolution)
    assert windows[0].text == expected


def test_coarse_resolution_never_rounds_past_the_window():
    windows, _ = split([Cue(29.0, 30.0, "edge")], 30.0, timestamp_resolution_ms=160)
    assert windows[0].text == "<|28.96|> edge<|30.00|>"  # 30.08 would be past the window


@pytest.mark.parametrize("resolution", [0, 10, 30, -20, 25])
def test_resolution_must_be_a_multiple_of_20_ms(resolution):
    with pytest.raises(UserError, match="multiple of 20"):
        split([Cue(1, 2, "x")], 10.0, timestamp_resolution_ms=resolution)


def test_languages_without_spaces_get_no_leading_space_and_lines_join_directly():
    windows, _ = split([Cue(1, 2, "你好\n世界"), Cue(3, 4, "OK\nyes")], 10.0, language="zh")
    assert windows[0].text == "<|1.00|>你好世界<|2.00|><|3.00|>OK yes<|4.00|>"
    windows, _ = split([Cue(1, 2, "two\nlines")], 10.0, language="es")
    assert windows[0].text == "<|1.00|> two lines<|2.00|>"
    # Khmer is written without spaces too: the same rule here as in evaluation (CER)
    windows, _ = split([Cue(1, 2, "សួស្តី\nពិភពលោក")], 10.0, language="km")
    assert windows[0].text == "<|1.00|>សួស្តីពិភពលោក<|2.00|>"


def test_normalize_unicode_applies_nfkc():
    cue = [Cue(1, 2, "ｆｕｌｌ\u3000ｗｉｄｔｈ ①")]
    assert split(cue, 10.0)[0][0].text == "<|1.00|> ｆｕｌｌ ｗｉｄｔｈ ①<|2.00|>"
    assert split(cue, 10.0, normalize_unicode=True)[0][0].text == "<|1.00|> full width 1<|2.00|>"


def test_cues_outside_the_audio():
    cues = [Cue(1, 2, "in"), Cue(8, 10.5, "padded end"), Cue(11, 12, "after")]
    windows, skips = split(cues, 10.0)
    # An end up to 1 s past the audio is clamped; a cue starting after it is skipped.
    assert windows == [Window(0.0, 10.0, "<|1.00|> in<|2.00|><|8.00|> padded end<|10.00|>", "")]
    assert [(s.reason, s.start) for s in skips] == [(OUTSIDE_AUDIO, 11.0)]

    # A cue running far past the audio end is skipped, and no window holds its start.
    windows, skips = split([Cue(1, 2, "in"), Cue(8, 20, "beyond")], 10.0)
    assert windows == [Window(0.0, 8.0, "<|1.00|> in<|2.00|>", "")]
    assert [(s.reason, s.start) for s in skips] == [(OUTSIDE_AUDIO, 8.0)]


def test_empty_cues_are_pauses():
    windows, skips = split([Cue(1, 2, "a"), Cue(2, 3, "  "), Cue(4, 5, "b")], 10.0)
    assert windows[0].text == "<|1.00|> a<|2.00|><|4.00|> b<|5.00|>" and skips == []


def test_speech_seconds_counts_complete_cues_only():
    assert speech_seconds("<|1.00|> a<|2.50|><|3.00|> b<|5.00|><|28.00|>") == pytest.approx(3.5)
    assert speech_seconds("") == 0


# --------------------------------------------------------------------------------------------
# Invariants


@st.composite
def recordings(draw):
    """Cues with unique texts w0, w1, ...: mostly in order, some long, overlapping or reversed."""
    n = draw(st.integers(0, 25))
    t, cues = 0, []
    for i in range(n):
        t = max(0, t + draw(st.integers(-3_000, 40_000)))  # ms; negative: overlaps the previous
        length = draw(st.one_of(st.integers(10, 12_000), st.integers(10, 36_000), st.integers(-2_000, 0)))
        cues.append(Cue(t / 1000, (t + length) / 1000, f"w{i}"))
        t += max(length, 0)
    audio_ms = t + draw(st.integers(1, 70_000))
    return cues, audio_ms / 1000


def prompt_tokens(prompt: str) -> int:
    return len(TIMESTAMP.findall(prompt)) + words(TIMESTAMP.sub(" ", prompt))


@settings(max_examples=200, deadline=None)
@given(recordings(), st.sampled_from([20, 40, 100]), st.integers(0, 12))
def test_window_invariants(recording, resolution, max_prompt_length):
    cues, audio_duration = recording
    windows, skips = split(cues, audio_duration, timestamp_resolution_ms=resolution,
                           max_prompt_length=max_prompt_length, max_tokens_length=10**6)
    audio_ms = round(audio_duration * 1000)
    starts = [round(w.start * 1000) for w in windows]
    # Invariant: windows come in time order, each starting later than the one before.
    assert starts == sorted(set(starts))
    for w in windows:
        start, length = round(w.start * 1000), round(w.duration * 1000)
        # Invariant: no window exceeds 30 s or the audio.
        assert 0 < length <= 30_000 and start + length <= audio_ms
        # Invariant: timestamps are non-decreasing and inside the window.
        stamps = [round(float(s) * 1000) for s in TIMESTAMP.findall(w.text)]
        assert stamps == sorted(stamps)
        assert all(0 <= s <= length for s in stamps)
        # Invariant: the prompt respects its cap.
        assert prompt_tokens(w.prompt) <= max_prompt_length
        if w.text == "":
            assert length == 30_000  # silence windows are whole windows
    skipped_at = {round(s.start * 1000) for s in skips}
    for cue in cues:
        hits = sum(w.text.count(f" {cue.text}<|") for w in windows)
        # Invariant: every cue's text lands in exactly one window, or the cue is reported skipped.
        assert hits == 1 or (hits == 0 and round(cue.start * 1000) in skipped_at), cue
        if hits == 0 and round(cue.start * 1000) < audio_ms:
            # Invariant: no window holds audio of a skipped cue.
            lo, hi = sorted((round(cue.start * 1000), min(round(cue.end * 1000), audio_ms)))
            lo = min(lo + OVERLAP_TOLERANCE_MS, hi)  # a snapped start gave those ms away
            for w in windows:
                w_lo, w_hi = round(w.start * 1000), round((w.start + w.duration) * 1000)
                assert not (w_lo < hi and lo < w_hi) and not (lo == hi and w_lo < lo < w_hi), (cue, w)


@settings(max_examples=200, deadline=None)
@given(recordings(), st.data())
def test_left_out_cues_are_muted_or_kept_out_never_heard_without_text(recording, data):
    from whisperft.repairs import RepairedCue
    from whisperft.windows import LEFT_OUT

    cues, audio_duration = recording
    left = data.draw(st.sets(st.integers(0, max(len(cues) - 1, 0)))) if cues else set()
    marked = [RepairedCue(c.start, c.end, c.text, LEFT_OUT if i in left else None) for i, c in enumerate(cues)]
    windows, _ = split(marked, audio_duration, max_tokens_length=10**6)
    audio_ms = round(audio_duration * 1000)
    for w in windows:
        w_lo, w_hi = round(w.start * 1000), round((w.start + w.duration) * 1000)
        spans = [(w_lo + round(a * 1000), w_lo + round(b * 1000)) for a, b in w.muted]
        assert all(w_lo <= a < b <= w_hi for a, b in spans)
        for i, c in enumerate(cues):
            lo, hi = round(c.start * 1000), min(round(c.end * 1000), audio_ms)
            if i in left:
                # Invariant: a left-out cue's text is nowhere; its audio in a window is muted
                assert f" {c.text}<|" not in w.text and f" {c.text}<|" not in w.prompt
                if lo < hi and w_lo < hi and lo < w_hi:
                    muted_ms = sum(max(0, min(b, hi) - max(a, lo)) for a, b in spans)
                    assert muted_ms >= min(hi, w_hi) - max(lo, w_lo) - OVERLAP_TOLERANCE_MS, (c, w)
            elif f" {c.text}<|" in w.text:
                # Invariant: the audio of a cue trained on is never muted
                assert all(not (a < hi - OVERLAP_TOLERANCE_MS and lo + OVERLAP_TOLERANCE_MS < b) for a, b in spans)
