"""Weight interpolation (WiSE-FT): α = 0 is the original and α = 1 the fine-tune, transcript for
transcript on the real tiny.en; the written checkpoint exports to CTranslate2 and whisper.cpp
unchanged; the sweep's recommendation rule on numbers, the sweep end to end on a tiny set, and
the general set that ships."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from conftest import load_demo_data_module, random_bundle, require_tool, speak, SENTENCES
from whisperft import InterpolateOptions, UserError, interpolate, interpolate_models, load_model, recommend_alpha
from whisperft import interpolation
from whisperft.audio import load_audio
from whisperft.conversions import hf_to_openai_state_dict
from whisperft.exporting import ExportOptions, export
from whisperft.ggml import read_ggml
from whisperft.interpolation import SweepPoint, parse_alphas
from whisperft.saving import save_openai
from whisperft.transcribe import transcribe_file
from whisperft.transcription import TranscribeOptions

GREEDY = TranscribeOptions(beam_size=1, language="en")
NOISE = 0.1  # decoder weights moved by 10% of their spread: transcripts change, still English


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("interp-speech")
    return [speak(text, root / f"clip{i}.wav") for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def tuned(tiny_en, tmp_path_factory):
    """A stand-in fine-tune of tiny.en, saved as training saves best_model.pt (float16)."""
    bundle = copy.deepcopy(tiny_en)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if ".decoder.layers." in name and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * NOISE)
    path = save_openai(bundle, tmp_path_factory.mktemp("tuned") / "best_model.pt")
    return path, load_model(path)


def _transcripts(bundle, clips) -> list[list[tuple[float, float, str]]]:
    return [[(s.start, s.end, s.text) for s in transcribe_file(bundle, c, GREEDY)] for c in clips]


def _write_wav(path, audio: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes())


def _max_diff(a, b) -> float:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


# --------------------------------------------------------------------------------------------
# The promises, on the real tiny.en


@pytest.mark.slow
def test_alpha_0_is_the_original_and_alpha_1_the_fine_tune(tiny_en, tuned, clips, tmp_path):
    tuned_path, tuned_bundle = tuned
    original, fine = _transcripts(tiny_en, clips), _transcripts(tuned_bundle, clips)
    assert original != fine  # else the test could not tell the two ends apart
    for alpha, expected, reference in ((0.0, original, tiny_en), (1.0, fine, tuned_bundle)):
        out = interpolate_models("tiny.en", str(tuned_path), alpha, tmp_path / f"a{alpha}.pt")
        got = load_model(out)
        assert _max_diff(got, reference) == 0.0, alpha  # bit for bit
        assert _transcripts(got, clips) == expected, alpha
    # the fine-tune's tokenizer and generation config travel with the weights
    ckpt = torch.load(tmp_path / "a1.0.pt", weights_only=True)
    assert ckpt["whisperft"]["tokenizer_json"] and ckpt["dims"]["n_vocab"] == 51864


@pytest.mark.slow
def test_interpolated_checkpoint_exports_and_transcribes_identically(tiny_en, tuned, clips, tmp_path):
    """α = 0.5 through the CLI; its CTranslate2 export loads back into our transcriber with the
    same weights and transcripts, faster-whisper reads the same text, and the whisper.cpp file
    holds the checkpoint's weights exactly."""
    from whisperft.cli import main

    tuned_path, _ = tuned
    pt = tmp_path / "half.pt"
    assert main(["interpolate", "--base", "tiny.en", "--model", str(tuned_path), "--alpha", "0.5",
                 "--out", str(pt)]) == 0
    half = load_model(pt)
    sd, s0, s1 = (b.model.state_dict() for b in (half, tiny_en, tuned[1]))
    w = "model.decoder.layers.0.fc1.weight"
    assert torch.allclose(sd[w], (s0[w] + s1[w]) / 2, atol=1e-3) and not torch.equal(sd[w], s0[w])
    expected = _transcripts(half, clips)

    export(ExportOptions(model=str(pt), format="ct2", out=str(tmp_path / "ct2"), quantization="float16"))
    from_ct2 = load_model(tmp_path / "ct2")
    assert _max_diff(from_ct2, half) == 0.0
    assert _transcripts(from_ct2, clips) == expected
    pytest.importorskip("faster_whisper")
    from whisperft.transcribe import load_transcriber

    ct2 = load_transcriber(TranscribeOptions(model=str(tmp_path / "ct2"), backend="ct2", beam_size=1,
                                             language="en", compute_type="float32"))
    texts = [" ".join(s.text.strip() for s in t.segments)
             for _, t in ct2.run((i, load_audio(c)) for i, c in enumerate(clips))]
    assert texts == [" ".join(text.strip() for _, _, text in t) for t in expected]

    export(ExportOptions(model=str(pt), format="ggml", out=str(tmp_path / "ggml.bin"), quantization="float16"))
    got = read_ggml(tmp_path / "ggml.bin")["tensors"]
    for name, ref in hf_to_openai_state_dict(half.model).items():
        np.testing.assert_array_equal(got[name].reshape(ref.shape).astype(np.float32),
                                      ref.float().numpy(), err_msg=name)


# --------------------------------------------------------------------------------------------
# Invariants on random models; bad input


def test_weights_are_the_weighted_mean_and_tied_ones_stay_tied(tmp_path):
    a, b = random_bundle(seed=0), random_bundle(seed=1)
    pa, pb = (save_openai(x, tmp_path / f"{n}.pt", torch.float32) for x, n in ((a, "a"), (b, "b")))
    out = load_model(interpolate_models(str(pa), str(pb), 0.25, tmp_path / "m.pt", dtype="float32"))
    sa, sb, sm = a.model.state_dict(), b.model.state_dict(), out.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sm[k], 0.75 * sa[k] + 0.25 * sb[k], rtol=1e-6, atol=1e-6, msg=k)
    assert torch.equal(sm["proj_out.weight"], sm["model.decoder.embed_tokens.weight"])


def test_different_architectures_fail_in_one_line_before_loading(tmp_path, monkeypatch):
    from whisperft import models

    small, deep = random_bundle(layers=2), random_bundle(layers=3)
    multi = random_bundle(multilingual=True)
    paths = {n: save_openai(x, tmp_path / f"{n}.pt") for n, x in (("small", small), ("deep", deep), ("multi", multi))}
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded a model before checking"))
    for other, what in (("deep", "n_audio_layer 3 vs 2"), ("multi", "n_vocab 51865 vs 51864")):
        with pytest.raises(UserError) as err:
            interpolate_models(str(paths["small"]), str(paths[other]), 0.5, tmp_path / "x.pt")
        assert "\n" not in str(err.value) and what in str(err.value) and str(paths[other]) in str(err.value)
    assert not (tmp_path / "x.pt").exists()


def test_bad_flags_are_refused(tmp_path):
    base = dict(base="tiny.en", model="tiny.en", out=str(tmp_path / "x.pt"))
    for extra, words in (({}, "needs --alpha"), ({"alpha": 1.5}, "between 0"),
                         ({"alpha": 0.5, "sweep": True}, "give one or the other"),
                         ({"sweep": True}, "--domain-audio"),
                         ({"sweep": True, "domain_audio": str(tmp_path / "none")}, "no such folder"),
                         ({"sweep": True, "domain_audio": str(tmp_path), "alphas": "0,x"}, "comma-separated")):
        with pytest.raises(UserError, match=words):
            interpolate(InterpolateOptions(**base, **extra))


# --------------------------------------------------------------------------------------------
# The recommendation rule


def _points(*rows) -> list[SweepPoint]:
    return [SweepPoint(*r) for r in rows]


def test_recommendation_keeps_the_gain_with_the_least_general_loss():
    # domain gain 25.0 -> 0.4: 90% of it needs domain WER <= 2.86%
    pts = _points((0, .250, .056), (.25, .100, .055), (.5, .0287, .057), (.75, .010, .060), (1, .004, .068))
    best = recommend_alpha(pts)
    assert best["alpha"] == .75 and best["general_wer"] == .060
    assert best["kept_gain"] == pytest.approx(.240 / .246) and best["general_change"] == pytest.approx(.004)
    # a looser rule reaches the point that keeps 90.0-% (0.5) and the one that keeps 60% (0.25)
    assert recommend_alpha(pts, keep_gain=.89)["alpha"] == .5
    assert recommend_alpha(pts, keep_gain=.6)["alpha"] == .25
    # exactly the share counts; ties in general WER go to the lower domain WER, then the lower alpha
    assert recommend_alpha(_points((0, .2, .05), (.5, .02, .05), (1, .0, .06)))["alpha"] == .5
    assert recommend_alpha(_points((0, .2, .05), (.5, .01, .06), (.75, .0, .06), (1, .0, .06)))["alpha"] == .75
    # a fine-tune that did not help the domain: keep the original
    none = recommend_alpha(_points((0, .1, .05), (.5, .1, .04), (1, .12, .03)))
    assert none["alpha"] == 0 and none["kept_gain"] is None
    with pytest.raises(ValueError):
        recommend_alpha(_points((0, .1, .05), (.5, .1, .04)))


def test_alphas_parse_with_both_ends():
    assert parse_alphas("0.5, 0.25") == [0.0, 0.25, 0.5, 1.0]
    assert parse_alphas("1,0,1") == [0.0, 1.0]
    with pytest.raises(UserError, match="not between"):
        parse_alphas("0.5,2")


# --------------------------------------------------------------------------------------------
# The sweep end to end; the general set


@pytest.mark.slow
def test_sweep_end_to_end(tiny_en, tuned, clips, tmp_path):
    from whisperft.metrics import score

    tuned_path, _ = tuned
    domain, general = tmp_path / "domain", tmp_path / "general"
    for folder, picks in ((domain, (1, 3)), (general, (2,))):
        folder.mkdir()
        for i in picks:
            (folder / clips[i].name).write_bytes(clips[i].read_bytes())
            (folder / f"{clips[i].stem}.txt").write_text(SENTENCES[i] + "\n")
    # a recording of two windows sorted first: the short ones finish before it, and each
    # transcript must still be scored against its own reference
    pause = np.zeros(5 * 16000, np.float32)
    _write_wav(domain / "a_long.wav", np.concatenate([x for c in clips for x in (load_audio(c), pause)]))
    (domain / "a_long.txt").write_text(" ".join(SENTENCES) + "\n")
    out = tmp_path / "sweep"
    assert interpolate(InterpolateOptions(base="tiny.en", model=str(tuned_path), out=str(out), sweep=True,
                                          alphas="0.5", domain_audio=str(domain),
                                          general_audio=str(general))) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    points = [SweepPoint(**p) for p in sweep["points"]]
    assert [p.alpha for p in points] == [0.0, 0.5, 1.0]
    # alpha 0 scores exactly what the original model transcribes
    torch.manual_seed(0)  # as the sweep seeds the fallback's sampling
    pairs = [(p.stem, (p.with_suffix(".txt")).read_text(),
              " ".join(s.text.strip() for s in transcribe_file(tiny_en, p, GREEDY)))
             for p in sorted(domain.glob("*.wav"))]
    assert points[0].domain_wer == pytest.approx(score(pairs, "WER", language="en").weighted_average())
    assert points[0].domain_wer != points[-1].domain_wer
    best = sweep["recommended"]
    assert best == json.loads(json.dumps(recommend_alpha(points)))
    model = load_model(out / "model.pt")
    reference = load_model(interpolate_models("tiny.en", str(tuned_path), best["alpha"], tmp_path / "b.pt"))
    assert _max_diff(model, reference) == 0.0
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "Weight interpolation" in page and "★ recommended" in page and "data:image/png;base64," in page


def test_general_set_ships_own_sentences_and_voices(tmp_path):
    require_tool("espeak-ng")
    from whisperft import make_general_set
    from whisperft.general_set import GENERAL_SETS
    from whisperft.subtitles import read_subtitles

    english = GENERAL_SETS["en"]
    folder = make_general_set(tmp_path / "g")
    wavs, srts = sorted(folder.glob("*.wav")), sorted(folder.glob("*.srt"))
    assert len(wavs) == len(srts) == len(english.voices)
    ours = {s for group in english.sentences for s in group}
    assert {c.text for p in srts for c in read_subtitles(p)} == ours
    demo = load_demo_data_module()
    theirs = {*demo.TRAIN_SENTENCES, *demo.DEV_SENTENCES, *demo.TEST_SENTENCES, *demo.EVERYDAY_SENTENCES,
              *SENTENCES}
    assert not ours & theirs
    assert not {v for v, _, _ in english.voices.values()} & {v.espeak_voice for v in demo.VOICES.values()}
    again = make_general_set(tmp_path / "again")
    assert all((again / w.name).read_bytes() == w.read_bytes() for w in wavs)  # deterministic


def test_spanish_general_set_is_generated_by_spanish_voices(tmp_path):
    require_tool("espeak-ng")
    from whisperft import make_general_set
    from whisperft.general_set import GENERAL_SETS
    from whisperft.subtitles import read_subtitles

    spanish = GENERAL_SETS["es"]
    assert len(spanish.voices) == len(spanish.sentences) >= 3
    assert all(voice.split("+")[0].split("-")[0] == "es" for voice, _, _ in spanish.voices.values())
    folder = make_general_set(tmp_path / "es", "Spanish")  # a name works as the code does
    srts = sorted(folder.glob("*.srt"))
    assert len(srts) == len(sorted(folder.glob("*.wav"))) == len(spanish.voices)
    assert {c.text for p in srts for c in read_subtitles(p)} == {s for group in spanish.sentences for s in group}
    english = {s for group in GENERAL_SETS["en"].sentences for s in group}
    assert not english & {s for group in spanish.sentences for s in group}
    with pytest.raises(UserError, match="--general-language fr: no generated general set"):
        make_general_set(tmp_path / "fr", "fr")


def test_another_language_with_an_english_only_model_is_refused_before_generating(tmp_path, clips):
    domain = tmp_path / "domain"
    domain.mkdir()
    (domain / clips[0].name).write_bytes(clips[0].read_bytes())
    (domain / f"{clips[0].stem}.txt").write_text(SENTENCES[0] + "\n")
    out = tmp_path / "sweep"
    english_only = save_openai(random_bundle(), tmp_path / "english.pt")  # its vocabulary tells
    with pytest.raises(UserError) as err:
        interpolate(InterpolateOptions(base=str(english_only), model=str(english_only), out=str(out), sweep=True,
                                       domain_audio=str(domain), general_language="es"))
    assert "\n" not in str(err.value) and "English-only" in str(err.value)
    assert not (out / "general_set_es").exists()


@pytest.mark.slow
def test_the_multilingual_base_model_transcribes_the_spanish_set(tmp_path):
    """The Spanish set is speech a multilingual Whisper understands: base, greedy, well under
    the error rate of a model that did not understand it."""
    require_tool("espeak-ng")
    from whisperft import make_general_set
    from whisperft.metrics import score
    from whisperft.subtitles import read_text

    try:
        base = load_model("base")
    except UserError as exc:
        pytest.skip(f"the multilingual base is not installed: {exc}")
    folder = make_general_set(tmp_path / "es", "es")
    clip = sorted(folder.glob("*.wav"))[0]
    text = " ".join(s.text.strip() for s in transcribe_file(base, clip, TranscribeOptions(beam_size=1, language="es")))
    wer = score([(clip.stem, read_text(clip.with_suffix(".srt")), text)], "WER", language="es").weighted_average()
    assert wer < 0.35, (wer, text)
