"""Timing and hallucination measures: every number computed by hand on small inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from whisperft.probes import PROBE_NAMES, probe_signals
from whisperft.quality import (Timed, Word, hallucination_indicators, longest_repeated_run,
                               match_segments, read_timed, repeated_ngram_rate, summarize,
                               timestamp_errors, transcript_quality, words_in_silences)
from whisperft.subtitles import Cue, SubtitleError
from whisperft.transcription import Segment, Transcript
from whisperft.writers import to_json

from conftest import REPO

# --- hallucination -------------------------------------------------------------------------


def test_an_insertion_loop():
    # reference "the cat sat" (3 words); hypothesis "the cat sat sat sat sat sat sat" (8 words)
    # alignment: the/cat/sat hit, then 5 "sat" inserted -> insertion rate 5/3
    # 5-grams of the hypothesis (8 - 5 + 1 = 4):
    #   the cat sat sat sat | cat sat sat sat sat | sat sat sat sat sat | sat sat sat sat sat
    #   the 4th already occurred (the 3rd)  -> repeated 5-gram rate 1/4 = 0.25
    # longest loop: from the 4th word on, each word repeats the one before it (period 1):
    #   words 4..8 -> 5
    out = hallucination_indicators("the cat sat", "the cat sat sat sat sat sat sat")
    assert out["insertion_rate"] == pytest.approx(5 / 3)
    assert out["insertions"] == 5 and out["reference_words"] == 3
    assert out["repeated_5gram_rate"] == 0.25
    assert out["longest_repeated_run"] == 5


def test_insertions_use_the_wer_normaliser():
    # whisper normaliser: "Mr. Smith, um, arrived." -> "mister smith arrived" (filler dropped)
    # vs reference "mister smith arrived": nothing inserted. Without it, "Mr." and "Smith,"
    # are substitutions and "um," an insertion: 1/3.
    assert hallucination_indicators("mister smith arrived", "Mr. Smith, um, arrived.")[
        "insertion_rate"] == 0.0
    assert hallucination_indicators("mister smith arrived", "Mr. Smith, um, arrived.",
                                    normalizer="none")["insertion_rate"] == pytest.approx(1 / 3)


def test_an_empty_reference_has_no_insertion_rate_but_counts_its_insertions():
    out = hallucination_indicators("", "thank you for watching")
    assert out["insertion_rate"] is None and out["insertions"] == 4


def test_repeated_ngram_rate_by_hand():
    # "a b c d e a b c d e a": 11 words, 7 five-grams:
    #   abcde bcdea cdeab deabc eabcd | abcde (seen) bcdea (seen) -> 2/7
    assert repeated_ngram_rate("a b c d e a b c d e a".split()) == pytest.approx(2 / 7)
    # bigrams of "to be or not to be": to-be be-or or-not not-to to-be(seen) -> 1/5
    assert repeated_ngram_rate("to be or not to be".split(), n=2) == pytest.approx(0.2)
    # 6 words "a a a a a a": two 5-grams, the second equals the first -> 1/2
    assert repeated_ngram_rate(["a"] * 6) == 0.5
    # fewer than n + 1 words: no 5-gram can repeat
    assert repeated_ngram_rate(["a"] * 5) == 0.0
    assert repeated_ngram_rate([]) == 0.0


@pytest.mark.parametrize("text, run", [
    ("a b c a b c a b c", 6),  # "a b c" then 6 words that repeat it (period 3)
    ("a b c a b c a b", 5),  # the last copy cut short: 5 words
    ("x a b c a b c y", 3),  # one repeat of "a b c"
    ("no no", 1),
    ("a b x a b", 0),  # "a b" recurs, but not right after itself
    ("the cat sat on the mat", 0),
    ("", 0),
])
def test_longest_repeated_run(text, run):
    assert longest_repeated_run(text.split()) == run


def test_summarize_takes_magnitudes():
    # |values| = 0.1 0.2 0.3 0.4 0.5; median 0.3
    # p90, linear: position 0.9 * (5 - 1) = 3.6 -> 0.4 + 0.6 * (0.5 - 0.4) = 0.46
    out = summarize([0.1, -0.2, 0.3, -0.4, 0.5])
    assert out["median"] == pytest.approx(0.3)
    assert out["p90"] == pytest.approx(0.46)
    assert out["count"] == 5
    assert summarize([]) == {"median": None, "p90": None, "count": 0}


# --- timing --------------------------------------------------------------------------------

CUES = [Cue(1.0, 3.0, "The cat sat on the mat."), Cue(6.0, 8.0, "It was a sunny day.")]


def test_every_segment_half_a_second_late():
    shifted = [Segment(c.start + 0.5, c.end + 0.5, c.text) for c in CUES]
    assert timestamp_errors(CUES, shifted) == [(0.5, 0.5), (0.5, 0.5)]


def test_segments_are_matched_by_text_not_by_time():
    hypothesis = [
        Timed(0.9, 2.0, "the cat"),  # cue 0 -> (-0.1, -1.0)
        Timed(2.0, 7.0, "sat on the mat it"),  # 4 words of cue 0, 1 of cue 1 -> cue 0: (1.0, 4.0)
        Timed(3.0, 5.0, "thank you for watching"),  # inserted only: not matched
        Timed(1.0, 3.0, "was a sunny day"),  # cue 1 by its words, though at cue 0's time
    ]
    assert match_segments(CUES, hypothesis) == [(0, 0), (1, 0), (3, 1)]
    # cue 0 begins in segment 0 and ends in segment 1, cue 1 begins in segment 1 and ends in
    # segment 3: only those edges have a reference time
    errors = timestamp_errors(CUES, hypothesis)
    assert errors == [(pytest.approx(-0.1), None), (None, None), (None, -5.0)]


def test_a_segment_holding_two_sentences_is_judged_at_its_outer_edges():
    # the majority cue (cue 0, six words of eleven) would give an end error of 5 s
    merged = [Timed(1.1, 7.9, "the cat sat on the mat it was a sunny day")]
    assert timestamp_errors(CUES, merged) == [(pytest.approx(0.1), pytest.approx(-0.1))]
    split = [Timed(1.2, 2.0, "the cat sat"), Timed(2.0, 3.3, "on the mat")] + [Timed(6.0, 8.0, CUES[1].text)]
    assert timestamp_errors(CUES, split) == [(pytest.approx(0.2), None), (None, pytest.approx(0.3)), (0.0, 0.0)]


def test_a_substituted_word_still_places_its_segment():
    # "cat" -> "hat": a substitution is aligned, so the segment matches cue 0.
    assert timestamp_errors(CUES, [Timed(1.2, 3.1, "the hat sat on the mat")]) == [
        pytest.approx((0.2, 0.1))]


def test_words_in_a_three_second_silence():
    # Speech 0-2 and 5-7: a 3 s silence between.
    cues = [Cue(0.0, 2.0, "hello there"), Cue(5.0, 7.0, "good bye")]
    # "thanks for watching" spread over 3.0-4.0: midpoints 3.17, 3.5, 3.83 -> all 3 inside;
    # the other two segments lie on the cues -> 3 in all.
    hypothesis = [Timed(0.0, 2.0, "hello there"), Timed(3.0, 4.0, "thanks for watching"),
                  Timed(5.0, 7.0, "good bye")]
    assert words_in_silences(cues, hypothesis) == 3
    assert words_in_silences(cues, hypothesis, min_gap=5.0) == 0  # 3 s is no silence then
    # One segment over 1.0-5.0, 4 words spread evenly: midpoints 1.5 | 2.5 3.5 4.5 -> 3 inside;
    # with word timestamps that put every word on a cue -> 0.
    spread = Timed(1.0, 5.0, "a b c d")
    timed = Timed(1.0, 5.0, "a b c d", (Word(1.0, 1.4, "a"), Word(1.5, 1.9, "b"),
                                        Word(5.1, 5.5, "c"), Word(5.6, 6.0, "d")))
    assert words_in_silences(cues, [spread]) == 3
    assert words_in_silences(cues, [timed]) == 0


def test_words_before_the_first_and_after_the_last_cue():
    cues = [Cue(3.0, 4.0, "speech"), Cue(4.5, 7.0, "more speech")]
    # before: 0-3 (3 s) is a silence; 4.0-4.5 (0.5 s) is not; after: 7-10 (3 s) is.
    hypothesis = [Timed(0.0, 1.0, "music"), Timed(4.0, 4.5, "uh"), Timed(9.0, 10.0, "bye now")]
    assert words_in_silences(cues, hypothesis) == 3  # "music", "bye", "now"
    # an end that runs 0.5 s past the last cue is no silence
    assert words_in_silences(cues, [Timed(6.5, 7.5, "speech")]) == 0
    # a reference without speech: everything written is in silence
    assert words_in_silences([], [Timed(0.0, 5.0, "one two")]) == 2


def test_transcript_quality_without_times():
    out = transcript_quality(None, None, "the cat sat sat sat sat sat sat")
    assert out["start_errors"] == [] and out["words_in_silences"] is None
    assert (out["repeated_5grams"], out["hypothesis_5grams"]) == (1, 4)
    assert out["longest_repeated_run"] == 5


# --- reading timed transcripts -------------------------------------------------------------

def test_read_timed_from_our_json_and_subtitles(tmp_path):
    t = Transcript([Segment(0.5, 2.0, " Hello there."), Segment(2.5, 4.0, " Bye.")], "en", 5.0)
    (tmp_path / "a.json").write_text(to_json(t), encoding="utf-8")
    assert read_timed(tmp_path / "a.json") == [Timed(0.5, 2.0, "Hello there."),
                                               Timed(2.5, 4.0, "Bye.")]
    (tmp_path / "a.srt").write_text("1\n00:00:01,000 --> 00:00:02,500\nHi\n", encoding="utf-8")
    assert read_timed(tmp_path / "a.srt") == [Timed(1.0, 2.5, "Hi")]
    (tmp_path / "a.txt").write_text("Hi", encoding="utf-8")
    assert read_timed(tmp_path / "a.txt") is None
    (tmp_path / "t.json").write_text('{"text": "Hi"}', encoding="utf-8")
    assert read_timed(tmp_path / "t.json") is None  # text only


def test_read_timed_words_and_bad_segments(tmp_path):
    data = {"segments": [{"start": 0.0, "end": 1.0, "text": "hi there",
                          "words": [{"word": " hi", "start": 0.0, "end": 0.4},
                                    {"word": " there", "start": 0.5, "end": 1.0}]}]}
    (tmp_path / "w.json").write_text(json.dumps(data), encoding="utf-8")
    (segment,) = read_timed(tmp_path / "w.json")
    assert segment.words == (Word(0.0, 0.4, " hi"), Word(0.5, 1.0, " there"))
    data["segments"].append({"start": 1.0, "text": "no end"})
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SubtitleError, match=r"^\S*bad\.json: segment 1: needs numeric \"start\""):
        read_timed(tmp_path / "bad.json")
    data["segments"][1] = {"start": 1.0, "end": 2.0, "text": "x", "words": [{"word": "x"}]}
    (tmp_path / "badword.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SubtitleError, match=r"badword\.json: segment 1: word 0 needs"):
        read_timed(tmp_path / "badword.json")


# --- probes and imports --------------------------------------------------------------------

def test_probe_signals_are_fixed_and_at_their_levels():
    first, second = probe_signals(), probe_signals()
    assert tuple(first) == PROBE_NAMES
    for name in PROBE_NAMES:
        assert first[name].dtype == np.float32 and first[name].shape == (160_000,)  # 10 s
        np.testing.assert_array_equal(first[name], second[name])
    assert not first["silence"].any()

    def dbfs(x):  # RMS relative to a full-scale sine
        return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) * np.sqrt(2))

    assert dbfs(first["white noise"]) == pytest.approx(-30.0, abs=0.01)
    assert dbfs(first["mains hum"]) == pytest.approx(-30.0, abs=0.01)
    assert dbfs(first["music"]) == pytest.approx(-20.0, abs=0.01)
    spectrum = np.abs(np.fft.rfft(first["mains hum"]))
    assert np.argmax(spectrum) * 16_000 / 160_000 == 50.0  # the mains frequency


def test_quality_and_probes_import_no_torch():
    code = ("import sys, whisperft.quality, whisperft.probes, whisperft.metrics; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
