"""A cut audio context (audio_ctx.py): the cut encoder's invariant, the arithmetic, training with
--dynamic-audio-ctx (the mark it leaves, stop and resume) and transcribing with --audio-ctx on
both backends of the real tiny.en."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_bundle
from test_reliability import same_weights, weights
from whisperft import TrainConfig, TranscribeOptions, load_model
from whisperft import audio_ctx
from whisperft import fine_tune as train
from whisperft.errors import UserError
from whisperft.manifest import Record, write_manifest
from whisperft.saving import save_ct2, save_openai


def test_the_cut_encoder_equals_the_full_one_with_attention_kept_to_the_same_positions():
    """Masking every key past position n in the full encoder changes nothing at positions < n
    only if the cut encoder's stem sees the same frames: both are computed and compared."""
    bundle = random_bundle(layers=2, d_model=64)
    encoder = bundle.model.model.encoder.eval()
    features = torch.randn(2, 80, 3000)
    n = 137
    with torch.no_grad():
        cut = audio_ctx.encode(encoder, features, n)
        x = torch.nn.functional.gelu(encoder.conv1(features))
        x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1) + encoder.embed_positions.weight
        mask = torch.zeros(1, 1, 1500, 1500)
        mask[..., n:] = float("-inf")
        for layer in encoder.layers:
            x = layer(x, mask)
        full = encoder.layer_norm(x)
        whole = audio_ctx.encode(encoder, features, audio_ctx.FULL_POSITIONS)
    assert cut.shape == (2, n, 64)
    torch.testing.assert_close(cut, full[:, :n], atol=1e-5, rtol=1e-5)
    # without the mask the later positions leak in: the invariant is not vacuous
    assert not torch.allclose(whole[:, :n], cut, atol=1e-3)
    torch.testing.assert_close(whole, encoder(features).last_hidden_state)


def test_positions_for_audio_and_the_flag():
    assert audio_ctx.positions_for(4.0) == 250  # 4 s + 1 s margin, 50 positions a second
    assert audio_ctx.positions_for(0.3) == audio_ctx.MIN_POSITIONS
    assert audio_ctx.positions_for(29.5) == audio_ctx.FULL_POSITIONS
    assert audio_ctx.positions_to_use(None, 400) == 1500
    assert audio_ctx.positions_to_use("auto", 400) == 250  # 400 frames = 4 s
    assert audio_ctx.positions_to_use(300, 400) == 300
    assert audio_ctx.positions_to_use(150, 400) == 1500  # 4 s do not fit in 150 positions: all kept
    assert audio_ctx.batch_positions([2.0, 6.0], None) == 350
    assert audio_ctx.batch_positions([2.0, 6.0], [0.0, 0.5]) == 400  # 6 s + 0.5 x 4 s
    with pytest.raises(UserError, match="--audio-ctx 0"):
        audio_ctx.parse_audio_ctx("0")
    with pytest.raises(UserError, match="trained for a cut context"):
        audio_ctx.resolve("auto", marked=False, force=False, source="tiny.en")
    assert audio_ctx.resolve(None, marked=True, force=False, source="x") == "auto"
    assert audio_ctx.resolve(None, marked=False, force=False, source="x") is None
    assert audio_ctx.resolve("full", marked=True, force=False, source="x") is None


def _short_windows(root, n=6):
    """Windows of 2-7 s of random log-mel (zeros past the audio, as prepare writes them)."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        seconds = 2.0 + i
        feats = np.zeros((80, 3000), np.float16)
        feats[:, : int(seconds * 100)] = rng.standard_normal((80, int(seconds * 100))) * 0.3
        fp = root / f"short{i}.npy"
        np.save(fp, feats)
        records.append(Record(audio_path=str(fp), text=f"<|0.00|> hello there number {i}<|{seconds - 0.5:.2f}|>",
                              duration=seconds, features_path=str(fp), n_mels=80))
    write_manifest(root / "short.json", records)
    return root / "short.json"


def test_dynamic_context_training_marks_the_model_and_resumes_exactly(tmp_path):
    base = tmp_path / "random.pt"
    save_openai(random_bundle(), base, torch.float32)
    flags = dict(train_json=str(_short_windows(tmp_path)), model=str(base), batch_size=2, train_steps=4,
                 eval_steps=2, log_steps=1, warmup_steps=1, lr=1e-3, device="cpu", dynamic_audio_ctx=True,
                 distill_weight=0.5)
    train(TrainConfig(save_dir=str(tmp_path / "whole"), **flags))
    train(TrainConfig(save_dir=str(tmp_path / "parts"), **flags), stop_after_steps=1)
    train(TrainConfig(save_dir=str(tmp_path / "parts"), resume=str(tmp_path / "parts" / "last_model.pt"), **flags))
    assert same_weights(weights(tmp_path / "whole" / "last_model.pt"), weights(tmp_path / "parts" / "last_model.pt"))
    assert not same_weights(weights(tmp_path / "whole" / "last_model.pt"), weights(base))
    # the mark travels with the model: openai .pt, and a CTranslate2 folder made from it
    tuned = load_model(tmp_path / "whole" / "best_model.pt")
    assert audio_ctx.is_marked(tuned.model.generation_config)
    assert not audio_ctx.is_marked(load_model(base).model.generation_config)
    pytest.importorskip("ctranslate2")
    save_ct2(tuned, tmp_path / "ct2", "float32")
    assert json.loads((tmp_path / "ct2" / "config.json").read_text())[audio_ctx.CONFIG_MARK] == "auto"
    assert audio_ctx.is_marked(load_model(tmp_path / "ct2").model.generation_config)


def test_dynamic_context_refuses_a_frozen_encoder(tmp_path):
    with pytest.raises(UserError, match="--dynamic-audio-ctx"):
        train(TrainConfig(train_json=str(_short_windows(tmp_path)), dynamic_audio_ctx=True,
                          train_only_decoder=True, save_dir=str(tmp_path / "out")))


@pytest.mark.parametrize("backend", ["torch", "ct2"])
def test_transcribing_with_a_cut_context_on_the_real_model(backend, tiny_en, speech_clips, tmp_path, monkeypatch):
    """tiny.en marked as trained for a cut context: `auto` is its default and each backend's
    encoder gets only the positions the clip needs; the unmarked model refuses --audio-ctx."""
    from whisperft.audio import SAMPLE_RATE, load_audio
    from whisperft.transcribe import load_transcriber

    if backend == "ct2":
        pytest.importorskip("faster_whisper")
    path, text = speech_clips[0]
    plain = tmp_path / "plain.pt"
    save_openai(tiny_en, plain, torch.float32)
    with pytest.raises(UserError, match="--force"):
        load_transcriber(TranscribeOptions(model=str(plain), backend=backend, audio_ctx="auto"))
    marked = load_model(plain)
    audio_ctx.mark(marked.model.generation_config)
    save_openai(marked, tmp_path / "marked.pt", torch.float32)

    seen = []
    if backend == "torch":
        real = audio_ctx.encode

        def spy(encoder, features, n):
            seen.append(n)
            return real(encoder, features, n)
        monkeypatch.setattr(audio_ctx, "encode", spy)
    runner = load_transcriber(TranscribeOptions(model=str(tmp_path / "marked.pt"), backend=backend,
                                                beam_size=1, batch_size=1))
    if backend == "ct2":
        real_encode = runner.model.__class__.__mro__[1].encode

        def spy_ct2(self, features):
            seen.append(features.shape[-1] // 2)
            return real_encode(self, features)
        monkeypatch.setattr(runner.model.__class__.__mro__[1], "encode", spy_ct2)
    audio = load_audio(path)
    ((_, result),) = list(runner.run([(0, audio)]))
    seconds = len(audio) / SAMPLE_RATE
    # the audio plus a 1 s margin (to the 10 ms frame the log-mel ends on)
    assert seen and all(abs(n - audio_ctx.positions_for(seconds)) <= 1 for n in seen), (seen, seconds)
    assert result.segments and all(0 <= s.start <= s.end <= seconds + 0.01 for s in result.segments)
