"""What Windows and macOS do differently, reproduced on Linux: the spawn start method for data
workers (both use it), and the other platform differences whisperft must survive."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from test_reliability import ENV, training  # noqa: F401
from test_train import make_data

# Run a root script as `python SCRIPT ...` does, with data workers started by spawn (the
# default on Windows and macOS): each worker imports the script again as __mp_main__.
UNDER_SPAWN = """
import multiprocessing, runpy, sys
multiprocessing.set_start_method("spawn", force=True)
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def run_under_spawn(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**ENV, "WHISPERFT_CACHE": os.environ["WHISPERFT_CACHE"]}
    return subprocess.run([sys.executable, "-c", UNDER_SPAWN, script, *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


@pytest.mark.slow
def test_training_with_spawned_workers_trains_evaluates_and_resumes(tiny_en, tmp_path):
    """run_finetuning.py --num-workers 2 under spawn, on the bundled tiny.en."""
    train_json = make_data(tmp_path, 4)
    dev_json = make_data(tmp_path, 2, seed=1, name="dev.json")
    out = tmp_path / "out"
    flags = ["--train-json", str(train_json), "--dev-json", str(dev_json), "--model", "tiny.en",
             "--save-dir", str(out), "--num-workers", "2", "--batch-size", "1", "--dev-batch-size", "2",
             "--accum-grad-steps", "2", "--eval-steps", "1", "--warmup-steps", "1", "--lr", "1e-5",
             "--log-steps", "1", "--device", "cpu"]
    first = run_under_spawn("run_finetuning.py", *flags, "--train-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    # one run, not one per worker: the script's body ran once
    assert first.stdout.count("model tiny.en:") == 1, first.stdout[-3000:]
    second = run_under_spawn("run_finetuning.py", *flags, "--train-steps", "3",
                             "--resume", str(out / "last_model.pt"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Traceback" not in first.stderr + second.stderr
    assert "note: --train-steps 2 -> 3 on resume" in second.stderr
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "loss" in e] == [1, 2, 3]
    assert [e["step"] for e in entries if "dev_loss" in e] == [0, 1, 2, 3]
    state = torch.load(out / "last_model.pt", weights_only=True)["whisperft_train_state"]
    assert state["step"] == 3


@pytest.mark.slow
def test_transcription_under_spawn(speech_clips, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "clip.wav").write_bytes(speech_clips[0][0].read_bytes())
    result = run_under_spawn("transcribe.py", "--audio-dir", str(audio), "--save-dir", str(tmp_path / "out"),
                             "--model", "tiny.en", "--beam-size", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lazy dog" in (tmp_path / "out" / "clip.srt").read_text().lower()


def test_a_replace_refused_once_is_retried(tmp_path, monkeypatch):
    """Windows refuses a rename onto a file someone holds open for a moment (PermissionError)."""
    from whisperft import fileio

    real, refusals = os.replace, []

    def held_open_once(src, dst):
        if not refusals:
            refusals.append(dst)
            raise PermissionError(13, "The process cannot access the file", str(dst))
        return real(src, dst)

    target = tmp_path / "last_model.txt"
    target.write_text("old")
    monkeypatch.setattr(os, "replace", held_open_once)
    fileio.atomic_write_text(target, "new")
    assert refusals == [target] and target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["last_model.txt"]


def test_a_replace_refused_for_good_fails_and_keeps_the_old_file(tmp_path, monkeypatch):
    from whisperft import fileio

    def always_held(src, dst):
        raise PermissionError(13, "The process cannot access the file", str(dst))

    target = tmp_path / "out.txt"
    target.write_text("old")
    monkeypatch.setattr(fileio, "REPLACE_RETRY_DELAYS", (0.0, 0.0))
    monkeypatch.setattr(os, "replace", always_held)
    with pytest.raises(PermissionError):
        fileio.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_device_auto_selection_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    from whisperft import devices

    monkeypatch.setattr(devices, "cuda_available", lambda: cuda)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)
    assert devices.choose_device(None) == expected
    assert devices.choose_device("auto") == expected
    assert devices.choose_device("cpu") == "cpu"


def test_an_unavailable_device_is_one_clear_line(monkeypatch):
    from whisperft import devices
    from whisperft.errors import UserError

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    with pytest.raises(UserError, match=r"^--device mps: no Apple GPU \(MPS\) is available"):
        devices.choose_device("mps")
    with pytest.raises(UserError, match=r"^--device cuda:1: no CUDA GPU is visible"):
        devices.choose_device("cuda:1")


NON_ASCII = "Łódź 日本"  # Ł, ó, ź: outside cp1252; 日本: outside every Western code page


def test_training_with_non_ascii_paths_under_a_cp1252_console(training, tmp_path):
    """A Windows console (cp1252) cannot show every path: the run prints them escaped instead
    of stopping with a UnicodeEncodeError, and its files carry the real names."""
    from test_reliability import train_cli

    root, model, data, _ = training
    folder = tmp_path / NON_ASCII
    folder.mkdir()
    (folder / "model.pt").write_bytes(model.read_bytes())
    args = train_cli(folder / "model.pt", data, folder / "out", "--train-steps", "2", "--eval-steps", "2")
    result = subprocess.run([sys.executable, *args], capture_output=True, cwd=REPO,
                            env={**ENV, "PYTHONIOENCODING": "cp1252"}, timeout=600)
    stdout, stderr = result.stdout.decode("cp1252"), result.stderr.decode("cp1252")
    assert result.returncode == 0, stderr[-3000:]
    assert "\\u0141" in stdout  # the model path is printed, its Ł escaped
    assert "UnicodeEncodeError" not in stderr
    assert (folder / "out" / "last_model.pt").is_file()


@pytest.mark.slow
def test_transcripts_of_non_ascii_names_under_a_cp1252_console(speech_clips, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    name = f"{NON_ASCII} clip"
    (audio / f"{name}.wav").write_bytes(speech_clips[0][0].read_bytes())
    env = {**ENV, "WHISPERFT_CACHE": os.environ["WHISPERFT_CACHE"], "PYTHONIOENCODING": "cp1252"}
    result = subprocess.run([sys.executable, "transcribe.py", "--audio-dir", str(audio), "--save-dir",
                             str(tmp_path / f"out {NON_ASCII}"), "--model", "tiny.en", "--beam-size", "1",
                             "--format", "all"], capture_output=True, cwd=REPO, env=env, timeout=600)
    stderr = result.stderr.decode("cp1252")
    assert result.returncode == 0, stderr[-3000:]
    assert "UnicodeEncodeError" not in stderr
    for suffix in (".srt", ".vtt", ".txt", ".json"):
        text = (tmp_path / f"out {NON_ASCII}" / f"{name}{suffix}").read_bytes().decode("utf-8")
        assert "lazy dog" in text.lower()
        assert "\r\n" not in text


@pytest.mark.slow
@pytest.mark.parametrize("beam_size", [1, 5])
def test_decoding_makes_no_float64_tensor(tiny_en, speech_clips, beam_size):
    """Apple GPUs (MPS) have no float64: transcription must never make a float64 tensor on the
    model's device. Checked on the CPU by watching every op PyTorch dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from whisperft import TranscribeOptions, transcribe_file

    class Float64Watch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    self.ops.append(str(func))
            return out

    audio, _ = speech_clips[1]
    # every decode rejected: temperature 0, then sampling at 1 (that path is watched too)
    options = TranscribeOptions(beam_size=beam_size, language="en", logprob_threshold=0.0, temperature_increment=1.0)
    with Float64Watch() as watch:
        segments = transcribe_file(tiny_en, audio, options)
    assert segments and "from the store" in " ".join(s.text for s in segments).lower()
    assert watch.ops == [], sorted(set(watch.ops))


def test_names_that_differ_only_in_case_are_kept_apart(tmp_path):
    """On Windows and macOS Talk.srt and talk.srt are one file: the second recording is
    reported and left out, never written over the first one's outputs."""
    from whisperft import TranscribeOptions
    from whisperft.pairing import pair_files
    from whisperft.transcribe import _plan

    audio, subs = tmp_path / "audio", tmp_path / "subs"
    audio.mkdir()
    subs.mkdir()
    for name in ("Talk.wav", "talk.mp3", "other.wav"):
        (audio / name).write_bytes(b"")
    for name in ("Talk.srt", "other.srt"):
        (subs / name).write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n\n", encoding="utf-8")
    todo, done, problems = _plan(TranscribeOptions(audio_dir=str(audio), save_dir=str(tmp_path / "out")))
    assert sorted(j.audio.name for j in todo) == ["Talk.wav", "other.wav"]
    assert len(problems) == 1 and problems[0].startswith(str(audio / "talk.mp3"))
    pairs, problems, notes = pair_files(audio, subs)
    assert sorted(a.name for a, _ in pairs) == ["Talk.wav", "other.wav"]
    assert len(problems) == 1 and problems[0].startswith(str(audio / "talk.mp3"))
