"""The demo dataset generator (demo/make_data.py): layout, determinism, SRT timing, split hygiene."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest
import srt

from conftest import load_demo_data_module, require_tool

SMALL_SCALE = 0.2  # ~1 minute of audio in total: a couple of seconds to generate


make_data = load_demo_data_module()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> tuple[Path, dict]:
    require_tool("espeak-ng")
    out = tmp_path_factory.mktemp("demo") / "data"
    return out, make_data.make_demo_data(out, scale=SMALL_SCALE)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, make_data.SAMPLE_RATE)
        return f.getnframes() / f.getframerate()


def test_layout_matches_the_spec_commands(small_dataset):
    out, result = small_dataset
    for split in make_data.SPLITS:
        wavs = sorted((out / f"{split}_audio").glob("*.wav"))
        srts = sorted((out / f"{split}_transcripts").glob("*.srt"))
        assert wavs, split
        # Invariant: every recording has exactly one transcript with the same stem.
        assert [w.stem for w in wavs] == [s.stem for s in srts]
        info = result["splits"][split]
        assert sorted(Path(w) for w, _ in info["recordings"]) == wavs
        assert info["n_sentences"] >= len(wavs)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"


def test_generation_is_deterministic_and_idempotent(small_dataset, tmp_path):
    out, _ = small_dataset
    first = _tree_bytes(out)
    other = tmp_path / "again"
    make_data.make_demo_data(other, scale=SMALL_SCALE)
    assert _tree_bytes(other) == first
    make_data.make_demo_data(other, scale=SMALL_SCALE)  # over its own output
    assert _tree_bytes(other) == first


def test_rerun_at_smaller_scale_removes_only_its_own_stale_files(tmp_path):
    require_tool("espeak-ng")
    out = tmp_path / "data"
    make_data.make_demo_data(out, scale=0.4)
    (out / "train_audio" / "mine.wav").write_bytes(b"not ours")
    make_data.make_demo_data(out, scale=0.1)
    expected = {n for n, _, _ in make_data.plan_recordings(0.1)["train"]}
    assert len(expected) < len(make_data.plan_recordings(0.4)["train"])
    assert {p.stem for p in (out / "train_audio").glob("train_*.wav")} == expected
    assert {p.stem for p in (out / "train_transcripts").glob("*.srt")} == expected
    assert (out / "train_audio" / "mine.wav").read_bytes() == b"not ours"


def test_srt_cues_are_exact_ordered_and_inside_the_audio(small_dataset):
    out, _ = small_dataset
    for split in make_data.SPLITS:
        for wav_path in sorted((out / f"{split}_audio").glob("*.wav")):
            duration = _wav_duration(wav_path)
            srt_path = out / f"{split}_transcripts" / f"{wav_path.stem}.srt"
            cues = list(srt.parse(srt_path.read_text(encoding="utf-8")))
            assert cues, srt_path
            with wave.open(str(wav_path), "rb") as f:
                pcm = f.readframes(f.getnframes())
            samples = np.frombuffer(pcm, dtype="<i2")
            previous_end = 0.0
            for cue in cues:
                start, end = cue.start.total_seconds(), cue.end.total_seconds()
                # Invariant: cues are increasing, non-overlapping, inside the audio.
                assert previous_end <= start < end <= duration, (srt_path, cue.index)
                if previous_end:
                    gap = start - previous_end
                    assert make_data.GAP_MIN_S - 1e-9 <= gap <= make_data.GAP_MAX_S + 1e-9
                # Invariant: the gaps are digital silence and every cue holds sound, so the
                # times are where the speech is, not approximately.
                lo, hi = (round(t * make_data.SAMPLE_RATE) for t in (start, end))
                assert np.abs(samples[round(previous_end * make_data.SAMPLE_RATE):lo]).max(initial=0) == 0
                assert np.abs(samples[lo:hi]).max() > 1000
                assert cue.content.strip() and "\n" not in cue.content
                previous_end = end


def test_splits_share_vocabulary_but_not_sentences():
    train, dev, test = (set(make_data.SENTENCES[s]) for s in ("train", "dev", "test"))
    # Invariant: no sentence is in two splits (nor twice in one).
    assert not train & test and not train & dev and not dev & test
    for split in make_data.SPLITS:
        assert len(set(make_data.SENTENCES[split])) == len(make_data.SENTENCES[split])
    train_text = " ".join(train)
    for split in ("dev", "test"):
        for sentence in make_data.SENTENCES[split]:
            for term in make_data.DOMAIN_TERMS:
                if re.search(rf"\b{re.escape(term)}\b", sentence, re.IGNORECASE):
                    # Invariant: fine-tuning has seen every domain term it is scored on.
                    assert re.search(rf"\b{re.escape(term)}\b", train_text, re.IGNORECASE), term
    # The terms are what the demo is about: most dev/test sentences should contain one.
    for split in ("dev", "test"):
        with_term = [s for s in make_data.SENTENCES[split]
                     if any(re.search(rf"\b{re.escape(t)}\b", s, re.IGNORECASE)
                            for t in make_data.DOMAIN_TERMS)]
        assert len(with_term) >= 0.8 * len(make_data.SENTENCES[split]), split


def test_test_voices_are_training_voices():
    train_voices = set(make_data.RECORDING_VOICES["train"])
    assert set(make_data.RECORDING_VOICES["dev"]) <= train_voices
    assert set(make_data.RECORDING_VOICES["test"]) <= train_voices


@pytest.mark.parametrize("scale", [0.05, SMALL_SCALE, 0.5, 1.0])
def test_plan_scales_down_to_a_prefix(scale):
    full = make_data.plan_recordings(1.0)
    plan = make_data.plan_recordings(scale)
    for split in make_data.SPLITS:
        assert plan[split], split
        sentences = [s for _, _, block in plan[split] for s in block]
        assert sentences == list(make_data.SENTENCES[split][: len(sentences)])
        assert all(block for _, _, block in plan[split])
        assert len(plan[split]) <= len(full[split])


def test_full_scale_sizes(tmp_path):
    # The sizes the demo is designed around; generating them takes ~5 s.
    require_tool("espeak-ng")
    result = make_data.make_demo_data(tmp_path / "data")
    minutes = {split: info["duration_s"] / 60 for split, info in result["splits"].items()}
    assert 5 <= minutes["train"] <= 6.5 and 0.8 <= minutes["dev"] <= 1.5 and 1.3 <= minutes["test"] <= 2
    for info in result["splits"].values():
        for wav_path, _ in info["recordings"]:
            assert 40 <= _wav_duration(Path(wav_path)) <= 120, wav_path


def test_invalid_scale_is_rejected():
    with pytest.raises(ValueError):
        make_data.plan_recordings(0)
    with pytest.raises(ValueError):
        make_data.plan_recordings(1.5)
