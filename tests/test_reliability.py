"""Reliability and safety: bad input gets a clear error, interruptions lose nothing,
untrusted files cannot run code.

  - malformed inputs: one folder of hand-made bad files through `create_data.py` as a user runs
    it: one line per problem naming the file, the rest of the batch goes on, a summary with
    counts, exit status 1; long files decode without holding the audio twice;
  - interruptions: a real training process killed with SIGKILL (or stopped with SIGTERM)
    resumes to the same weights as an uninterrupted run; checkpoints are replaced atomically;
    a full disk while saving leaves the previous checkpoint intact;
  - untrusted files: a pickle that would run code is refused by every entry point; manifest
    paths cannot climb out of the manifest's folder.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, pickle_that_creates
from whisperft.audio import SAMPLE_RATE, AudioError, load_audio
from whisperft.errors import UserError
from whisperft.manifest import Record, read_manifest, write_manifest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_VERBOSITY": "error"}


def run(args: list[str], timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=ENV,
                          timeout=timeout, **kw)


# --------------------------------------------------------------------------------------------
# Malformed inputs through create_data.py

def tone_pcm(seconds: float, rate: int, channels: int = 1, width: int = 2, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * hz * t)
    frames = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if width == 3:  # 24-bit little-endian: the low three bytes of int32
        ints = (frames * (2**23 - 1)).astype("<i4")
        return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return (frames * 32767).astype("<i2").tobytes()


def write_wav(path: Path, seconds: float = 3.0, rate: int = SAMPLE_RATE, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(tone_pcm(seconds, rate, channels, width))
    return path


GOOD_SRT = "1\n00:00:00,500 --> 00:00:02,000\nHello there.\n"
GOOD_VTT = "WEBVTT\n\n00:00.500 --> 00:02.000\nHello there.\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))

# name -> (audio bytes or a writer, transcript name -> bytes)
# Each case: what the user sees. "ok" cases must become examples; the others must be named.
GOOD_AUDIO = [  # (stem, rate, channels, sample width in bytes)
    ("mono_16k", 16000, 1, 2), ("stereo_44k", 44100, 2, 2), ("low_8k", 8000, 1, 2),
    ("wide_22k", 22050, 1, 2), ("stereo_48k_24bit", 48000, 2, 3), ("high_96k", 96000, 2, 2),
]
BAD_AUDIO = {  # stem -> (file name, bytes), each with a good .srt beside it
    "empty_audio": ("empty_audio.wav", b""),
    "corrupt_audio": ("corrupt_audio.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64)),
    "text_as_audio": ("text_as_audio.mp3", b"this is a text file, not an mp3\n" * 30),
    "image_as_audio": ("image_as_audio.wav", PNG),
}
BAD_SUBTITLES = {  # transcript -> bytes, each with a good 3 s .wav beside it; -> error line
    "sub_empty.srt": b"",
    "sub_blank.vtt": b"WEBVTT\n\n\n",
    "sub_bad_timestamp.srt": b"1\n00:00:00,500 --> 00:00:01,000\nok\n\n2\n00:00:01,xx0 --> 00:00:02,000\nbad\n",
    "sub_binary.srt": bytes(range(256)) * 4,
    "sub_no_header.vtt": b"00:00.500 --> 00:02.000\nHello\n",
    "sub_broken_arrow.srt": b"1\n00:00:00,500 -> 00:00:02,000\nHello\n",
}
ODD_SUBTITLES = {  # transcript -> bytes: read, with a warning or a cue skipped
    "sub_utf16.srt": ("1\n00:00:00,500 --> 00:00:02,000\nCaf\u00e9 cr\u00e8me\n".encode("utf-16-le")),
    "sub_cp1252.srt": ("1\n00:00:00,500 --> 00:00:02,000\nCaf\u00e9 \u2013 na\u00efve\n".encode("cp1252")),
    "sub_bom_crlf.srt": codecs.BOM_UTF8 + GOOD_SRT.replace("\n", "\r\n").encode(),
    "sub_no_blank_line.srt": b"1\n00:00:00,500 --> 00:00:01,000\none\n2\n00:00:01,200 --> 00:00:02,000\ntwo\n",
    "sub_reversed.srt": b"1\n00:00:00,200 --> 00:00:00,900\nfine\n\n2\n00:00:02,000 --> 00:00:01,500\nreversed\n",
    "sub_zero_length.srt": b"1\n00:00:00,200 --> 00:00:00,900\nfine\n\n2\n00:00:01,500 --> 00:00:01,500\nzero\n",
    "sub_overlap.vtt": b"WEBVTT\n\n00:00.200 --> 00:00.900\nfine\n\n00:01.000 --> 00:02.000\na\n\n"
                       b"00:01.500 --> 00:02.500\nb\n",
    "sub_hours_over_99.srt": b"1\n00:00:00,200 --> 00:00:00,900\nfine\n\n2\n123:00:00,000 --> 123:00:01,000\nlate\n",
}


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory):
    """A folder of recordings and one of transcripts, every malformed case side by side."""
    root = tmp_path_factory.mktemp("batch")
    audio, subs = root / "audio", root / "subs"
    audio.mkdir()
    subs.mkdir()
    for stem, rate, channels, width in GOOD_AUDIO:
        write_wav(audio / f"{stem}.wav", 3.0, rate, channels, width)
        (subs / f"{stem}.srt").write_text(GOOD_SRT)
    for stem, (name, data) in BAD_AUDIO.items():
        (audio / name).write_bytes(data)
        (subs / f"{stem}.srt").write_text(GOOD_SRT)
    full = (audio / "mono_16k.wav").read_bytes()
    (audio / "truncated_audio.wav").write_bytes(full[: len(full) // 3])  # header says 3 s, 1 s left
    (subs / "truncated_audio.srt").write_text("1\n00:00:00,200 --> 00:00:00,800\nstill here\n")
    (audio / "header_only.wav").write_bytes(full[:44])  # a WAV header and no samples
    (subs / "header_only.srt").write_text(GOOD_SRT)
    for name, data in {**BAD_SUBTITLES, **ODD_SUBTITLES}.items():
        write_wav(audio / f"{Path(name).stem}.wav", 3.0)
        (subs / name).write_bytes(data)
    write_wav(audio / "no_transcript.wav", 1.0)  # audio with no transcript
    (subs / "no_audio.srt").write_text(GOOD_SRT)  # transcript with no audio
    write_wav(audio / "both.wav", 3.0)  # duplicate stems: both.srt and both.vtt
    (subs / "both.srt").write_text(GOOD_SRT)
    (subs / "both.vtt").write_text(GOOD_VTT)
    write_wav(audio / "twice.wav", 3.0)  # two recordings of one name: twice.wav and twice.flac
    (audio / "twice.flac").write_bytes((audio / "twice.wav").read_bytes())
    (subs / "twice.srt").write_text(GOOD_SRT)
    (audio / "notes.txt").write_text("not a recording: ignored")

    result = run(["create_data.py", "--audio-dir", str(audio), "--transcript-dir", str(subs),
                  "--output", str(root / "train.json"), "--no-dump"])
    return root, result


def lines_about(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"/{name}" in line or f"{name}:" in line.split(" ")[1:2]]


def test_bad_batch_names_every_bad_file_and_goes_on(bad_batch):
    root, result = bad_batch
    err, out = result.stderr, result.stdout
    assert "Traceback" not in err, err[-3000:]
    # Exit status: 1 = the manifest was written, but something was skipped (0 = all clean).
    assert result.returncode == 1, (result.returncode, err[-2000:])

    def one_line(name: str, *words: str, prefix: str = "skipped: ", count: int = 1) -> str:
        hits = [line for line in err.splitlines() if f"{name}" in line and line.startswith(prefix)]
        assert len(hits) == count, (name, hits, err[-3000:])
        for w in words:
            assert w in hits[0], (name, w, hits[0])
        return hits[0]

    one_line("empty_audio.wav", "file is empty")
    one_line("corrupt_audio.wav", "cannot decode audio")
    one_line("text_as_audio.mp3", "cannot decode audio")
    one_line("image_as_audio.wav", "no audio stream")
    one_line("header_only.wav", "no audio samples")
    one_line("sub_empty.srt", "no cues with text")
    one_line("sub_blank.vtt", "no cues with text")
    one_line("sub_bad_timestamp.srt", "line 6: bad timestamp '00:00:01,xx0'")
    one_line("sub_binary.srt")
    one_line("sub_no_header.vtt", "must start with 'WEBVTT'")
    one_line("sub_broken_arrow.srt", "line 2: bad cue timing")
    one_line("no_transcript.wav", "no transcript")
    one_line("no_audio.srt", "no audio file named no_audio.*")
    one_line("twice.flac", "same name")
    one_line("both.srt", "both.vtt", "using both.srt", prefix="note: ")
    one_line("sub_utf16.srt", "read as utf-16-le", prefix="warning: ")
    one_line("sub_cp1252.srt", "not UTF-8; read as cp1252", prefix="warning: ")
    one_line("sub_no_blank_line.srt", "line 4", "no blank line", prefix="warning: ")
    one_line("sub_reversed.wav", "cue does not end after it starts")
    one_line("sub_zero_length.wav", "cue does not end after it starts")
    one_line("sub_overlap.wav", "overlapping cues", count=2)  # one line per cue
    one_line("sub_hours_over_99.wav", "cue outside the audio")
    assert not [line for line in err.splitlines() if "bom_crlf" in line]  # a BOM and CRLF are no problem

    # The rest of the batch went on: every good file (and the odd-but-readable ones) made examples.
    records = read_manifest(root / "train.json")
    used = {Path(r.audio_path).stem for r in records}
    expected = ({stem for stem, *_ in GOOD_AUDIO} | {Path(n).stem for n in ODD_SUBTITLES}
                | {"truncated_audio", "both", "twice"})
    assert used == expected, (used ^ expected)
    text = {Path(r.audio_path).stem: r.text for r in records}
    assert "Café crème" in text["sub_utf16"] and "Café – naïve" in text["sub_cp1252"]
    assert "one" in text["sub_no_blank_line"] and "two" in text["sub_no_blank_line"]
    assert "fine" in text["sub_reversed"] and "reversed" not in text["sub_reversed"]

    # The summary counts what happened.
    files_ok = len(expected)
    files_failed = len(BAD_AUDIO) + 1 + len(BAD_SUBTITLES) + 3  # + header_only; no_transcript, no_audio, twice.flac
    assert f"from {files_ok} files" in out, out
    assert f"files skipped: {files_failed}" in out, out
    assert "left out: 5 (" in out and "2 cue does not end after it starts" in out, out


@pytest.fixture
def prepare_in_process(monkeypatch):
    """prepare() in this process, counting words instead of loading the tokenizer."""
    import whisperft.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "make_token_counter", lambda kind: lambda text: len(text.split()))
    return lambda **kw: prepare_module.prepare(prepare_module.PrepareOptions(no_dump=True, **kw))


def test_clip_list_with_bad_lines_goes_on(tmp_path, prepare_in_process, capsys):
    """--data-file: a malformed line, a missing and an empty clip are each one line; the rest goes on."""
    write_wav(tmp_path / "ok.wav", 2.0)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "list.tsv").write_text("ok.wav\thello\nmissing.wav\tgone\nno tab on this line\n"
                                       "empty.wav\tnothing\nok.wav\tagain\n", encoding="utf-8")
    assert prepare_in_process(data_file=str(tmp_path / "list.tsv"), output=str(tmp_path / "clips.json")) == 1
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 3, captured.err
    assert any("list.tsv: line 2: " in s and "no such audio file" in s for s in skipped)
    assert any("list.tsv: line 3: expected 'audio<TAB>text'" in s for s in skipped)
    assert any("list.tsv: line 4: " in s and "file is empty" in s for s in skipped)
    assert [r.text for r in read_manifest(tmp_path / "clips.json")] == [" hello", " again"]
    assert "2 examples from 2 files" in captured.out and "files skipped: 3" in captured.out


def test_a_batch_where_everything_fails_writes_nothing(tmp_path, prepare_in_process, capsys):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "a.srt").write_text(GOOD_SRT)
    with pytest.raises(UserError, match=r"no examples to write \(1 file skipped, 0 windows left out"):
        prepare_in_process(audio_dir=str(tmp_path), output=str(tmp_path / "out.json"))  # the CLI: exit 2
    assert "a.wav: file is empty" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_long_recording_is_held_once(tmp_path):
    """One hour of 16 kHz WAV decodes with peak memory near 1x the float32 result (not 2x)."""
    path = tmp_path / "hour.wav"
    minute = tone_pcm(60.0, SAMPLE_RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for _ in range(60):
            w.writeframes(minute)
    probe = ("import resource, sys\n"
             "import av, numpy\n"
             "from whisperft.audio import load_audio\n"
             "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "a = load_audio(sys.argv[1])\n"
             "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "print(a.size, a.nbytes, (peak - base) * 1024)\n")
    result = run(["-c", probe, str(path)])
    assert result.returncode == 0, result.stderr[-2000:]
    size, nbytes, growth = map(int, result.stdout.split())
    assert size == 3600 * SAMPLE_RATE
    assert growth < 1.25 * nbytes, f"peak grew by {growth / nbytes:.2f}x the result"


def test_headers_that_lie_about_the_length(tmp_path):
    """The preallocation trusts a header only as a hint: shorter and longer data both decode."""
    path = write_wav(tmp_path / "a.wav", 2.0)
    data = bytearray(path.read_bytes())
    # data chunk size says 1 s while 2 s follow (PyAV stops at the chunk size, or reads on)
    data[40:44] = (SAMPLE_RATE * 2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    audio = load_audio(path)
    assert audio.dtype == np.float32 and len(audio) in (SAMPLE_RATE, 2 * SAMPLE_RATE)
    # and a header claiming 20 hours over 2 s of data
    data[40:44] = (SAMPLE_RATE * 2 * 72000).to_bytes(4, "little")
    data[4:8] = (36 + SAMPLE_RATE * 2 * 72000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    audio = load_audio(path)
    assert len(audio) == 2 * SAMPLE_RATE and audio.base is None  # trimmed to what was decoded


def test_sample_buffer_grows_past_a_wrong_expectation():
    from whisperft.audio import _SampleBuffer

    for expected in (None, 1, 10, 10_000):
        buffer = _SampleBuffer(expected)
        chunks = [np.arange(i * 7, (i + 1) * 7, dtype=np.float32) for i in range(150)]
        for chunk in chunks:
            buffer.append(chunk)
        out = buffer.result()
        assert out.flags.owndata and out.base is None  # no view keeping a larger block alive
        np.testing.assert_array_equal(out, np.concatenate(chunks))


@pytest.mark.parametrize("rate, channels, width", [(8000, 1, 2), (44100, 2, 2), (96000, 2, 3)])
def test_rates_and_channels_become_16k_mono(tmp_path, rate, channels, width):
    audio = load_audio(write_wav(tmp_path / "a.wav", 1.5, rate, channels, width))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 1.5 * SAMPLE_RATE) < 0.01 * SAMPLE_RATE
    assert 0.29 < np.abs(audio).max() < 0.31  # channels averaged, not summed


def test_loud_stereo_stays_within_one(tmp_path):
    """FFmpeg's stereo -> mono mix adds channels at -3 dB (x1.41 for a centred voice); we average."""
    path = tmp_path / "loud.wav"
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = (0.99 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.stack([x, x], axis=1).tobytes())
    audio = load_audio(path)
    assert 0.97 < np.abs(audio).max() <= 1.0


def test_video_without_audio_and_folders(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "silent.mp4"
    try:
        with av.open(str(path), "w") as out:
            v = out.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
            for _ in range(5):
                for packet in v.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                    out.mux(packet)
            for packet in v.encode():
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        pytest.skip(f"cannot encode video here: {exc}")
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(path)
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path)  # a folder


# --------------------------------------------------------------------------------------------
# Interruptions: a real training process killed (SIGKILL) or stopped (SIGTERM), then resumed

STEPS, EVAL_STEPS = 6, 2  # last_model.pt at steps 2, 4 and 6
TRAIN_FLAGS = dict(batch_size=1, accum_grad_steps=1, train_steps=STEPS, eval_steps=EVAL_STEPS, log_steps=1,
                   device="cpu", lr=3e-3, warmup_steps=1, seed=7)


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """A random 2-layer Whisper (.pt) and 6 synthetic windows; the uninterrupted run's weights."""
    import torch

    from conftest import random_bundle
    from test_train import make_data
    from whisperft import saving
    from whisperft.train import TrainConfig, train

    root = tmp_path_factory.mktemp("interrupt")
    model = root / "tiny.pt"
    saving.save_openai(random_bundle(), model, torch.float32)
    data = make_data(root, 6)
    # In-process, on one thread as the CLI runs below (OMP_NUM_THREADS=1): the same float sums.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(train_json=str(data), model=str(model), save_dir=str(root / "whole"), **TRAIN_FLAGS))
    finally:
        torch.set_num_threads(threads)
    return root, model, data, weights(root / "whole" / "last_model.pt")


def weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_cli(model: Path, data: Path, save_dir: Path, *extra: str) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN_FLAGS.items()]
    return ["-m", "whisperft", "train", "--train-json", str(data), "--model", str(model),
            "--save-dir", str(save_dir), *flags, *extra]


def start_training(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:  # a file, not a pipe: a full pipe would stall the trainer
        return subprocess.Popen([sys.executable, *args], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)


def wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended (status {proc.returncode}) too soon:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"waited {timeout} s in vain:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


def wait_for_file(path: Path, proc: subprocess.Popen, log: Path) -> None:
    wait_until(path.exists, proc, log)


def check_only_whole_checkpoints(save_dir: Path) -> int:
    """Every *.pt is whole (loads weights-only); temp files are hidden and never *.pt. -> step."""
    import torch

    for p in save_dir.iterdir():
        if p.name.startswith("."):  # a save cut short: ".last_model.pt.XXXX.tmp"
            assert p.name.endswith(".tmp") and not p.name.endswith(".pt"), p.name
    assert sorted(p.name for p in save_dir.glob("*.pt")) in (["last_model.pt"], ["best_model.pt", "last_model.pt"])
    for p in save_dir.glob("*.pt"):
        torch.load(p, map_location="cpu", weights_only=True)
    return torch.load(save_dir / "last_model.pt", weights_only=True)["whisperft_train_state"]["step"]


def test_sigkill_mid_run_then_resume_gives_the_same_weights(training, tmp_path):
    root, model, data, uninterrupted = training
    save_dir, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_training(train_cli(model, data, save_dir), log)
    wait_for_file(save_dir / "last_model.pt", proc, log)
    # mid-run: once a step after the checkpoint is logged (that line is then ahead of it)
    wait_until(lambda: f'"step": {EVAL_STEPS + 1}, "loss"' in (save_dir / "metrics.jsonl").read_text(), proc, log)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: as a pre-empted machine
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    step = check_only_whole_checkpoints(save_dir)
    assert EVAL_STEPS <= step < STEPS

    resumed = run(train_cli(model, data, save_dir, "--resume", str(save_dir / "last_model.pt")), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert check_only_whole_checkpoints(save_dir) == STEPS
    assert same_weights(weights(save_dir / "last_model.pt"), uninterrupted)
    # The log holds each step once: lines written after the checkpoint, before the kill, are
    # replaced by the resumed run's (not left as duplicates).
    logged = [json.loads(line)["step"] for line in (save_dir / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert logged == list(range(1, STEPS + 1))


def test_sigterm_saves_exits_0_and_resumes_to_the_same_weights(training, tmp_path):
    root, model, data, uninterrupted = training
    save_dir, log = tmp_path / "run", tmp_path / "run.log"
    proc = start_training(train_cli(model, data, save_dir), log)
    wait_for_file(save_dir / "last_model.pt", proc, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    out = log.read_text()
    step = check_only_whole_checkpoints(save_dir)
    assert EVAL_STEPS <= step < STEPS
    assert "SIGTERM: finishing this step, saving, then stopping" in out
    assert f"stopped at step {step}" in out
    assert "Traceback" not in out

    # the resume command the run printed, run as printed, continues to the uninterrupted weights
    from test_train import printed_command

    command = printed_command(out, f"resume (from step {step}):")
    assert command[-4:] == ["--resume", str(save_dir / "last_model.pt"), "--train-steps", str(STEPS)]
    resumed = run(command[1:], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(weights(save_dir / "last_model.pt"), uninterrupted)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("moment", ["while writing", "before the rename", "after the rename"])
def test_kill_9_while_saving_leaves_the_old_or_the_new_checkpoint(tmp_path, moment):
    """SIGKILL at each moment of a save: last_model.pt is the old file or the new one, whole."""
    import torch

    from whisperft import saving

    path = tmp_path / "last_model.pt"
    old, new = {"step": torch.tensor(1), "w": torch.zeros(1000)}, {"step": torch.tensor(2), "w": torch.ones(1000)}
    saving.atomic_torch_save(old, path)
    pid = os.fork()
    if pid == 0:  # the child saves and is killed part-way; it never returns to pytest
        try:
            real_save, real_replace = torch.save, os.replace

            def die():
                os.kill(os.getpid(), signal.SIGKILL)

            if moment == "while writing":
                def save(obj, fh):
                    real_save(obj, fh)
                    fh.truncate(fh.tell() // 2)  # half the bytes on disk...
                    fh.flush()
                    die()  # ...and the power goes
                torch.save = save
            elif moment == "before the rename":
                os.replace = lambda *a: die()
            else:
                def replace(*a):
                    real_replace(*a)
                    die()
                os.replace = replace
            saving.atomic_torch_save(new, path)
        finally:
            os._exit(3)  # not reached: the kill comes first
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    loaded = torch.load(path, weights_only=True)
    expected = new if moment == "after the rename" else old
    assert int(loaded["step"]) == int(expected["step"]) and torch.equal(loaded["w"], expected["w"])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last_model.pt"]
    assert all(n.startswith(".last_model.pt.") and n.endswith(".tmp") for n in leftovers), leftovers


@pytest.mark.parametrize("failing", ["torch.save", "os.replace"])
def test_full_disk_while_saving_keeps_the_previous_checkpoint(training, tmp_path, monkeypatch, failing):
    import torch

    from whisperft.train import TrainConfig, train

    root, model, data, _ = training
    save_dir = tmp_path / "run"
    saves = []
    real_save, real_replace = torch.save, os.replace

    def full(is_last_model: bool) -> bool:  # the disk fills up at the second save of last_model.pt
        if is_last_model:
            saves.append(1)
        return is_last_model and len(saves) >= 2

    def save(obj, f, *args, **kwargs):
        if full(isinstance(obj, dict) and "whisperft_train_state" in obj):  # (f is a temp file)
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if full(Path(dst).name == "last_model.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    if failing == "torch.save":
        monkeypatch.setattr(torch, "save", save)
    else:
        monkeypatch.setattr(os, "replace", replace)
    cfg = TrainConfig(train_json=str(data), model=str(model), save_dir=str(save_dir),
                      **{**TRAIN_FLAGS, "train_steps": 2, "eval_steps": 1})  # saves at steps 1 and 2
    with pytest.raises(UserError) as err:
        train(cfg)
    message = str(err.value)
    assert message == (f"{save_dir / 'last_model.pt'}: could not save the checkpoint (No space left on device); "
                       "the previous one is intact")
    monkeypatch.undo()
    assert check_only_whole_checkpoints(save_dir) == 1  # the step-1 checkpoint, whole
    assert not [p for p in save_dir.iterdir() if p.name.startswith(".")]  # the temp file was removed


# --------------------------------------------------------------------------------------------
# Untrusted files: pickles that would run code; manifests pointing outside their folder


@pytest.fixture
def evil_pt(tmp_path):
    """A .pt whose unpickling creates a file (as any code could run): (path, the file it makes)."""
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"dims": {"n_mels": 80}, "model_state_dict": {"w": pickle_that_creates(marker)},
                "whisperft_train_state": {"step": pickle_that_creates(marker)}}, path)
    # The file is really dangerous: a plain (unsafe) load runs its code.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_malicious_pickle_is_refused_by_the_loader(evil_pt, tmp_path):
    from whisperft.models import load_model

    path, marker = evil_pt
    with pytest.raises(UserError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: ") and "weights-only" in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_malicious_pickle_is_refused_by_every_command(evil_pt, tmp_path):
    path, marker = evil_pt
    audio = tmp_path / "audio"
    audio.mkdir()
    write_wav(audio / "a.wav", 1.0)
    commands = {
        "transcribe --model": (["transcribe.py", "--model", str(path), "--audio-dir", str(audio),
                                "--save-dir", str(tmp_path / "transcripts")], tmp_path / "transcripts"),
        "train --resume": (["run_finetuning.py", "--resume", str(path), "--train-json", str(tmp_path / "none.json"),
                            "--save-dir", str(tmp_path / "out")], tmp_path / "out"),
    }
    for name, (args, output) in commands.items():
        result = run(args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert len(errors) == 1 and str(path) in errors[0], (name, result.stderr[-2000:])
        assert not marker.exists(), name
        assert not output.exists(), name  # nothing created


def test_hugging_face_folder_with_a_pickled_bin_is_refused(tmp_path):
    import torch

    from conftest import random_bundle
    from whisperft.models import load_model

    marker = tmp_path / "pwned"
    folder = tmp_path / "hf"
    random_bundle().model.config.save_pretrained(folder)
    torch.save({"model.encoder.conv1.weight": pickle_that_creates(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="hf"):
        load_model(folder)
    assert not marker.exists()


def test_no_remote_code_anywhere():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "whisperft").glob("*.py"))
    assert "trust_remote_code" not in sources
    assert "weights_only=False" not in sources and "allow_pickle=True" not in sources


def test_manifest_paths_stay_inside_the_manifest_folder(tmp_path):
    data = tmp_path / "datasets" / "mine"
    (data / "dump").mkdir(parents=True)
    manifest = data / "train.json"

    def read(record: dict):
        manifest.write_text(json.dumps({"text": "", **record}) + "\n", encoding="utf-8")
        return read_manifest(manifest)[0]

    # Relative paths resolve against the manifest's folder, wherever the command runs from.
    assert read({"audio_path": "dump/0.wav"}).audio_path == str(data / "dump" / "0.wav")
    assert read({"audio_path": "dump/../a.wav"}).audio_path == str(data / "a.wav")  # stays inside
    # A relative path climbing out of the folder is refused, in every path field.
    for key in ("audio_path", "source", "features_path"):
        for escape in ("../other/a.wav", "dump/../../a.wav", "../../../../../../etc/passwd"):
            record = {"audio_path": "a.wav", key: escape}
            with pytest.raises(UserError) as err:
                read(record)
            assert str(err.value).startswith(f"{manifest}: line 1: '{key}' ") and "outside" in str(err.value)
    # Absolute paths are the user's own (jumon/whisper-finetuning writes them): taken as written.
    assert read({"audio_path": "/srv/audio/a.wav"}).audio_path == "/srv/audio/a.wav"
    with pytest.raises(UserError, match="NUL"):
        read({"audio_path": "a.wav\u0000.npy"})
    # Our writer never writes a climbing path: files outside the folder are stored absolute...
    outside = tmp_path / "recordings" / "talk.wav"
    write_manifest(manifest, [Record(audio_path=str(data / "dump" / "0.wav"), text="", source=str(outside))])
    stored = json.loads(manifest.read_text(encoding="utf-8"))
    assert stored["audio_path"] == "dump/0.wav" and stored["source"] == str(outside)
    # ...so what it writes reads back, and a folder moved whole still finds its own files.
    moved = tmp_path / "moved"
    os.rename(data, moved)
    back = read_manifest(moved / "train.json")[0]
    assert back.audio_path == str(moved / "dump" / "0.wav") and back.source == str(outside)


def test_pickled_features_in_a_manifest_cannot_run_code(tmp_path):
    """A features .npy holding a pickle is refused (numpy's allow_pickle=False), nothing runs."""
    from conftest import random_bundle
    from whisperft.data import DataOptions, WhisperDataset
    from whisperft.tokens import TokenLayout

    marker = tmp_path / "pwned"
    np.save(tmp_path / "f.npy", np.array([pickle_that_creates(marker)], dtype=object), allow_pickle=True)
    write_manifest(tmp_path / "m.json", [Record(audio_path=str(tmp_path / "f.npy"), text="",
                                                features_path=str(tmp_path / "f.npy"), n_mels=80)])
    bundle = random_bundle()
    dataset = WhisperDataset(read_manifest(tmp_path / "m.json"), TokenLayout(bundle.tokenizer, False), 80,
                             DataOptions())
    with pytest.raises((UserError, ValueError)):
        dataset.features(dataset.records[0])
    assert not marker.exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_outputs_get_ordinary_permissions(tmp_path):
    """Temp files are owner-only (mkstemp); the outputs they become follow the umask."""
    from whisperft.fileio import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}\n")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
