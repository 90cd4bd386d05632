"""Transcription: long-form decoding of synthetic speech by the bundled tiny.en, the same text from
our PyTorch decoder, `--backend ct2` and faster-whisper itself, the CLI over a folder (one
transcript per file, a corrupt file skipped, re-runs skipping finished files), and training's
`best_model.pt` accepted as --model."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, load_demo_data_module, speak
from whisperft import transcribe as tr
from whisperft.audio import SAMPLE_RATE, AudioError, load_audio, save_wav, stream_audio
from whisperft.ct2_backend import CT2Transcriber
from whisperft.audio_ctx import FRAMES_PER_POSITION
from whisperft.decoding import TorchTranscriber, _Decode, _FileState, compression_ratio
from whisperft.errors import UserError
from whisperft.subtitles import read_subtitles
from whisperft.tokens import language_code
from whisperft.transcription import COMPRESSION_RATIO_THRESHOLD, TranscribeOptions, check_language, Stopped

# Sentences tiny.en hears well from espeak-ng at 150 words/min; eight of them with 0.5 s pauses
# make ~37 s, so the seventh sentence straddles the 30 s window edge and seeking is exercised.
LONG_SENTENCES = load_demo_data_module().EVERYDAY_SENTENCES[:8]
PAUSE_S = 0.5
MAX_WER = 0.10
GREEDY = ["--beam-size", "1"]  # the tests compare greedy decodes (and it is the fastest)
TORCH = ["--backend", "torch"]  # the CLI run is our decoder's, which the tests compare with faster-whisper


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalise(reference), normalise(hypothesis))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> tuple[Path, str, float]:
    """(wav longer than 30 s, its text, its duration in seconds)."""
    root = tmp_path_factory.mktemp("long")
    parts = []
    for i, sentence in enumerate(LONG_SENTENCES):
        parts += [load_audio(speak(sentence, root / f"part{i}.wav", speed=150)),
                  np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
    audio = np.concatenate(parts)
    assert len(audio) / SAMPLE_RATE > 30
    path = root / "audio" / "long.wav"
    save_wav(path, audio)
    return path, " ".join(LONG_SENTENCES), len(audio) / SAMPLE_RATE


@pytest.fixture(scope="module")
def cli_run(long_clip, speech_clips, tiny_en, tmp_path_factory):
    """`python transcribe.py` over a folder of the long clip, a short clip and a corrupt file."""
    audio_dir = long_clip[0].parent
    shutil.copy(speech_clips[1][0], audio_dir / "short.wav")
    (audio_dir / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 50)
    save_dir = tmp_path_factory.mktemp("transcripts")
    proc = subprocess.run([sys.executable, "transcribe.py", "--audio-dir", str(audio_dir),
                           "--save-dir", str(save_dir), "--model", "tiny.en", "--batch-size", "2", *GREEDY, *TORCH],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    return proc, audio_dir, save_dir


@pytest.mark.slow
def test_cli_writes_one_srt_per_audio_file_and_skips_a_corrupt_one(cli_run):
    proc, audio_dir, save_dir = cli_run
    assert proc.returncode == 1, proc.stderr  # one file failed
    assert sorted(p.name for p in save_dir.iterdir()) == ["long.srt", "short.srt"]
    problems = [line for line in proc.stderr.splitlines() if "corrupt.wav" in line]
    assert len(problems) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "transcribed 2 file(s), 0 already done, 1 failed" in proc.stderr


@pytest.mark.slow
def test_long_form_srt_matches_the_spoken_text(cli_run, long_clip):
    _, _, save_dir = cli_run
    _, text, duration = long_clip
    cues = read_subtitles(save_dir / "long.srt")
    assert wer(text, " ".join(c.text for c in cues)) <= MAX_WER
    # Invariant: absolute times, inside the audio, in order, none empty.
    assert len(cues) >= len(LONG_SENTENCES) // 2
    for prev, cue in zip([None, *cues], cues):
        assert 0 <= cue.start < cue.end <= duration + 1e-3
        if prev is not None:
            assert cue.start >= prev.end - 1e-3
    assert cues[-1].start > 30  # the second window's segments are placed after the first's


@pytest.mark.slow
def test_backends_and_faster_whisper_give_the_same_text(cli_run, long_clip):
    """Greedy: our decoder (batched with another file in the CLI run), --backend ct2 and
    faster-whisper called directly agree on every segment's text and times."""
    faster_whisper = pytest.importorskip("faster_whisper")
    from whisperft.offline import offline_package

    _, _, save_dir = cli_run
    path = long_clip[0]
    ours = [(round(c.start, 2), round(c.end, 2), c.text) for c in read_subtitles(save_dir / "long.srt")]

    opts = TranscribeOptions(model="tiny.en", beam_size=1, batch_size=1, device="cpu")
    ct2 = CT2Transcriber.load(opts)
    via_backend = [(round(s.start, 2), round(s.end, 2), s.text.strip())
                   for s in tr.transcribe_file(ct2.model, path, opts)]

    model = faster_whisper.WhisperModel(str(offline_package("tiny.en")[0]), device="cpu",
                                        compute_type="float32")
    segments, _ = model.transcribe(str(path), beam_size=1, language="en")
    direct = [(round(s.start, 2), round(s.end, 2), s.text.strip()) for s in segments]
    assert ours == via_backend == direct


@pytest.mark.slow
def test_rerun_skips_finished_files(cli_run, tmp_path, capfd):
    _, audio_dir, save_dir = cli_run
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("long.wav", "short.wav"):
        shutil.copy(audio_dir / name, audio / name)
    out = tmp_path / "out"
    shutil.copytree(save_dir, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    opts = TranscribeOptions(audio_dir=str(audio), save_dir=str(out), model="no-such-model")
    assert tr.transcribe_dir(opts) == 0  # no model is loaded: nothing is left to do
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert "0 file(s), 2 already done, 0 failed" in capfd.readouterr().err


@pytest.mark.slow
def test_training_checkpoint_is_accepted_by_both_backends(cli_run, tiny_en, speech_clips, tmp_path, capfd):
    """best_model.pt (openai-whisper format, what training writes) works as --model, and
    --backend ct2 converts it once into the cache; both transcribe as tiny.en did."""
    from whisperft import models, saving

    checkpoint = saving.save_openai(tiny_en, tmp_path / "best_model.pt")  # float16, as training saves
    clip, text = speech_clips[1]
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    shutil.copy(clip, audio_dir / "clip.wav")
    reference = read_subtitles(cli_run[2] / "short.srt")  # the same clip, by tiny.en

    texts = {}
    for backend in ("torch", "ct2"):
        out = tmp_path / backend
        opts = TranscribeOptions(audio_dir=str(audio_dir), save_dir=str(out), model=str(checkpoint),
                                 backend=backend, beam_size=1, format="all", device="cpu")
        assert tr.transcribe_dir(opts) == 0
        assert {p.suffix for p in out.iterdir()} == {".srt", ".vtt", ".txt", ".json"}
        texts[backend] = " ".join((out / "clip.txt").read_text().split())
    assert texts["torch"] == texts["ct2"] == " ".join(c.text for c in reference)
    assert wer(text, texts["torch"]) <= 0.25  # one short clip: tiny.en may miss a word

    converted = models.ct2_model_dir(str(checkpoint))
    assert converted.is_relative_to(models.cache_dir())
    capfd.readouterr()
    assert models.ct2_model_dir(str(checkpoint)) == converted
    assert "converting" not in capfd.readouterr().err  # cached: converted once


@pytest.mark.slow
def test_long_file_read_window_by_window_gives_the_whole_file_features_transcript(tiny_en, long_clip, monkeypatch):
    """Invariant: a file longer than a window, its log-mel computed a window at a time (from the
    file, or from samples in memory), is transcribed exactly as from the whole file's log-mel."""
    from whisperft import features

    path = long_clip[0]
    opts = TranscribeOptions(beam_size=1)
    runner = TorchTranscriber(tiny_en, opts)
    streamed = runner.open_audio(path)
    assert streamed.whole is None  # > 30 s: never computed whole
    audio = load_audio(path)
    whole = features.log_mel_spectrogram(audio, tiny_en.n_mels)
    for seek in (0, 500, streamed.n_frames - 3000):
        window = streamed.frames(seek, seek + 3000)
        assert (window - whole[:, seek:seek + 3000]).abs().max().item() <= 1e-6

    def segments(transcript):
        return [(s.start, s.end, s.text, s.tokens, s.avg_logprob, s.no_speech_prob) for s in transcript.segments]

    by_window = segments(tr.transcribe_audio(tiny_en, path, opts))
    monkeypatch.setattr(features, "BLOCK_FRAMES", 10**9)  # every file computed whole, as before
    assert runner.open_audio(path).whole is not None
    from_whole = segments(tr.transcribe_audio(tiny_en, audio, opts))
    assert by_window == from_whole
    assert by_window[-1][0] > 30  # the second window was decoded


def test_file_that_shrinks_between_its_two_readings_is_given_up(tmp_path):
    """The log-mel's peak is taken on a first reading of the whole file; a file that turns out
    shorter on the second (window by window) is that file's AudioError, not the run's end."""
    from whisperft.features import LongLogMel

    path = tmp_path / "a.wav"
    rng = np.random.default_rng(0)
    save_wav(path, 0.1 * rng.standard_normal(70 * SAMPLE_RATE).astype(np.float32))
    lm = LongLogMel(lambda: stream_audio(path), 80, source=str(path))
    save_wav(path, 0.1 * rng.standard_normal(40 * SAMPLE_RATE).astype(np.float32))
    first, second = _FileState("a", lm, 70.0, "en"), _FileState("b", lm, 70.0, "en", seek=5000)
    finished = deque()
    assert TorchTranscriber._ready([first, second], finished) == [first]
    ((key, error),) = finished
    assert key == "b" and isinstance(error, AudioError) and "ended early" in str(error)


class _EndlessCT2:
    """A faster_whisper.WhisperModel whose files are endless: each segment takes 5 ms."""

    def __init__(self):
        import collections

        self.started, self.windows = [], collections.Counter()
        self.model = type("M", (), {"is_multilingual": False})()

    def transcribe(self, audio, **kwargs):
        import time
        from types import SimpleNamespace

        key = int(audio[0])
        self.started.append(key)

        def segments():
            for i in range(1000):
                time.sleep(0.005)
                self.windows[key] += 1
                yield SimpleNamespace(start=i, end=i + 1, text=" x", tokens=[], avg_logprob=0.0,
                                      no_speech_prob=0.0, temperature=0.0, compression_ratio=1.0)
        return segments(), SimpleNamespace(language="en")


def test_ct2_interrupted_drops_queued_files_and_stops_those_under_way():
    """Ctrl-C while --backend ct2 waits: the files queued are not decoded, and the `batch_size`
    being decoded stop at their next window rather than being finished first."""
    model = _EndlessCT2()
    runner = CT2Transcriber(model, TranscribeOptions(batch_size=2))

    def items():
        for k in range(3):
            yield k, np.full(16, k, np.float32)
        raise KeyboardInterrupt  # Ctrl-C while the run waits for its inputs

    with pytest.raises(KeyboardInterrupt):
        list(runner.run(items()))
    assert set(model.started) <= {0, 1}  # file 2 was queued: dropped
    assert all(n < 1000 for n in model.windows.values())  # 0 and 1 stopped before their end


def test_prefetch_left_early_drops_queued_files_and_stops_the_one_being_read():
    started, stopped = [], []

    def load(path, stop):
        started.append(path.name)
        if path.name == "0.wav":
            return path.name
        for _ in range(1000):  # reading a long file, a chunk at a time
            if stop.wait(0.005):
                stopped.append(path.name)
                raise Stopped
        return path.name

    jobs = [tr._Job(Path(f"{i}.wav"), []) for i in range(6)]
    reader = tr._prefetch(jobs, ahead=2, load=load)
    job, result = next(reader)  # the first file read; the next ones queued or under way
    assert result == "0.wav"
    reader.close()  # what Ctrl-C does to the generator
    assert started[0] == "0.wav" and len(started) <= 2 and stopped == started[1:]


# --------------------------------------------------------------------------------------------
# Pieces


class _Tokenizer:
    def decode(self, ids):
        return "".join(f" w{i}" for i in ids)


def _splitter(timestamp_begin: int = 1000, eot: int = 999):
    """A TorchTranscriber with just what `_add_segments` uses."""
    t = TorchTranscriber.__new__(TorchTranscriber)
    t.timestamp_begin, t.eot = timestamp_begin, eot
    t.opts = TranscribeOptions()
    t.bundle = type("B", (), {"tokenizer": _Tokenizer()})()
    return t


def _state(seek: int = 0, duration: float = 100.0):
    import torch

    return _FileState("k", torch.zeros(80, int(duration * 100)), duration, "en", seek=seek)


def test_window_ending_mid_segment_seeks_to_its_last_complete_timestamp():
    t, tb = _splitter(), 1000
    st = _state(seek=500)  # window starts at 5.00 s
    # <|0.00|> 1 2 <|1.00|><|1.50|> 3 <|2.50|><|3.00|> 4 5 (unfinished)
    tokens = [tb, 1, 2, tb + 50, tb + 75, 3, tb + 125, tb + 150, 4, 5]
    t._add_segments(st, _Decode(tokens, -0.1), 3000, 0.01)
    assert [(s.start, s.end, s.text) for s in st.segments] == [(5.0, 6.0, " w1 w2"), (6.5, 7.5, " w3")]
    assert st.seek == 500 + 125 * FRAMES_PER_POSITION  # to <|2.50|>: the unfinished segment is redone
    # Invariant: the prompt gets exactly the tokens of the segments kept.
    assert st.all_tokens == tokens[:7]


def test_window_ending_in_one_timestamp_is_consumed_whole():
    t, tb = _splitter(), 1000
    st = _state()
    tokens = [tb, 1, tb + 100, tb + 100, 2, tb + 200]  # ... 2 <|4.00|> then end: no more speech
    t._add_segments(st, _Decode(tokens, -0.1), 3000, 0.01)
    assert [(s.start, s.end) for s in st.segments] == [(0.0, 2.0), (2.0, 4.0)]
    assert st.seek == 3000


def test_window_without_timestamp_pairs_is_one_segment_clipped_to_the_audio():
    t, tb = _splitter(), 1000
    st = _state(seek=0, duration=11.5)
    t._add_segments(st, _Decode([tb, 1, 2], -0.1), 1200, 0.01)
    assert [(s.start, s.end) for s in st.segments] == [(0.0, 11.5)]
    assert st.seek == 1200


def test_empty_and_zero_length_segments_are_dropped():
    t, tb = _splitter(), 1000
    st = _state()
    t._add_segments(st, _Decode([tb + 10, tb + 10, tb + 10, 7, tb + 20], -0.1), 3000, 0.01)
    assert [s.text for s in st.segments] == [" w7"]
    assert st.all_tokens == [tb + 10, 7, tb + 20]


def test_options_and_language_names():
    assert TranscribeOptions().temperatures() == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert TranscribeOptions(temperature_increment=0).temperatures() == (0.0,)
    assert language_code("Spanish") == "es" and language_code("en") == "en"
    assert language_code(None) is None
    with pytest.raises(UserError, match="unknown language"):
        language_code("Klingon")
    with pytest.raises(UserError, match="cannot translate"):
        check_language(None, "translate", False, "tiny.en")
    assert compression_ratio("la " * 200) > COMPRESSION_RATIO_THRESHOLD
    assert compression_ratio("The quick brown fox jumps over the lazy dog.") < COMPRESSION_RATIO_THRESHOLD


def test_missing_folder_and_colliding_names(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        tr.transcribe_dir(TranscribeOptions(audio_dir=str(tmp_path / "nope"), save_dir=str(tmp_path)))
    (tmp_path / "a").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        tr.transcribe_dir(TranscribeOptions(audio_dir=str(tmp_path / "a"), save_dir=str(tmp_path / "o")))
    for name in ("x.wav", "x.mp3"):
        (tmp_path / "a" / name).write_bytes(b"")
    todo, done, problems = tr._plan(TranscribeOptions(audio_dir=str(tmp_path / "a"),
                                                      save_dir=str(tmp_path / "o")))
    assert len(todo) == 1 and len(problems) == 1 and "would overwrite" in problems[0]


@pytest.mark.slow
def test_auto_backend_takes_ct2_where_it_can_and_says_so(tiny_en, capfd):
    """--backend auto (the default): faster-whisper's CTranslate2 when it is installed and can
    run the model, else the torch backend, each choice in one line of stderr with its reason."""
    pytest.importorskip("faster_whisper")
    assert TranscribeOptions().backend == "auto"
    opts = TranscribeOptions(model="tiny.en", device="cpu", beam_size=1, batch_size=1)
    assert isinstance(tr.load_transcriber(opts), CT2Transcriber)
    assert capfd.readouterr().err.splitlines()[-1] == "backend: ct2 (faster-whisper, cpu, float32)"

    mp = pytest.MonkeyPatch()
    with mp.context() as m:  # faster-whisper not installed
        m.setitem(sys.modules, "faster_whisper", None)
        assert isinstance(tr.load_transcriber(opts), TorchTranscriber)
    line = capfd.readouterr().err.splitlines()[-1]
    assert line.startswith("backend: torch (faster-whisper is not installed")

    from whisperft import models

    def unconvertible(spec):
        raise UserError(f"{spec}: cannot be converted")

    with mp.context() as m:  # a model CTranslate2 cannot take
        m.setattr(models, "ct2_model_dir", unconvertible)
        assert isinstance(tr.load_transcriber(opts), TorchTranscriber)
    assert capfd.readouterr().err.splitlines()[-1] == (
        "backend: torch (CTranslate2 cannot take this model: tiny.en: cannot be converted)")


def test_auto_backend_leaves_to_torch_what_ct2_cannot_do():
    pytest.importorskip("faster_whisper")
    opts = TranscribeOptions()
    assert tr._ct2_unfit(opts, "cpu") is None
    assert "mps" in tr._ct2_unfit(opts, "mps")  # Apple GPU
    assert "bfloat16" in tr._ct2_unfit(TranscribeOptions(compute_type="bfloat16"), "cpu")


def test_files_are_decoded_largest_first_and_a_missing_one_last(tmp_path):
    """The folder's order: largest file first, by path or by an item's path; an unreadable one
    sorts last (it is reported when read)."""
    sizes = {"a.wav": 10, "b.wav": 300, "c.wav": 40}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    paths = [tmp_path / n for n in ("a.wav", "missing.wav", "b.wav", "c.wav")]
    assert [p.name for p in tr.longest_first(paths)] == ["b.wav", "c.wav", "a.wav", "missing.wav"]
    jobs = [{"audio": p} for p in paths]
    assert [j["audio"].name for j in tr.longest_first(jobs, path=lambda j: j["audio"])] == \
        ["b.wav", "c.wav", "a.wav", "missing.wav"]
