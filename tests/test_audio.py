"""load_audio decodes every common container to 16 kHz mono float32 with PyAV alone."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import REPO
from whisperft.audio import SAMPLE_RATE, AudioError, load_audio, save_wav

TONE_HZ = 440.0
DURATION = 2.0  # seconds


def _encode(path, codec: str, rate: int = 44100, layout: str = "stereo", video: bool = False):
    """Write a 440 Hz tone (stereo, 44.1 kHz) with PyAV; optionally with a video track."""
    t = np.arange(int(DURATION * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    with av.open(str(path), "w") as out:
        if video:
            v = out.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream(codec, rate=rate)
        a.layout = layout
        fmt = a.codec_context.codec.audio_formats[0].name
        channels = 2 if layout == "stereo" else 1
        kind = fmt.rstrip("p")
        dtype, scale = {"s16": (np.int16, 32767), "s32": (np.int32, 2**31 - 1),
                        "flt": (np.float32, 1.0), "dbl": (np.float64, 1.0)}[kind]
        samples = (np.repeat(tone[None], channels, axis=0) * scale).astype(dtype)
        frame_size = 960 if codec == "libopus" else 1024
        pts = 0
        for i in range(0, samples.shape[1], frame_size):
            chunk = np.ascontiguousarray(samples[:, i:i + frame_size])
            # planar formats take (channels, n); packed ones interleave into (1, n * channels)
            data = chunk if fmt.endswith("p") else chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            pts += chunk.shape[1]
            for packet in a.encode(frame):
                out.mux(packet)
        if video:
            for i in range(int(DURATION * 10)):
                img = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                for packet in v.encode(img):
                    out.mux(packet)
            for packet in v.encode():
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)


def _dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


@pytest.mark.parametrize("name,codec,video", [
    ("a.wav", "pcm_s16le", False), ("a.flac", "flac", False), ("a.mp3", "libmp3lame", False),
    ("a.ogg", "libopus", False), ("a.opus", "libopus", False), ("a.m4a", "aac", False),
    ("a.mkv", "libopus", True), ("a.mp4", "aac", True),
])
def test_decodes_common_formats_to_16k_mono(tmp_path, name, codec, video):
    path = tmp_path / name
    rate = 48000 if codec == "libopus" else 44100  # opus encodes 48 kHz only
    try:
        _encode(path, codec, rate=rate, video=video)
    except (av.FFmpegError, ValueError) as exc:  # an encoder missing from this PyAV build
        pytest.skip(f"cannot encode {codec} here: {exc}")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - DURATION) < 0.1  # codec priming may add a few ms
    assert abs(_dominant_hz(audio) - TONE_HZ) < 2.0
    assert 0.3 < np.abs(audio).max() <= 1.0  # stereo was averaged, not summed past 1


def test_wav_roundtrip_and_resampling(tmp_path):
    t = np.arange(8000) / 8000
    tone = (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    save_wav(tmp_path / "lo.wav", tone, sample_rate=8000)
    audio = load_audio(tmp_path / "lo.wav")
    assert abs(len(audio) - SAMPLE_RATE) < 50
    assert abs(_dominant_hz(audio) - 440) < 2.0


@pytest.mark.parametrize("content,message", [
    (None, "no such audio file"), (b"", "file is empty"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt garbage", "cannot decode audio"),
    (b"this is just text, not audio\n" * 20, "cannot decode audio"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert message in str(exc.value) and str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_truncated_file_is_an_error_or_shorter_audio(tmp_path):
    path = tmp_path / "a.flac"
    _encode(path, "flac")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        audio = load_audio(path)
    except AudioError as exc:
        assert str(path) in str(exc)
    else:
        assert len(audio) < DURATION * SAMPLE_RATE


def test_cli_help_of_every_entry_point():
    for argv in (["-m", "whisperft", "--help"], ["create_data.py", "--help"],
                 ["run_finetuning.py", "--help"], ["transcribe.py", "--help"],
                 ["calculate_metric.py", "--help"], ["-m", "whisperft", "export", "--help"]):
        run = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0, (argv, run.stderr)
        assert "usage:" in run.stdout
