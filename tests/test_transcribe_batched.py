"""`transcribe --batched`: a file cut at pauses into chunks of at most 30 s (chunking.py), decoded
as one batch by our torch decoder, gives faster-whisper's BatchedInferencePipeline's text
(`--backend ct2 --batched`), with segment times back in the file's time; and how ct2 shares
--threads among the files it decodes at once."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, load_demo_data_module, speak
from whisperft import chunking
from whisperft import transcribe as tr
from whisperft.audio import SAMPLE_RATE, load_audio, save_wav
from whisperft.ct2_backend import CT2Transcriber
from whisperft.subtitles import read_subtitles
from whisperft.transcription import Segment, TranscribeOptions, Word

pytest.importorskip("faster_whisper")

SENTENCES = load_demo_data_module().EVERYDAY_SENTENCES[:8]
PAUSES_S = (0.4, 0.9, 0.5, 1.3, 0.6, 0.8, 0.5, 0.7)  # uneven, so that a wrong shift shows
START_TOLERANCE = 0.25  # seconds between a word-timed segment start and the sentence's onset


@pytest.fixture(scope="module")
def paused_clip(tmp_path_factory):
    """(wav of 8 sentences with pauses, ~40 s: two chunks; the sentences' onsets and ends in
    seconds; the duration)."""
    root = tmp_path_factory.mktemp("batched")
    parts, onsets, ends, t = [np.zeros(int(0.7 * SAMPLE_RATE), np.float32)], [], [], 0.7
    for i, (sentence, pause) in enumerate(zip(SENTENCES, PAUSES_S)):
        audio = load_audio(speak(sentence, root / f"part{i}.wav", speed=150))
        nonzero = np.flatnonzero(np.abs(audio) > 1e-3)
        onsets.append(t + nonzero[0] / SAMPLE_RATE)
        ends.append(t + (nonzero[-1] + 1) / SAMPLE_RATE)
        parts += [audio, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        t += (len(audio) + int(pause * SAMPLE_RATE)) / SAMPLE_RATE
    path = root / "audio" / "paused.wav"
    save_wav(path, np.concatenate(parts))
    return path, onsets, ends, t


def test_cut_keeps_chunks_within_a_window_and_maps_their_times_back(paused_clip):
    path, onsets, _, duration = paused_clip
    chunks = chunking.cut(load_audio(path))
    assert len(chunks.audio) >= 2
    assert all(a.size <= chunking.CHUNK_SECONDS * SAMPLE_RATE for a in chunks.audio)
    # a chunk's start is the first stretch of speech in it: the VAD's onset, padded by <= 0.4 s
    for i in range(len(chunks.audio)):
        start = chunking.restore_times([Segment(0.0, 1.0, "x")], chunks, i)[0].start
        assert any(-0.1 <= onset - start <= 0.5 for onset in onsets), (i, start, onsets)
    # a word is placed by the stretch its middle falls in, its segment by its words
    seg = Segment(0.0, 3.0, "x", words=[Word(0.5, 1.0, " a"), Word(1.5, 2.0, " b")])
    moved = chunking.restore_times([seg], chunks, 1)[0]
    assert (moved.start, moved.end) == (moved.words[0].start, moved.words[-1].end)
    assert moved.start > chunks.offsets[1]  # the silences before the chunk are added back
    assert chunking.cut(np.zeros(5 * SAMPLE_RATE, np.float32)).audio == []


@pytest.fixture(scope="module")
def torch_batched(paused_clip, tiny_en, tmp_path_factory):
    """`transcribe.py --batched --backend torch`, greedy, on the paused clip."""
    save_dir = tmp_path_factory.mktemp("batched_out")
    proc = subprocess.run([sys.executable, "transcribe.py", "--audio-dir", str(paused_clip[0].parent),
                           "--save-dir", str(save_dir), "--model", "tiny.en", "--batched", "--batch-size", "4",
                           "--beam-size", "1", "--backend", "torch", "--threads", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return read_subtitles(save_dir / "paused.srt")


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


@pytest.mark.slow
def test_batched_torch_and_ct2_give_the_same_text_in_order(paused_clip, torch_batched):
    """The same words from both backends; torch's segments are sentences, ct2's (faster-whisper's
    pipeline without timestamps) one a chunk: both in order, inside the audio, starting at speech."""
    path, onsets, ends, duration = paused_clip
    opts = TranscribeOptions(model="tiny.en", beam_size=1, batch_size=4, batched=True, device="cpu", threads=1)
    ct2 = tr.transcribe_file(CT2Transcriber.load(opts).model, path, opts)
    ours = [(c.start, c.end, c.text) for c in torch_batched]
    theirs = [(s.start, s.end, s.text) for s in ct2]
    assert _words(" ".join(t for *_, t in ours)) == _words(" ".join(t for *_, t in theirs))
    assert len(ours) == len(SENTENCES) and len(theirs) == len(chunking.cut(load_audio(path)).audio)
    for segments in (ours, theirs):
        starts = [s for s, _, _ in segments]
        assert starts == sorted(starts) and all(0 <= s < e <= duration + 0.01 for s, e, _ in segments)
    # a chunk starts at its first stretch of speech, less the VAD's 0.4 s padding
    assert all(any(-0.15 <= onset - s <= 0.6 for onset in onsets) for s, _, _ in theirs), (theirs, onsets)
    # a sentence starts in the pause before it (Whisper's timestamps, 20 ms steps; a decaying
    # sentence end reads as speech here), not inside another sentence
    before = [0.0] + ends[:-1]
    wrong = [(s, b, onset) for (s, _, _), b, onset in zip(ours, before, onsets) if not b - 0.3 <= s <= onset + 0.15]
    assert not wrong, wrong


@pytest.mark.slow
def test_batched_word_timed_segments_start_where_the_sentences_do(paused_clip, tiny_en):
    path, onsets, _, _ = paused_clip
    opts = TranscribeOptions(beam_size=1, batch_size=4, batched=True, word_timestamps=True)
    segments = tr.transcribe_file(tiny_en, path, opts)
    assert len(segments) == len(onsets)
    errors = [abs(s.start - onset) for s, onset in zip(segments, onsets)]
    assert max(errors) <= START_TOLERANCE, errors
    assert all(s.words and s.words[0].start == s.start for s in segments)


@pytest.mark.parametrize("threads, batched, workers", [(1, False, 1), (2, False, 2), (8, False, 4), (8, True, 1)])
def test_ct2_decodes_at_most_one_file_per_thread(tiny_en, threads, batched, workers):
    """--threads is all the run uses: --batch-size 4 files at once, but never more files than
    threads (each CTranslate2 worker has at least one); --batched takes one file at a time."""
    runner = CT2Transcriber.load(TranscribeOptions(batch_size=4, threads=threads, batched=batched, device="cpu"))
    assert runner.workers == runner.model.model.num_workers == workers
