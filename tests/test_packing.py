"""Packing short clips into 30 s windows (`create_data.py --data-file list.tsv --pack`):
hand-computed packs, the written audio checked sample by sample against the clips, invariants
under hypothesis, and a packed manifest that trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import whisperft.prepare as prepare_module
from conftest import random_bundle
from whisperft import saving
from whisperft.audio import N_SAMPLES, SAMPLE_RATE, load_audio, save_wav
from whisperft.cli import main as cli_main
from whisperft.errors import UserError
from whisperft.manifest import read_manifest
from whisperft.packing import (PACK_GAP_MS, SAMPLES_PER_MS, TIMESTAMP_TOKENS_PER_CLIP, Clip, Packer,
                               pack_clips, timestamp)
from whisperft.prepare import PrepareOptions, prepare
from whisperft.windows import CHUNK_LENGTH_MS

TIMESTAMP = re.compile(r"<\|(\d+\.\d\d)\|>")
PCM_STEP = 1 / 32767  # one step of the 16-bit WAV the packs are written as


@pytest.fixture(autouse=True)
def word_count_tokens(monkeypatch):
    """Count words instead of loading the Whisper tokenizer (the training test uses the real one)."""
    monkeypatch.setattr(prepare_module, "make_token_counter", lambda kind: lambda text: len(text.split()))


def noise_clip(seconds: float, seed: int) -> np.ndarray:
    """A clip with no zero sample anywhere (so silence in a pack can only be the packer's)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    return (rng.choice([-1, 1], n) * rng.uniform(0.05, 0.5, n)).astype(np.float32)


def write_clips(folder: Path, spec: list[tuple[str, float, str, str]], csv: bool = False) -> Path:
    """Clips (name, seconds, text, language) as WAVs, and a list.tsv (or metadata.csv) of them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, seconds, _, _) in enumerate(spec):
        save_wav(folder / f"{name}.wav", noise_clip(seconds, i))
    if csv:
        lines = ["file_name,transcription,language"] + [f"{n}.wav,{t},{lang}" for n, _, t, lang in spec]
        path = folder / "metadata.csv"
    else:
        lines = [f"{n}.wav\t{t}" for n, _, t, _ in spec]
        path = folder / "list.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def options(tmp_path: Path, data_file: Path, **overrides) -> PrepareOptions:
    base = dict(data_file=str(data_file), without_timestamps=True, pack=True, output=str(tmp_path / "train.json"),
                dump_dir=str(tmp_path / "dump"))
    return PrepareOptions(**{**base, **overrides})


def clip(key, seconds: float, language: str = "en", n_tokens: int = 2) -> Clip:
    return Clip(key, int(round(seconds * SAMPLE_RATE)), f" clip {key}", language, n_tokens)


# --------------------------------------------------------------------------------------------
# The packer on its own


def test_packs_hand_computed():
    packs = pack_clips([clip("a", 3.0), clip("b", 4.123), clip("c", 7.5), clip("d", 8.0), clip("e", 6.0),
                        clip("f", 5.55)])
    # b starts 0.5 s after a's end (3.00); it ends at 7.623 s -> the next 20 ms grid point, 7.64.
    # e would end at 24.14 + 0.5 + 6.0 = 30.64 s > 30 s: it opens the second pack.
    assert [(p.text, p.duration_ms) for p in packs] == [
        ("<|0.00|> clip a<|3.00|><|3.50|> clip b<|7.64|><|8.14|> clip c<|15.64|><|16.14|> clip d<|24.14|>", 24_140),
        ("<|0.00|> clip e<|6.00|><|6.50|> clip f<|12.06|>", 12_060),
    ]
    assert PACK_GAP_MS == 500


def test_coarser_resolution_puts_starts_and_ends_on_its_grid():
    [pack] = pack_clips([clip("a", 1.01), clip("b", 1.0)], resolution_ms=100)
    assert pack.text == "<|0.00|> clip a<|1.10|><|1.60|> clip b<|2.60|>"


def test_token_limit_closes_a_pack():
    # each clip: 2 text tokens + 2 timestamps = 4; a limit of 9 holds two clips
    packs = pack_clips([clip(i, 1.0) for i in range(5)], max_tokens_length=9)
    assert [[p.clip.key for p in pack.placements] for pack in packs] == [[0, 1], [2, 3], [4]]
    assert all(pack.n_tokens <= 9 for pack in packs)


def test_a_clip_of_exactly_30_s_fills_a_pack_and_a_longer_one_is_refused():
    packs = pack_clips([clip("a", 30.0), clip("b", 1.0)])
    assert [p.text for p in packs] == ["<|0.00|> clip a<|30.00|>", "<|0.00|> clip b<|1.00|>"]
    packer = Packer()
    assert not packer.fits_alone(Clip("x", N_SAMPLES + 1, " x", "en", 1))
    with pytest.raises(ValueError, match="cannot be packed"):
        packer.add(Clip("x", N_SAMPLES + 1, " x", "en", 1))


def test_languages_are_packed_apart_each_in_list_order():
    clips = [clip(0, 2, "en"), clip(1, 2, "es"), clip(2, 2, "en"), clip(3, 2, "es"), clip(4, 2, "fr")]
    packs = pack_clips(clips)
    assert [(p.language, [x.clip.key for x in p.placements]) for p in packs] == [
        ("en", [0, 2]), ("es", [1, 3]), ("fr", [4])]


def test_render_places_each_clip_at_its_start_and_zeros_elsewhere():
    audios = [noise_clip(1.234, 0), noise_clip(2.0, 1)]
    [pack] = pack_clips([Clip(i, len(a), " x", "en", 1) for i, a in enumerate(audios)])
    audio = pack.render(audios)
    assert len(audio) == pack.duration_ms * SAMPLES_PER_MS
    for p, a in zip(pack.placements, audios):
        assert np.array_equal(audio[p.start_sample:p.start_sample + len(a)], a)
    assert np.count_nonzero(audio) == sum(len(a) for a in audios)
    with pytest.raises(ValueError, match="samples, planned"):
        pack.render([audios[0], audios[1][:-1]])


def test_timestamps_must_be_on_the_grid():
    assert timestamp(29_980) == "<|29.98|>"
    with pytest.raises(ValueError, match="grid"):
        timestamp(1_010)


# Property test: random clip lengths (0.2-30 s, mostly Common Voice's 3-8 s), token counts,
# languages, gaps and resolutions.
clip_lists = st.lists(
    st.tuples(st.one_of(st.integers(3_200, 480_000), st.integers(48_000, 128_000)),  # samples
              st.integers(0, 60), st.sampled_from(["en", "en", "de", "ja"])),
    min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(clip_lists, st.sampled_from([20, 40, 100, 140]), st.sampled_from([0, 200, 500]),
       st.integers(62, 300))
def test_packing_invariants(spec, resolution, gap_ms, max_tokens):
    clips = [Clip(i, n, f" c{i}", lang, tokens) for i, (n, tokens, lang) in enumerate(spec)]
    packs = pack_clips(clips, resolution_ms=resolution, gap_ms=gap_ms, max_tokens_length=max_tokens)
    # Invariant: every clip lands in exactly one pack.
    keys = [p.clip.key for pack in packs for p in pack.placements]
    assert sorted(keys) == list(range(len(clips)))
    for pack in packs:
        # Invariant: one language per pack, and within a language the list order is kept.
        assert {p.clip.language for p in pack.placements} == {pack.language}
        # Invariant: no window over 30 s or over the token limit.
        assert 0 < pack.duration_ms <= CHUNK_LENGTH_MS
        assert pack.n_tokens <= max_tokens
        previous_end = None
        for p in pack.placements:
            # Invariant: timestamps bracket the clip's samples, with less than one grid step to
            # spare, and sit on the resolution's grid (30.00 is the one exception, a 20 ms step).
            end_sample = p.start_sample + p.clip.n_samples
            assert p.start_ms * SAMPLES_PER_MS <= p.start_sample and end_sample <= p.end_ms * SAMPLES_PER_MS
            assert p.end_ms * SAMPLES_PER_MS - end_sample < resolution * SAMPLES_PER_MS
            assert p.start_ms % resolution == 0 and (p.end_ms % resolution == 0 or p.end_ms == CHUNK_LENGTH_MS)
            # Invariant: clips do not touch: at least the gap lies between them, at most gap + one grid step.
            if previous_end is not None:
                assert gap_ms <= p.start_ms - previous_end < gap_ms + resolution
            previous_end = p.end_ms
        stamps = [round(float(t) * 1000) for t in TIMESTAMP.findall(pack.text)]
        assert stamps == [t for p in pack.placements for t in (p.start_ms, p.end_ms)]
    for language in {c.language for c in clips}:
        mine = [pack for pack in packs if pack.language == language]
        order = [p.clip.key for pack in mine for p in pack.placements]
        assert order == sorted(order)
        # Invariant (greedy): a pack closed only because its language's next clip did not fit.
        for pack, following in zip(mine, mine[1:]):
            nxt = following.placements[0].clip
            start = -(-(pack.duration_ms + gap_ms) // resolution) * resolution
            assert (start * SAMPLES_PER_MS + nxt.n_samples > N_SAMPLES
                    or pack.n_tokens + nxt.n_tokens + TIMESTAMP_TOKENS_PER_CLIP > max_tokens)


# --------------------------------------------------------------------------------------------
# create_data.py --pack


def test_pack_writes_windows_whose_timestamps_bracket_the_clips(tmp_path, capsys):
    spec = [(f"c{i}", s, f"sentence number {i}", "en") for i, s in enumerate([3.0, 4.5, 7.987, 6.2, 8.0, 3.3, 5.0])]
    data_file = write_clips(tmp_path / "clips", spec)
    assert prepare(options(tmp_path, data_file)) == 0
    records = read_manifest(tmp_path / "train.json")
    originals = {name: load_audio(tmp_path / "clips" / f"{name}.wav") for name, *_ in spec}
    seen = []
    for r in records:
        assert (r.language, r.prompt, r.start, Path(r.source).name) == ("en", "", 0.0, "list.tsv")
        assert r.offset == 0.0 and r.duration <= 30.0
        audio = load_audio(r.audio_path)
        assert len(audio) == round(r.duration * SAMPLE_RATE)
        features = np.load(r.features_path)
        assert features.shape == (80, 3000) and features.dtype == np.float16 and r.n_mels == 80
        listing = json.loads(Path(r.audio_path).with_suffix(".json").read_text())
        stamps = [float(t) for t in TIMESTAMP.findall(r.text)]
        texts = re.split(r"<\|\d+\.\d\d\|>", r.text)[1::2]
        assert len(stamps) == 2 * len(listing["clips"]) == 2 * len(texts)
        covered = np.zeros(len(audio), bool)
        for k, item in enumerate(listing["clips"]):
            name = Path(item["audio"]).stem
            clip_audio = originals[name]
            start, end = stamps[2 * k], stamps[2 * k + 1]
            assert (start, end) == (item["start"], item["end"])
            assert texts[k] == f" sentence number {name[1:]}"
            first = round(start * SAMPLE_RATE)
            # The clip's samples are exactly those from its start token on ...
            assert np.abs(audio[first:first + len(clip_audio)] - clip_audio).max() <= PCM_STEP
            # ... and after them only zeros until its end token, less than 20 ms later.
            tail = audio[first + len(clip_audio):round(end * SAMPLE_RATE)]
            assert not tail.any() and len(tail) < 0.02 * SAMPLE_RATE
            covered[first:first + len(clip_audio)] = True
            seen.append(name)
        assert not audio[~covered].any()  # the gaps are silence
    # Every clip once, in list order; 3 + 0.5 + 4.5 + 0.5 + 7.987 + 0.5 + 6.2 = 23.2 s, + 8 would pass 30 s.
    assert seen == [name for name, *_ in spec]
    assert [len(json.loads(Path(r.audio_path).with_suffix(".json").read_text())["clips"]) for r in records] == [4, 3]
    assert "7 clips packed into 2 windows" in capsys.readouterr().out


def test_audiofolder_languages_never_mixed_and_long_and_empty_clips(tmp_path, capsys):
    spec = [("a", 3.0, "one", "en"), ("b", 3.0, "uno", "es"), ("c", 31.0, "too long", "en"),
            ("d", 4.0, "dos", "Spanish"), ("e", 2.0, "", "en"), ("f", 3.0, "two", "en")]
    folder = tmp_path / "folder"
    write_clips(folder, spec, csv=True)
    opts = PrepareOptions(audio_dir=str(folder), pack=True, output=str(tmp_path / "hf.json"),
                          precompute_features=False)
    assert prepare(opts) == 1  # the 31 s clip is skipped, as without --pack
    records = read_manifest(tmp_path / "hf.json")
    assert [(r.language, r.text) for r in records] == [
        ("en", ""),  # a clip without text stays alone: a no-speech example of the clip itself
        ("en", "<|0.00|> one<|3.00|><|3.50|> two<|6.50|>"),
        ("es", "<|0.00|> uno<|3.00|><|3.50|> dos<|7.50|>"),
    ]
    assert records[0].audio_path == str(folder / "e.wav") and records[1].features_path is None
    err = capsys.readouterr().err
    assert "line 4: " in err and "lasts 31.0 s" in err


def test_pack_spec_command_and_option_errors(tmp_path):
    data_file = write_clips(tmp_path / "clips", [("a", 1.0, "hi", "en"), ("b", 1.0, "there", "en")])
    out = tmp_path / "cli.json"
    assert cli_main(["prepare", "--without-timestamps", "--data-file", str(data_file), "--pack",
                     "--output", str(out), "--no-precompute-features"]) == 0
    [record] = read_manifest(out)
    assert record.text == "<|0.00|> hi<|1.00|><|1.50|> there<|2.50|>"
    assert Path(record.audio_path).parent == tmp_path / "cli_dump" / "packs"
    with pytest.raises(UserError, match="drop --no-dump"):
        prepare(options(tmp_path, data_file, no_dump=True, overwrite=True))
    with pytest.raises(UserError, match="--pack packs clips from --data-file"):
        prepare(PrepareOptions(audio_dir=str(tmp_path / "clips"), transcript_dir=str(tmp_path / "clips"),
                               pack=True, output=str(tmp_path / "x.json")))


def test_clip_over_the_token_limit_is_skipped_and_limit_closes_packs(tmp_path, capsys):
    spec = [("a", 1.0, "one two", "en"), ("b", 1.0, "three four five six seven eight", "en"),
            ("c", 1.0, "nine ten", "en"), ("d", 1.0, "eleven", "en")]
    data_file = write_clips(tmp_path / "clips", spec)
    # word counts + 2 timestamps: a 4, b 8 (> 7: skipped), c 4, d 3 -> [a], [c, d]
    assert prepare(options(tmp_path, data_file, max_tokens_length=7)) == 1
    assert [r.text for r in read_manifest(tmp_path / "train.json")] == [
        "<|0.00|> one two<|1.00|>", "<|0.00|> nine ten<|1.00|><|1.50|> eleven<|2.50|>"]
    assert "line 2: 6 tokens + 2 timestamps > --max-tokens-length 7" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The packed manifest trains


def test_packed_espeak_clips_train(tmp_path, speech_clips, monkeypatch):
    from whisperft.train import TrainConfig, train

    monkeypatch.undo()  # the real Whisper tokenizer counts the tokens
    try:
        prepare_module.make_token_counter("english")
    except UserError as exc:
        pytest.skip(f"no offline tokenizer: {exc}")
    data_file = tmp_path / "list.tsv"
    data_file.write_text("".join(f"{path}\t{text}\n" for path, text in speech_clips * 3))
    assert prepare(options(tmp_path, data_file, tokenizer_type="english")) == 0
    records = read_manifest(tmp_path / "train.json")
    assert 2 <= len(records) < 12  # 12 espeak sentences of 2-5 s: several per window
    assert sum(len(TIMESTAMP.findall(r.text)) for r in records) == 24

    model = tmp_path / "random.pt"
    saving.save_openai(random_bundle(), model, torch.float32)
    cfg = TrainConfig(train_json=str(tmp_path / "train.json"), dev_json=str(tmp_path / "train.json"),
                      model=str(model), save_dir=str(tmp_path / "out"), batch_size=2, dev_batch_size=2,
                      accum_grad_steps=1, lr=1e-3, warmup_steps=1, train_steps=2, eval_steps=2, log_steps=1,
                      device="cpu")
    assert train(cfg) == 0
    log = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert [e["step"] for e in log if "loss" in e] == [1, 2]
    assert all(np.isfinite(e.get("loss", e.get("dev_loss"))) for e in log)
    assert (tmp_path / "out" / "last_model.pt").is_file()
