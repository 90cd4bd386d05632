"""Word timestamps (`--word-timestamps`) on the real bundled tiny.en, both backends: words
that start within 0.1 s of the truth (median) on speech whose word times are known, segments that start where
speech starts (against the demo data's exact cues, with the evaluation's own measure), the words
in the JSON output and read back by the evaluation; the torch backend's times are faster-whisper's.

Speech with known word times: each word is synthesised alone by espeak-ng and trimmed to its
sound (demo/make_data.py's `synthesize`: -45 dBFS, 10 ms margin), and the words are laid end to
end with gaps drawn from a seeded generator, so each word's start and end are known to the sample.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import load_demo_data_module, random_bundle, require_tool
from whisperft import transcribe as tr
from whisperft.audio import SAMPLE_RATE, save_wav
from whisperft.decoding import TorchTranscriber
from whisperft.errors import UserError
from whisperft.quality import read_timed, start_errors
from whisperft.subtitles import read_subtitles
from whisperft.transcription import TranscribeOptions

MAX_WORD_ERROR_S = 0.1
MAX_MEDIAN_START_ERROR_S = 0.15
WORD_GAP_S = (0.05, 0.25)  # silence between two words of a sentence
SENTENCE_GAP_S = 0.6


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


@pytest.fixture(scope="module")
def timed_speech(tmp_path_factory) -> tuple[Path, list[tuple[str, float, float]]]:
    """(wav, [(word, start, end)]): three sentences read word by word, every word's time known."""
    require_tool("espeak-ng")
    demo = load_demo_data_module()
    root = tmp_path_factory.mktemp("timed")
    voice, rng = demo.VOICES["us-m"], random.Random(0)
    parts, truth, t = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], 0.5
    for sentence in demo.EVERYDAY_SENTENCES[:3]:
        for i, word in enumerate(sentence.split()):
            sound = demo.synthesize(word, voice, root)
            gap = SENTENCE_GAP_S if i == 0 and truth else rng.uniform(*WORD_GAP_S)
            parts += [np.zeros(round(gap * SAMPLE_RATE), np.float32), sound]
            t += round(gap * SAMPLE_RATE) / SAMPLE_RATE
            truth.append((_norm(word), t, t + len(sound) / SAMPLE_RATE))
            t += len(sound) / SAMPLE_RATE
    parts.append(np.zeros(SAMPLE_RATE, np.float32))
    path = root / "words.wav"
    save_wav(path, np.concatenate(parts))
    return path, truth


def _word_errors(words, truth) -> list[tuple[float, float]]:
    """(start error, end error) of each recognised word that is the truth's word at its place
    (the two word lists aligned on their text)."""
    import difflib

    got = [_norm(w.word) for w in words]
    matcher = difflib.SequenceMatcher(a=[w for w, _, _ in truth], b=got, autojunk=False)
    return [(words[j + k].start - truth[i + k][1], words[j + k].end - truth[i + k][2])
            for i, j, n in matcher.get_matching_blocks() for k in range(n)]


@pytest.fixture(scope="module")
def word_runs(tiny_en, timed_speech):
    """The timed speech transcribed with word timestamps by each backend."""
    path, _ = timed_speech
    runs = {"torch": tr.transcribe_audio(tiny_en, path, TranscribeOptions(word_timestamps=True))}
    faster_whisper = pytest.importorskip("faster_whisper")  # noqa: F841
    ct2 = tr.load_transcriber(TranscribeOptions(backend="ct2", word_timestamps=True, batch_size=1))
    runs["ct2"] = tr.transcribe_audio(ct2.model, path, TranscribeOptions(word_timestamps=True))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "ct2"])
def test_word_starts_are_within_a_tenth_of_a_second_of_the_truth(word_runs, timed_speech, backend):
    _, truth = timed_speech
    transcript = word_runs[backend]
    words = [w for s in transcript.segments for w in s.words]
    errors = np.abs(np.array(_word_errors(words, truth)))
    assert len(errors) >= 0.8 * len(truth)  # tiny.en hears most words right
    starts, ends = errors[:, 0], errors[:, 1]
    assert np.median(starts) <= MAX_WORD_ERROR_S, starts.round(2).tolist()
    # The time warping gives a word the silence after it (a word ends where the next begins):
    # ends are late by about the gap, which here is up to 0.25 s.
    assert np.median(ends) <= WORD_GAP_S[1], ends.round(2).tolist()
    for s in transcript.segments:  # each segment spans its words exactly
        assert s.words and s.start == s.words[0].start and s.end == s.words[-1].end
        assert all(a.end <= b.start + 1e-6 for a, b in zip(s.words, s.words[1:]))
        assert "".join(w.word for w in s.words).strip() == s.text.strip()
        assert all(0.0 < w.probability <= 1.0 for w in s.words)


@pytest.mark.slow
def test_torch_backend_times_words_as_faster_whisper_does(word_runs):
    ours, theirs = word_runs["torch"].segments, word_runs["ct2"].segments
    assert [s.text for s in ours] == [s.text for s in theirs]
    pairs = [(a, b) for s, t in zip(ours, theirs) for a, b in zip(s.words, t.words)]
    assert len(pairs) == sum(len(s.words) for s in theirs)
    assert [a.word for a, _ in pairs] == [b.word for _, b in pairs]
    # the same alignment, up to one 20 ms step where float arithmetic tips the time warping
    assert max(max(abs(a.start - b.start), abs(a.end - b.end)) for a, b in pairs) <= 0.02 + 1e-6
    assert max(abs(a.probability - b.probability) for a, b in pairs) <= 0.01


@pytest.mark.slow
def test_segments_start_where_speech_starts_on_the_demo_data(tmp_path):
    """The original tiny.en's segments start where the previous one ended; with word timestamps
    they start with their first word: median start error against the exact cues <= 0.15 s."""
    pytest.importorskip("faster_whisper")
    demo = load_demo_data_module()
    demo.make_demo_data(tmp_path / "demo", scale=0.3)
    audio_dir, refs = tmp_path / "demo" / "test_audio", tmp_path / "demo" / "test_transcripts"
    medians = {}
    for words in (False, True):
        out = tmp_path / f"out_{words}"
        assert tr.transcribe_dir(TranscribeOptions(audio_dir=str(audio_dir), save_dir=str(out), format="json",
                                                   backend="ct2", word_timestamps=words)) == 0
        errors = []
        for ref in sorted(refs.glob("*.srt")):
            timed = read_timed(out / f"{ref.stem}.json")
            assert all(bool(s.words) == words for s in timed)
            errors += [abs(start) for start in start_errors(read_subtitles(ref), timed)]
        assert len(errors) >= 5
        medians[words] = float(np.median(errors))
    assert medians[True] <= MAX_MEDIAN_START_ERROR_S < medians[False], medians


def test_json_carries_the_words_and_the_evaluation_reads_them(tmp_path):
    from whisperft.transcription import Segment, Transcript, Word
    from whisperft.writers import write_transcript

    words = [Word(0.5, 0.9, " Hello", 0.91), Word(1.0, 1.4, " there.", 0.5)]
    transcript = Transcript([Segment(0.5, 1.4, " Hello there.", words=words), Segment(2.0, 3.0, " No words")],
                            "en", 4.0)
    write_transcript(tmp_path / "t.json", transcript)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["segments"][0]["words"] == [{"word": " Hello", "start": 0.5, "end": 0.9, "probability": 0.91},
                                            {"word": " there.", "start": 1.0, "end": 1.4, "probability": 0.5}]
    assert "words" not in data["segments"][1]  # not timed per word: no empty list claiming so
    timed = read_timed(tmp_path / "t.json")
    assert list(timed[0].words) == words and timed[1].words == ()


def test_word_timestamps_need_alignment_heads():
    bundle = random_bundle()
    bundle.model.generation_config.alignment_heads = []
    with pytest.raises(UserError, match="alignment heads"):
        TorchTranscriber(bundle, TranscribeOptions(word_timestamps=True))
    TorchTranscriber(bundle, TranscribeOptions())  # without word timestamps they are not needed
