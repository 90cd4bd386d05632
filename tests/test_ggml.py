"""whisper.cpp (ggml) export: parsed back with an independent reader, checked against
openai-whisper's own assets when installed, and run through whisper.cpp (pywhispercpp) when
that is installed."""

from __future__ import annotations

import base64
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_bundle
from whisperft import conversions, ggml, saving
from whisperft.errors import UserError
from whisperft.features import mel_filters


@pytest.fixture(scope="module")
def bundles():
    return {80: random_bundle(80), 128: random_bundle(128, multilingual=True)}


def _openai_assets() -> Path | None:
    """openai-whisper's assets folder (mel_filters.npz, *.tiktoken), without importing it."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        return None
    assets = Path(list(spec.submodule_search_locations)[0]) / "assets"
    return assets if (assets / "mel_filters.npz").is_file() else None


@pytest.mark.parametrize("ftype", ["f32", "f16"])
@pytest.mark.parametrize("n_mels", [80, 128])
def test_export_parses_back(bundles, n_mels, ftype, tmp_path):
    bundle = bundles[n_mels]
    path = ggml.save_ggml(bundle, tmp_path / "model.bin", ftype)
    got = ggml.read_ggml(path)

    dims = conversions.openai_dims(bundle.model.config)
    assert got["hparams"] == {**dims, "ftype": {"f32": 0, "f16": 1}[ftype]}
    assert got["hparams"]["n_mels"] == n_mels

    # tensors: every openai-whisper weight, in its order, values as stored
    state = conversions.hf_to_openai_state_dict(bundle.model)
    assert set(got["order"]) == set(state)
    assert got["order"] == ggml.openai_tensor_names(dims["n_audio_layer"], dims["n_text_layer"])
    kept_f32 = {"encoder.conv1.bias", "encoder.conv2.bias",
                "encoder.positional_embedding", "decoder.positional_embedding"}
    for name, ref in state.items():
        ref = ref.float().numpy()
        if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
            ref = ref.reshape(-1, 1)
        arr = got["tensors"][name]
        assert arr.shape == ref.shape, name
        is_f32 = ftype == "f32" or ref.ndim == 1 or name in kept_f32
        assert got["ftypes"][name] == (0 if is_f32 else 1), name
        if is_f32:
            assert arr.dtype == np.float32 and np.array_equal(arr, ref), name
        else:
            assert arr.dtype == np.float16, name
            assert np.array_equal(arr, ref.astype(np.float16)), name  # round-to-nearest
            np.testing.assert_allclose(arr.astype(np.float32), ref, rtol=2 ** -11, atol=2 ** -24)

    # vocabulary: GPT-2 byte-level tokens as raw bytes, special tokens left out
    tok = bundle.tokenizer
    vocab = got["vocab"]
    assert len(vocab) == tok.convert_tokens_to_ids("<|endoftext|>") == (50257 if n_mels == 128 else 50256)
    assert vocab[tok.convert_tokens_to_ids("Ġthe")] == b" the"
    assert vocab[tok.encode(" the", add_special_tokens=False)[0]] == b" the"
    assert vocab[0] == b"!"
    for text in ("Hello world, naïve café: 東京 — ok?", " Ünïcödé ☃ tokens"):
        ids = tok.encode(text, add_special_tokens=False)
        assert b"".join(vocab[i] for i in ids) == text.encode("utf-8")

    # mel filters: openai-whisper's filterbank, = ours to float32 precision
    assert got["mel_filters"].shape == (n_mels, 201)
    assert np.array_equal(got["mel_filters"], ggml.whisper_mel_filters(n_mels))
    np.testing.assert_allclose(got["mel_filters"], mel_filters(n_mels).numpy(), rtol=3e-7, atol=1e-9)


def test_layout_by_hand(bundles, tmp_path):
    """The header and the size of the file, computed here without the reader."""
    bundle = bundles[80]
    path = ggml.save_ggml(bundle, tmp_path / "m.bin", "f16")
    raw = path.read_bytes()
    assert raw[:4] == b"lmgg"  # 0x67676d6c little-endian
    dims = conversions.openai_dims(bundle.model.config)
    header = struct.unpack("<11i", raw[4:48])
    assert header == (dims["n_vocab"], dims["n_audio_ctx"], dims["n_audio_state"], dims["n_audio_head"],
                      dims["n_audio_layer"], dims["n_text_ctx"], dims["n_text_state"],
                      dims["n_text_head"], dims["n_text_layer"], dims["n_mels"], 1)
    assert struct.unpack("<2i", raw[48:56]) == (80, 201)
    pos = 56 + 80 * 201 * 4
    (n_tok,) = struct.unpack("<i", raw[pos:pos + 4])
    vocab = ggml.vocab_bytes(bundle.tokenizer)
    assert n_tok == len(vocab)
    pos += 4 + sum(4 + len(t) for t in vocab)
    # first tensor header: encoder.positional_embedding, 2 dims, f32, dims innermost first
    name = b"encoder.positional_embedding"
    assert struct.unpack("<5i", raw[pos:pos + 20]) == (2, len(name), 0, dims["n_audio_state"], dims["n_audio_ctx"])
    assert raw[pos + 20:pos + 20 + len(name)] == name
    size = pos
    for key, t in conversions.hf_to_openai_state_dict(bundle.model).items():
        f32 = t.ndim == 1 or key.endswith("positional_embedding") or key in ("encoder.conv1.bias", "encoder.conv2.bias")
        ndim = 2 if key in ("encoder.conv1.bias", "encoder.conv2.bias") else t.ndim
        size += 12 + 4 * ndim + len(key.encode()) + t.numel() * (4 if f32 else 2)
    assert len(raw) == size


@pytest.mark.skipif(_openai_assets() is None, reason="openai-whisper not installed")
def test_matches_openai_whisper_assets(bundles):
    """What whisper.cpp's converter reads: mel_filters.npz and the tiktoken vocabularies."""
    assets = _openai_assets()
    with np.load(assets / "mel_filters.npz") as f:
        for n in (80, 128):
            assert np.array_equal(ggml.whisper_mel_filters(n), f[f"mel_{n}"]), n
    for n_mels, name in ((80, "gpt2.tiktoken"), (128, "multilingual.tiktoken")):
        ranks = {}
        for line in (assets / name).read_bytes().splitlines():
            if line:
                token, rank = line.split()
                ranks[int(rank)] = base64.b64decode(token)
        expected = [ranks[i] for i in range(len(ranks))]
        assert ggml.vocab_bytes(bundles[n_mels].tokenizer) == expected, name


def test_mel_filters_match_openai_whisper():
    """The filters written into the file are openai-whisper's own (its assets/mel_filters.npz,
    librosa's slaney filters): whisper.cpp computes its log-mel with them."""
    import whisper

    with np.load(Path(whisper.__file__).parent / "assets" / "mel_filters.npz") as ref:
        for n in (80, 128):
            np.testing.assert_allclose(ggml.whisper_mel_filters(n), ref[f"mel_{n}"], rtol=3e-7, atol=1e-9)


def test_write_is_atomic_and_validated(bundles, tmp_path, monkeypatch):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(UserError, match="f16 or f32"):
        ggml.save_ggml(bundles[80], target, "q4_0")

    def broken(*args, **kwargs):
        yield from ()
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ggml, "ggml_tensors", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ggml.save_ggml(bundles[80], target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    monkeypatch.undo()
    ggml.save_ggml(bundles[80], target, "float16")  # alias of f16
    assert ggml.read_ggml(target)["hparams"]["ftype"] == 1

    with pytest.raises(UserError, match="mel bins"):
        ggml.save_ggml(random_bundle(n_mels=64), tmp_path / "bad.bin")


def test_reader_rejects_damaged_files(bundles, tmp_path):
    path = ggml.save_ggml(bundles[80], tmp_path / "m.bin", "f16")
    raw = path.read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        ggml.read_ggml(tmp_path / "cut.bin")
    (tmp_path / "magic.bin").write_bytes(b"GGUF" + raw[4:])
    with pytest.raises(ValueError, match="magic"):
        ggml.read_ggml(tmp_path / "magic.bin")


def test_lora_model_exports_merged(bundles, tmp_path):
    peft = pytest.importorskip("peft")
    import copy

    bundle = copy.copy(bundles[80])
    model = peft.get_peft_model(copy.deepcopy(bundle.model),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # adapters start at zero: make them matter
    bundle.model = model
    got = ggml.read_ggml(ggml.save_ggml(bundle, tmp_path / "lora.bin", "f32"))
    merged = conversions.hf_to_openai_state_dict(copy.deepcopy(model).merge_and_unload())
    base = conversions.hf_to_openai_state_dict(bundles[80].model)
    q = "decoder.blocks.0.attn.query.weight"
    assert not np.allclose(merged[q].numpy(), base[q].numpy())
    for name, ref in merged.items():
        np.testing.assert_array_equal(got["tensors"][name].reshape(ref.shape), ref.numpy(), err_msg=name)
    assert any("lora" in n for n, _ in model.named_parameters())  # the caller's model is untouched


# --------------------------------------------------------------------------------------------
# whisper.cpp itself (pip install pywhispercpp: prebuilt wheels bundle whisper.cpp)


def _whispercpp():
    return pytest.importorskip("pywhispercpp.model", reason="pywhispercpp (whisper.cpp) not installed")


def _greedy_text(bundle, audio: np.ndarray) -> str:
    """Our model's greedy decode of one 30 s window, no timestamps (as whisper.cpp is run)."""
    from whisperft.audio import pad_or_trim
    from whisperft.features import log_mel_spectrogram

    mel = log_mel_spectrogram(pad_or_trim(audio), bundle.n_mels, padding=0)[None, :, :3000]
    tok = bundle.tokenizer
    prompt = [tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|notimestamps|>")]
    with torch.no_grad():
        out = bundle.model.generate(mel, decoder_input_ids=torch.tensor([prompt]), return_timestamps=False,
                                    do_sample=False, num_beams=1, max_new_tokens=200)
    ids = (out.sequences if hasattr(out, "sequences") else out)[0].tolist()
    return tok.decode(ids, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_whispercpp_transcribes_like_our_model(tiny_en, speech_clips, tmp_path):
    wcpp = _whispercpp()
    import _pywhispercpp as pw

    from whisperft.audio import load_audio

    path = ggml.save_ggml(tiny_en, tmp_path / "ggml-tiny.en.bin", "f16")
    # one thread: whisper.cpp's fp16 sums depend on how the work is split
    model = wcpp.Model(str(path), n_threads=1, redirect_whispercpp_logs_to=None,
                       print_progress=False, language="en", no_timestamps=True, temperature_inc=0.0,
                       suppress_nst=True)
    ctx = model._ctx
    assert ctx is not None
    assert pw.whisper_model_n_vocab(ctx) == tiny_en.model.config.vocab_size
    assert pw.whisper_model_n_mels(ctx) == 80 and pw.whisper_model_ftype(ctx) == 1
    vocab = ggml.vocab_bytes(tiny_en.tokenizer)
    for i in (0, 262, 1000, 50255):
        assert pw.whisper_token_to_bytes(ctx, i) == vocab[i]
    tok = tiny_en.tokenizer
    assert pw.whisper_token_eot(ctx) == tok.convert_tokens_to_ids("<|endoftext|>")
    assert pw.whisper_token_sot(ctx) == tok.convert_tokens_to_ids("<|startoftranscript|>")
    assert pw.whisper_token_beg(ctx) == tok.convert_tokens_to_ids("<|0.00|>")

    # Not clip 0: there our model's top two tokens are 0.03 nats apart at one step, a tie that
    # whisper.cpp's fp16 arithmetic breaks either way depending on its thread count.
    for wav, _ in speech_clips[1:]:
        audio = load_audio(wav)
        cpp = " ".join(s.text.strip() for s in model.transcribe(audio)).strip()
        assert cpp and cpp == _greedy_text(tiny_en, audio), wav.name


def test_whispercpp_loads_every_variant(bundles, tmp_path):
    """whisper.cpp accepts f32/f16 files with 80 and 128 mel bins (loading only: its CPU
    backend cannot run f32 convolutions, whisper.cpp issue #2557)."""
    _whispercpp()
    import _pywhispercpp as pw

    for n_mels, bundle in bundles.items():
        for ftype, code in (("f32", 0), ("f16", 1)):
            path = ggml.save_ggml(bundle, tmp_path / f"m{n_mels}{ftype}.bin", ftype)
            ctx = pw.whisper_init_from_file_with_params(str(path), pw.whisper_context_default_params())
            assert ctx is not None, path.name
            try:
                assert pw.whisper_model_n_mels(ctx) == n_mels
                assert pw.whisper_model_ftype(ctx) == code
                assert pw.whisper_model_n_vocab(ctx) == bundle.model.config.vocab_size
                assert pw.whisper_is_multilingual(ctx) == (n_mels == 128)
            finally:
                pw.whisper_free(ctx)


def test_f16_overflow_is_refused_and_file_is_readable(bundles, tmp_path):
    import copy

    bundle = copy.copy(bundles[80])
    bundle.model = copy.deepcopy(bundle.model)
    with torch.no_grad():
        bundle.model.model.decoder.layers[0].fc1.weight[0, 0] = 1e6
    with pytest.raises(UserError, match="float16"):
        ggml.save_ggml(bundle, tmp_path / "big.bin", "f16")
    assert not list(tmp_path.iterdir())
    path = ggml.save_ggml(bundle, tmp_path / "big.bin", "f32")
    assert ggml.read_ggml(path)["tensors"]["decoder.blocks.0.mlp.0.weight"][0, 0] == 1e6
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("quantization", ["f32", "float16"])
def test_an_f32_export_says_whisper_cpp_cpu_cannot_run_it(quantization, tmp_path, capsys):
    """whisper.cpp's CPU convolution takes f16 weights only: an f32 file is written (it is
    exact) with one line saying so; the default f16 gets no such line."""
    from whisperft.exporting import ExportOptions, export

    source = tmp_path / "model.pt"
    saving.save_openai(random_bundle(), source, torch.float32)
    assert export(ExportOptions(model=str(source), format="ggml", out=str(tmp_path / "m.bin"),
                                quantization=quantization)) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "m.bin").is_file()
    assert ("whisper.cpp issue #2557" in err) == (quantization == "f32")
