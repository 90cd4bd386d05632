"""`create_data.py` end to end on small synthetic recordings (tones written with save_wav)."""

import dataclasses
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import whisperft.prepare as prepare_module
from whisperft.audio import SAMPLE_RATE, save_wav
from whisperft.cli import main as cli_main
from whisperft.errors import UserError
from whisperft.manifest import read_manifest
from whisperft.prepare import PrepareOptions, prepare
from whisperft.tokens import language_code

REPO = Path(__file__).resolve().parents[1]

LECTURE_SRT = """\
1
00:00:01,000 --> 00:00:03,000
Hello there.

2
00:00:05,000 --> 00:00:08,000
Second sentence

3
00:00:28,000 --> 00:00:32,000
crossing cue

4
00:00:35,000 --> 00:00:38,000
end
"""

MEETING_VTT = """\
WEBVTT

00:01.000 --> 00:02.000 align:start
<v Ann>Hi
"""


def tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def wav_seconds(path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


@pytest.fixture(autouse=True)
def word_count_tokens(monkeypatch):
    """Count words instead of loading the Whisper tokenizer (one test uses the real one)."""
    monkeypatch.setattr(prepare_module, "make_token_counter", lambda kind: lambda text: len(text.split()))


@pytest.fixture
def data(tmp_path):
    audio, subs = tmp_path / "data" / "train_audio", tmp_path / "data" / "train_transcripts"
    audio.mkdir(parents=True)
    subs.mkdir(parents=True)
    save_wav(audio / "lecture1.wav", tone(40.0))
    save_wav(audio / "meeting1.wav", tone(12.0, 330.0))
    (subs / "lecture1.srt").write_text(LECTURE_SRT, encoding="utf-8")
    (subs / "meeting1.vtt").write_text(MEETING_VTT, encoding="utf-8")
    (audio / "notes.txt").write_text("not audio, ignored")
    return tmp_path


def options(root: Path, **overrides) -> PrepareOptions:
    return dataclasses.replace(PrepareOptions(
        audio_dir=str(root / "data" / "train_audio"), transcript_dir=str(root / "data" / "train_transcripts"),
        language="en", output=str(root / "train.json"), dump_dir=str(root / "dump" / "train")), **overrides)


def test_spec_command_writes_windows_audio_and_features(data, capsys):
    assert prepare(options(data)) == 0
    records = read_manifest(data / "train.json")
    first = "<|1.00|> Hello there.<|3.00|><|5.00|> Second sentence<|8.00|><|28.00|>"
    assert [(r.text, r.prompt, r.start, r.duration, Path(r.source).name) for r in records] == [
        (first, "", 0.0, 30.0, "lecture1.wav"),
        ("<|0.00|> crossing cue<|4.00|><|7.00|> end<|10.00|>", first, 28.0, 12.0, "lecture1.wav"),
        ("<|1.00|> Hi<|2.00|>", "", 0.0, 12.0, "meeting1.wav"),
    ]
    dump = data / "dump" / "train"
    assert [r.audio_path for r in records] == [str(dump / "lecture1" / "0.wav"), str(dump / "lecture1" / "28000.wav"),
                                              str(dump / "meeting1" / "0.wav")]
    assert [wav_seconds(r.audio_path) for r in records] == [30.0, 12.0, 12.0]
    for r in records:
        features = np.load(r.features_path)
        assert r.language == "en" and r.n_mels == 80 and r.offset == 0.0
        assert features.shape == (80, 3000) and features.dtype == np.float16
    # The manifest stores paths relative to its folder, so the whole tree can move.
    assert '"audio_path": "dump/train/lecture1/0.wav"' in (data / "train.json").read_text()
    out = capsys.readouterr().out
    assert "3 examples from 2 files" in out and "0.9 min of audio" in out


def test_refuses_to_overwrite_unless_asked(data):
    (data / "train.json").write_text("precious\n")
    with pytest.raises(UserError, match=r"train\.json already exists \(add --overwrite"):
        prepare(options(data))
    assert (data / "train.json").read_text() == "precious\n"
    assert prepare(options(data, overwrite=True, precompute_features=False)) == 0
    assert len(read_manifest(data / "train.json")) == 3


def test_bad_files_are_reported_by_name_and_the_run_goes_on(data, capsys):
    audio, subs = data / "data" / "train_audio", data / "data" / "train_transcripts"
    (audio / "broken.wav").write_bytes(b"RIFF....not really audio")
    (subs / "broken.srt").write_text(LECTURE_SRT)
    save_wav(audio / "badtime.wav", tone(5.0))
    (subs / "badtime.srt").write_text("1\n00:00:01,000 --> 00:00:0x,000\nhi\n")
    save_wav(audio / "untranscribed.wav", tone(1.0))
    (subs / "orphan.srt").write_text(LECTURE_SRT)
    (subs / "long.srt").write_text("1\n00:00:01,000 --> 00:00:40,000\ntoo long\n\n"
                                   "2\n00:00:41,000 --> 00:00:42,000\nok\n")
    save_wav(audio / "long.wav", tone(45.0))

    assert prepare(options(data, precompute_features=False)) == 1
    err = capsys.readouterr()
    assert "broken.wav: cannot decode audio" in err.err
    assert "badtime.srt: line 2: bad timestamp '00:00:0x,000'" in err.err
    assert "untranscribed.wav: no transcript (untranscribed.srt or untranscribed.vtt" in err.err
    assert "orphan.srt: no audio file named orphan.*" in err.err
    assert "long.wav: 0:01.000: cue skipped (cue longer than 30 s: it lasts 39.0 s)" in err.err
    assert "files skipped: 4" in err.out and "left out: 1 (1 cue longer than 30 s)" in err.out
    texts = [r.text for r in read_manifest(data / "train.json")]
    # The good files, and long.wav resumed where its long cue ends (40 s), with its good cue.
    assert len(texts) == 4 and "<|1.00|> ok<|2.00|>" in texts


def test_no_dump_points_into_the_recordings(data):
    assert prepare(options(data, dump_dir=None, no_dump=True)) == 0
    records = read_manifest(data / "train.json")
    lecture = str(data / "data" / "train_audio" / "lecture1.wav")
    assert [(r.audio_path, r.start, r.duration, r.offset) for r in records[:2]] == [
        (lecture, 0.0, 30.0, 0.0), (lecture, 28.0, 12.0, 28.0)]
    assert all(r.source is None and r.features_path is None for r in records)
    assert sorted(p.name for p in data.iterdir()) == ["data", "train.json"]  # nothing dumped


def test_default_dump_dir_sits_beside_the_output(data):
    assert prepare(options(data, dump_dir=None, precompute_features=False)) == 0
    assert (data / "train_dump" / "meeting1" / "0.wav").is_file()


def test_clip_list_without_timestamps(data, capsys):
    clips = data / "clips"
    clips.mkdir()
    save_wav(clips / "a.wav", tone(2.0))
    save_wav(clips / "b.wav", tone(31.0))
    (clips / "list.tsv").write_text("a.wav\tHola\tcon tab\n\nb.wav\tdemasiado largo\nmissing.wav\tx\n")
    rc = prepare(options(data, audio_dir=None, transcript_dir=None, data_file=str(clips / "list.tsv"),
                         without_timestamps=True, language="Spanish"))
    assert rc == 1
    [record] = read_manifest(data / "train.json")
    assert (record.audio_path, record.text, record.language, record.prompt) == (
        str(clips / "a.wav"), " Hola con tab", "es", "")
    assert record.duration == 2.0 and record.n_mels == 80 and np.load(record.features_path).shape == (80, 3000)
    err = capsys.readouterr().err
    assert "list.tsv: line 3: " in err and "lasts 31.0 s" in err
    assert "list.tsv: line 4: " in err and "missing.wav: no such audio file" in err


def test_huggingface_audiofolder_metadata_csv(tmp_path):
    folder = tmp_path / "audiofolder"
    folder.mkdir()
    save_wav(folder / "one.wav", tone(1.5))
    save_wav(folder / "two.wav", tone(1.0))
    (folder / "metadata.csv").write_text('file_name,transcription,language\none.wav,"Hello, world",en\n'
                                         "two.wav,你好,chinese\n", encoding="utf-8")
    opts = PrepareOptions(audio_dir=str(folder), output=str(tmp_path / "hf.json"), precompute_features=False)
    assert prepare(opts) == 0  # found by itself: no --data-file needed
    assert [(r.text, r.language) for r in read_manifest(tmp_path / "hf.json")] == [
        (" Hello, world", "en"), ("你好", "zh")]


def test_option_errors_are_user_errors(data):
    with pytest.raises(UserError, match="--without-timestamps reads clips from --data-file"):
        prepare(options(data, without_timestamps=True))
    with pytest.raises(UserError, match="multiple of 20"):
        prepare(options(data, timestamp_resolution=30))
    with pytest.raises(UserError, match="give --audio-dir"):
        prepare(PrepareOptions(output=str(data / "x.json")))
    with pytest.raises(UserError, match="no such folder"):
        prepare(options(data, audio_dir=str(data / "nope")))


def test_language_codes_and_names():
    assert [language_code(x, default="en") for x in ("en", "ES", "Spanish", "mandarin", " japanese ")] == [
        "en", "es", "es", "zh", "ja"]
    assert language_code(None, default="en") == language_code("  ", default="en") == "en"
    with pytest.raises(UserError, match="unknown language 'Klingon'"):
        language_code("Klingon", default="en")


def test_subsampling_silence_across_files_and_exit_code(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    for name in ("a", "b"):  # each: 60 s of silence, then one cue -> two silence windows each
        save_wav(folder / f"{name}.wav", tone(70.0))
        (folder / f"{name}.srt").write_text("1\n00:01:01,000 --> 00:01:02,000\nlate\n")
    opts = PrepareOptions(audio_dir=str(folder), output=str(tmp_path / "s.json"), no_dump=True,
                          subsampling_factor_for_silence=2)
    assert prepare(opts) == 0  # subsampling is intended: not a problem
    records = read_manifest(tmp_path / "s.json")
    assert [(Path(r.audio_path).stem, r.start, r.text == "") for r in records] == [
        ("a", 0.0, True), ("a", 60.0, False), ("b", 0.0, True), ("b", 60.0, False)]


def test_cli_with_the_real_tokenizer(data, monkeypatch):
    monkeypatch.undo()  # the real Whisper tokenizer (english: the one tiny.en uses)
    try:
        count = prepare_module.make_token_counter("english")
    except UserError as exc:
        pytest.skip(f"no offline tokenizer: {exc}")
    assert count(" Hello there.") == 3
    out = data / "cli.json"
    rc = cli_main(["prepare", "--audio-dir", str(data / "data" / "train_audio"), "--transcript-dir",
                   str(data / "data" / "train_transcripts"), "--output", str(out), "--tokenizer-type", "english",
                   "--max-tokens-length", "8", "--no-precompute-features"])
    # The first window has 11 tokens (Hello there. = 3+2, Second sentence = 2+2, 1 start token).
    assert rc == 1
    assert [r.start for r in read_manifest(out)] == [28.0, 0.0]


def test_spec_command_as_written_on_tts_speech(tmp_path, speech_clips, monkeypatch, capsys):
    """README step 1's arguments, verbatim (relative paths, the real tokenizer), on a recording of
    espeak-ng sentences with exact SRT times. (The create_data.py shim is run by the --help test.)"""
    from whisperft.audio import load_audio
    from whisperft.subtitles import Cue
    from whisperft.writers import write_subtitles

    monkeypatch.undo()  # the real tokenizer
    monkeypatch.chdir(tmp_path)
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)  # 0.5 s between sentences
    pieces, cues, t = [gap], [], len(gap) / SAMPLE_RATE
    for path, text in speech_clips * 3:  # 12 sentences: more than one 30 s window
        speech = load_audio(path)
        cues.append(Cue(round(t, 3), round(t + len(speech) / SAMPLE_RATE, 3), text))
        pieces += [speech, gap]
        t = cues[-1].end + len(gap) / SAMPLE_RATE
    (tmp_path / "data" / "train_audio").mkdir(parents=True)
    save_wav(tmp_path / "data" / "train_audio" / "talk.wav", np.concatenate(pieces))
    write_subtitles(tmp_path / "data" / "train_transcripts" / "talk.srt", cues)

    try:
        prepare_module.make_token_counter("multilingual")
    except UserError as exc:
        pytest.skip(f"no offline tokenizer: {exc}")
    assert cli_main(["prepare", "--audio-dir", "./data/train_audio", "--transcript-dir", "./data/train_transcripts",
                     "--language", "en", "--output", "train.json", "--dump-dir", "./dump/train"]) == 0
    assert "examples from 1 file " in capsys.readouterr().out
    records = read_manifest(tmp_path / "train.json")
    assert len(records) >= 2
    # Every sentence lands, whole and once, in some window; later windows carry a prompt.
    joined = "".join(r.text for r in records)
    assert all(joined.count(f" {text}<|") == 3 for _, text in speech_clips)
    assert records[0].prompt == "" and all(r.prompt for r in records[1:])
    for r in records:
        assert r.duration <= 30.0 and abs(wav_seconds(r.audio_path) - r.duration) < 1e-3
        assert np.load(r.features_path).shape == (80, 3000)


def test_help_documents_every_flag():
    result = subprocess.run([sys.executable, "create_data.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for field in dataclasses.fields(PrepareOptions):
        assert f"--{field.name.replace('_', '-')}" in result.stdout
