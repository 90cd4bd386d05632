"""Model loading/saving: the converted real models decode token-identically to CTranslate2
(faster-whisper's engine), and every export loads back to the same weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, offline_model_available, pickle_that_creates, random_bundle
from whisperft import models, saving
from whisperft.audio import load_audio
from whisperft.conversions import LazyTensor
from whisperft.errors import UserError
from whisperft.features import log_mel_spectrogram, window_features
from whisperft.offline import offline_package
from whisperft.tokenizer import load_tokenizer

FP16_EPS = 2e-3  # relative rounding of float16 weights (10-bit mantissa)


def _greedy_ours(bundle, feats: torch.Tensor, prompt: list[int]) -> list[list[int]]:
    with torch.no_grad():
        out = bundle.model.generate(feats, decoder_input_ids=torch.tensor([prompt] * len(feats)),
                                    return_timestamps=True, max_new_tokens=200)
    seqs = out.sequences if hasattr(out, "sequences") else out
    eot = bundle.tokenizer.eos_token_id
    result = []
    for row in seqs.tolist():
        if row[:len(prompt)] == prompt:  # transformers drops the forced prefix itself
            row = row[len(prompt):]
        result.append(row[:row.index(eot)] if eot in row else row)
    return result


def _greedy_ct2(model_dir, feats: torch.Tensor, prompt: list[int]) -> list[list[int]]:
    ctranslate2 = pytest.importorskip("ctranslate2")
    m = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    res = m.generate(ctranslate2.StorageView.from_array(feats.numpy()), [prompt] * len(feats),
                     beam_size=1, max_length=448)
    return [r.sequences_ids[0] for r in res]


def _prompt(bundle) -> list[int]:
    tok = bundle.tokenizer
    ids = [tok.convert_tokens_to_ids("<|startoftranscript|>")]
    if bundle.is_multilingual:
        ids += [tok.convert_tokens_to_ids("<|en|>"), tok.convert_tokens_to_ids("<|transcribe|>")]
    return ids


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_converted_package_decodes_like_faster_whisper(name, speech_clips, tiny_en, tmp_path):
    """Greedy transcripts (with timestamps) of our converted PyTorch model are identical,
    token for token, to CTranslate2 running the package's original files, with faster-whisper's
    own feature extractor feeding both."""
    if name != "tiny.en" and not offline_model_available(name):
        pytest.skip(f"{name} package not installed")
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    bundle = tiny_en if name == "tiny.en" else models.load_model(name)
    folder, files = offline_package(name)
    if len(files) > 1:  # split packages: CTranslate2 needs the whole file in one folder
        import shutil
        tmp = tmp_path
        with open(f"{tmp}/model.bin", "wb") as out:
            for f in files:
                out.write(f.read_bytes())
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json"):
            if (folder / extra).is_file():
                shutil.copy(folder / extra, tmp)
        folder = tmp
    extractor = fw.FeatureExtractor(feature_size=bundle.n_mels)
    feats = []
    for path, _ in speech_clips[:2]:  # two clips keep the larger model's run short
        audio = load_audio(path)
        reference = extractor(audio)  # faster-whisper's log-mel of the same samples
        ours = log_mel_spectrogram(audio, bundle.n_mels).numpy()
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 1e-4
        feats.append(window_features(audio, bundle.n_mels))
    feats = torch.stack(feats)
    prompt = _prompt(bundle)
    ours = _greedy_ours(bundle, feats, prompt)
    theirs = _greedy_ct2(folder, feats, prompt)
    assert ours == theirs
    texts = [bundle.tokenizer.decode(ids, skip_special_tokens=True).lower() for ids in ours]
    assert "lazy dog" in texts[0] and "from the store" in texts[1]  # real speech recognised, not just equal


def test_tiny_en_has_timestamp_tokens_and_generation_config(tiny_en):
    tok, gen = tiny_en.tokenizer, tiny_en.model.generation_config
    assert tok.convert_tokens_to_ids("<|0.00|>") == tok.convert_tokens_to_ids("<|notimestamps|>") + 1
    assert tok.convert_tokens_to_ids("<|30.00|>") == len(tok) - 1 == tiny_en.model.config.vocab_size - 1
    assert gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>")
    assert gen.decoder_start_token_id == tok.convert_tokens_to_ids("<|startoftranscript|>")
    assert not gen.is_multilingual and tiny_en.n_mels == 80
    assert tok.decode([50363, 383, 50413], decode_with_timestamps=True) == "<|0.00|> The<|1.00|>"


@pytest.mark.parametrize("kind,expected", [
    ("english", [262, 3797, 3332, 612]),  # GPT-2 ids, as openai-whisper's gpt2.tiktoken
    ("multilingual", [264, 3857, 3227, 456]),  # openai-whisper's multilingual.tiktoken
])
def test_offline_tokenizers_match_whisper(kind, expected):
    """The packaged tokenizer.json files give Whisper's own ids (one lost a BPE merge)."""
    if kind == "multilingual" and not offline_model_available("base"):
        pytest.skip("base package not installed")
    tok = load_tokenizer(kind)
    assert tok.encode(" the cat sat there", add_special_tokens=False) == expected


def test_converted_model_is_cached(tiny_en, monkeypatch):
    """A second load reads the cached Hugging Face folder instead of converting again."""
    def fail(*a, **k):
        raise AssertionError("converted again")
    monkeypatch.setattr(models, "load_ct2", fail)
    again = models.load_model("tiny.en")
    a, b = tiny_en.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _max_diff(a, b) -> float:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def test_ct2_roundtrip_transcribes_the_same(tiny_en, speech_clips, tmp_path):
    """CT2 package -> PyTorch -> export ct2 -> faster-whisper gives the same transcript."""
    faster_whisper = pytest.importorskip("faster_whisper")

    out = saving.save_ct2(tiny_en, tmp_path / "ct2", "float16")
    assert (out / "preprocessor_config.json").is_file() and (out / "tokenizer.json").is_file()
    texts = []
    for model_dir in (offline_package("tiny.en")[0], out):
        m = faster_whisper.WhisperModel(str(model_dir), device="cpu", compute_type="float32")
        segs, _ = m.transcribe(str(speech_clips[1][0]), beam_size=1, language="en")
        texts.append(" ".join(s.text.strip() for s in segs))
    assert texts[0] == texts[1] and "from the store" in texts[0]
    # and the export loads back into PyTorch with the original (float16) weights
    assert _max_diff(tiny_en, models.load_model(out)) == 0.0


def test_ct2_int8_export_loads_back(tiny_en, tmp_path):
    out = saving.save_ct2(tiny_en, tmp_path / "int8", "int8")
    back = models.load_model(out)
    sa, sb = tiny_en.model.state_dict(), back.model.state_dict()
    w_a, w_b = sa["model.decoder.layers.0.fc1.weight"], sb["model.decoder.layers.0.fc1.weight"]
    # int8 rows: error at most half a quantisation step (row max / 127 / 2)
    step = w_a.abs().amax(dim=1, keepdim=True) / 127
    assert ((w_a - w_b).abs() <= step * 0.51 + 1e-6).all()


def test_openai_roundtrip(tiny_en, speech_clips, tmp_path):
    path = saving.save_openai(tiny_en, tmp_path / "best_model.pt")
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) >= {"dims", "model_state_dict"} and ckpt["dims"]["n_vocab"] == 51864
    back = models.load_model(path)
    assert _max_diff(tiny_en, back) == 0.0  # the weights were float16 to begin with
    assert back.tokenizer.convert_tokens_to_ids("<|0.00|>") == 50363
    whisper = pytest.importorskip("whisper")
    ow = whisper.load_model(str(path), device="cpu")
    ow.set_alignment_heads  # exists: our heads live in the checkpoint's extra key
    audio = load_audio(speech_clips[0][0])
    theirs = whisper.transcribe(ow, audio, language="en", temperature=0.0, fp16=False,
                                condition_on_previous_text=False)["text"].strip()
    feats = window_features(audio, 80)[None]
    ours_ids = _greedy_ours(tiny_en, feats, _prompt(tiny_en))[0]
    ours = tiny_en.tokenizer.decode(ours_ids, skip_special_tokens=True).strip()
    assert theirs.lower().rstrip(".") == ours.lower().rstrip(".")


@pytest.mark.parametrize("n_mels,multilingual", [(80, False), (128, True)])
def test_every_format_roundtrips_weights(n_mels, multilingual, tmp_path):
    """HF folder, openai .pt (fp32 and fp16) and CTranslate2 float32: same weights back,
    mel count kept (128-bin models like large-v3 included)."""
    bundle = random_bundle(n_mels, multilingual)
    hf = models.load_model(saving.save_hf(bundle, tmp_path / "hf"))
    assert _max_diff(bundle, hf) == 0.0
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["feature_size"] == n_mels
    pt32 = models.load_model(saving.save_openai(bundle, tmp_path / "m32.pt", torch.float32))
    assert _max_diff(bundle, pt32) == 0.0
    pt16 = models.load_model(saving.save_openai(bundle, tmp_path / "m16.pt"))
    sa, sb = bundle.model.state_dict(), pt16.model.state_dict()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=FP16_EPS, atol=1e-4), k
    ct2 = models.load_model(saving.save_ct2(bundle, tmp_path / "ct2", "float32"))
    assert _max_diff(bundle, ct2) == 0.0
    for b in (hf, pt32, ct2):
        assert b.n_mels == n_mels and b.is_multilingual == multilingual
        assert b.model.generation_config.no_timestamps_token_id == \
            bundle.model.generation_config.no_timestamps_token_id


def test_streamed_save_writes_what_torch_save_would(tmp_path):
    """atomic_torch_save lays the file out, then writes each tensor into its place: the file loads
    to the same nested structure as the object (strings beside tensors, every dtype and shape)."""
    torch.manual_seed(0)
    obj = {"dims": {"n_mels": 80}, "names": ["a", "b"], "config": "{}",
           "state": {"w": torch.randn(7, 5), "h": torch.randn(3, 4).half(), "b": torch.randn(6).bfloat16(),
                     "step": torch.tensor(3), "t": torch.randn(4, 3).t(), "flag": torch.tensor([True, False])},
           "rng": (3, (1, 2), None), "lazy": LazyTensor((2, 2), torch.float16, lambda: torch.ones(2, 2).half())}
    saving.atomic_torch_save(obj, tmp_path / "x.pt")
    back = torch.load(tmp_path / "x.pt", weights_only=True)
    assert back["dims"] == obj["dims"] and back["names"] == obj["names"] and back["rng"] == obj["rng"]
    for key, tensor in obj["state"].items():
        assert back["state"][key].dtype == tensor.dtype and torch.equal(back["state"][key], tensor), key
    assert torch.equal(back["lazy"], torch.ones(2, 2).half())
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_streamed_save_holds_one_made_tensor_at_a_time(tmp_path):
    """Each LazyTensor is made, written and dropped before the next is made: saving a merged LoRA
    model or a float16 copy never holds a second model."""
    import gc
    import weakref

    alive = []

    def make(i):
        def made():
            gc.collect()
            assert all(ref() is None for ref in alive), f"tensor {len(alive) - 1} still held when {i} is made"
            tensor = torch.full((64, 64), float(i))
            alive.append(weakref.ref(tensor))
            return tensor
        return made

    state = {f"w{i}": LazyTensor((64, 64), torch.float32, make(i)) for i in range(5)}
    saving.atomic_torch_save({"model_state_dict": state}, tmp_path / "x.pt")
    back = torch.load(tmp_path / "x.pt", weights_only=True)["model_state_dict"]
    assert len(alive) == 5 and all(torch.all(back[f"w{i}"] == i) for i in range(5))


def test_lora_checkpoint_is_the_merged_model_and_leaves_the_adapter_alone(tmp_path):
    peft = pytest.importorskip("peft")
    import copy

    bundle = random_bundle()
    model = peft.get_peft_model(copy.deepcopy(bundle.model), peft.LoraConfig(r=4, lora_alpha=8,
                                target_modules=["q_proj", "v_proj", "fc1", "fc2"]))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # adapters start at zero: make them matter
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = copy.copy(bundle)
    lora.model = model
    saved = models.load_model(saving.save_openai(lora, tmp_path / "lora.pt", torch.float32))
    merged = copy.deepcopy(model).merge_and_unload()
    sa, sb = saved.model.state_dict(), merged.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pickle_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"dims": {}, "model_state_dict": pickle_that_creates(marker)}, path)
    with pytest.raises(UserError, match="evil.pt"):
        models.load_model(path)
    assert not marker.exists()


def test_bad_names_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model 'tinyy'") as exc:
        models.load_model("tinyy")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="no such model file"):
        models.load_model(str(tmp_path / "missing.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no Whisper model"):
        models.load_model(tmp_path / "empty")
    bad = tmp_path / "bad" / "model.bin"
    bad.parent.mkdir()
    bad.write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(UserError, match="model.bin"):
        models.load_model(bad.parent)


def test_hub_name_offline_says_what_to_install(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="large-v3"):
        models.load_model("large-v3")


def test_nonexistent_spec_names_map_to_real_models(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(models, "offline_package", lambda name: seen.append(name) or None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError):
        models.load_model("small-v3")
    assert seen == ["small"]
    assert "no Whisper model 'small-v3'; loading 'small'" in capsys.readouterr().err


def test_export_cli(tiny_en, tmp_path):
    out = tmp_path / "exported.pt"
    run = subprocess.run([sys.executable, "-m", "whisperft", "export", "tiny.en", "--format", "openai",
                          "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert out.is_file()
    bad = subprocess.run([sys.executable, "-m", "whisperft", "export", "nope-model", "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "nope-model" in bad.stderr


def test_a_checkpoint_saved_again_replaces_its_conversion_in_the_cache(tmp_path, monkeypatch):
    """The CTranslate2 conversion of a checkpoint re-saved in place (best_model.pt after every
    run) takes the old one's place in the cache; another checkpoint's conversion stays."""
    import os

    monkeypatch.setenv("WHISPERFT_CACHE", str(tmp_path / "cache"))
    ckpt, other = tmp_path / "run" / "best_model.pt", tmp_path / "other" / "best_model.pt"
    for path in (ckpt, other):
        path.parent.mkdir()
        saving.save_openai(random_bundle(), path, torch.float32)
    first, kept = models.ct2_model_dir(str(ckpt)), models.ct2_model_dir(str(other))
    saving.save_openai(random_bundle(seed=1), ckpt, torch.float32)
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    second = models.ct2_model_dir(str(ckpt))
    assert second != first and (second / "model.bin").is_file()
    assert not first.exists()
    assert (kept / "model.bin").is_file()
    assert sorted(p.name for p in (tmp_path / "cache" / "ct2").iterdir()) == sorted([second.name, kept.name])
