"""check-data and the repairs of create_data.py: timing offset/drift, cue text against what the
model hears, cues without speech or past the end; --fix-timing, --max-cue-wer."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import pytest

from whisperft import CheckOptions, check_data, estimate_timing
from whisperft.agreement import cue_agreement
from whisperft.manifest import read_manifest
from whisperft.repairs import RepairedCue, repair
from whisperft.subtitles import Cue
from whisperft.windows import LEFT_OUT, split_into_windows

REPO = Path(__file__).resolve().parents[1]


def _faulty_module():
    spec = importlib.util.spec_from_file_location("whisperft_faulty_data", REPO / "demo" / "make_faulty_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- timing, on made-up speech (pure) -------------------------------------------------------

def _sentences(seed: int, n: int = 14) -> list[tuple[float, float]]:
    """Speech intervals of a made-up recording: sentences of 2-5 s, pauses of 0.3-0.9 s."""
    rng = random.Random(seed)
    t, out = 0.5, []
    for _ in range(n):
        length = rng.uniform(2, 5)
        out.append((t, t + length))
        t += length + rng.uniform(0.3, 0.9)
    return out


@pytest.mark.parametrize("offset,rate", [(0.0, 1.0), (0.5, 1.0), (-1.7, 1.0), (3.0, 1.0),
                                         (0.0, 1.04), (1.2, 0.96), (-0.8, 1.02)])
def test_timing_is_recovered_from_speech_intervals(offset, rate):
    speech = _sentences(seed=int(offset * 10 + rate * 100))
    duration = speech[-1][1] + 1.0
    # detector edges are never exact: jitter them by up to 40 ms
    rng = random.Random(1)
    heard = [(s + rng.uniform(-0.04, 0.04), e + rng.uniform(-0.04, 0.04)) for s, e in speech]
    cues = [(rate * s + offset, rate * e + offset) for s, e in speech]
    fit = estimate_timing(cues, heard, duration)
    assert fit.sure
    assert abs(fit.offset - offset) < 0.1
    assert abs(fit.rate - rate) < 0.005
    assert fit.off(duration) == (offset != 0.0 or rate != 1.0)


def test_clean_cues_have_no_drift_and_are_on_time():
    speech = _sentences(seed=3)
    fit = estimate_timing(speech, speech, speech[-1][1] + 1)
    # Invariant: without a drift that the data pins down, none is reported.
    assert fit.rate == 1.0 and abs(fit.offset) < 0.01 and not fit.off(speech[-1][1] + 1)


def test_few_cues_leave_the_estimate_unsure():
    speech = _sentences(seed=4, n=2)
    fit = estimate_timing([(s + 1, e + 1) for s, e in speech], speech, 20.0)
    assert fit is not None and not fit.sure
    assert estimate_timing([], speech, 20.0) is None


# --- text agreement (pure) ------------------------------------------------------------------

class _Seg:
    def __init__(self, start, end, text):
        self.start, self.end, self.text = start, end, text


def test_cue_agreement_scores_each_cue_on_the_words_aligned_to_it():
    texts = ["the cat sat on the mat", "a completely different sentence was written here", "good night"]
    spans = [(0.0, 2.0), (2.5, 5.0), (5.5, 6.5)]
    heard = [_Seg(0.0, 2.0, "The cat sat on the mat."), _Seg(2.5, 5.0, "Birds fly south every winter."),
             _Seg(5.5, 6.5, "Good night.")]
    (w1, _, h1), (w2, c2, h2), (w3, _, _) = cue_agreement(texts, spans, heard)
    assert w1 == 0.0 and h1 == "the cat sat on the mat"
    assert w2 > 0.8 and c2 > 0.5 and "birds" in h2
    assert w3 == 0.0
    # an empty cue has nothing to score; no recognition at all is a full miss
    assert cue_agreement(["", "hello there"], [(0, 1), (1, 2)], [])[0] is None
    assert cue_agreement(["", "hello there"], [(0, 1), (1, 2)], [])[1][0] == 1.0


def test_a_word_heard_far_from_a_cue_does_not_count_as_said_there():
    """The text alignment alone pairs the first cue's "milligrams daily" with the same words
    heard ten seconds later; by time they belong to the second cue, so the first cue (whose
    audio held other words) is judged on what was heard under it."""
    texts = ["metoprolol twenty five milligrams daily", "aspirin eighty one milligrams daily"]
    spans = [(0.0, 3.0), (10.0, 13.0)]
    heard = [_Seg(0.0, 3.0, "The weather is nice."), _Seg(10.0, 13.0, "Milligrams daily, aspirin eighty one.")]
    (_, c1, h1), (_, _, h2) = cue_agreement(texts, spans, heard)
    assert "milligrams" not in h1 and "milligrams daily" in h2
    assert c1 > 0.7, c1


# --- repairs and windows (pure) -------------------------------------------------------------

def test_left_out_cues_cost_their_text_and_audio_only():
    cues = [Cue(0.5 + 3 * k, 2.5 + 3 * k, f"sentence number {k}") for k in range(14)]
    finding = {"timing": {"offset": 1.0, "rate": 1.0, "applied_by_fix_timing": True},
               "cues": [{"index": 4, "wer": 0.9}, {"index": 5, "wer": 0.2}]}
    fixed, changes = repair(cues, finding, fix_timing=True, max_cue_wer=0.5)
    assert changes == {"timing": {"offset": 1.0, "rate": 1.0}, "left_out_cues": [4], "max_cue_wer": 0.5}
    by_cer, _ = repair(cues, {"cues": [{"index": 2, "wer": 0.6, "cer": 0.3}, {"index": 3, "cer": 0.7}]},
                       fix_timing=True, max_cue_cer=0.5)
    assert [c.skip_reason for c in by_cer[1:3]] == [None, LEFT_OUT]
    assert [c.start for c in fixed[:2]] == [-0.5, 2.5]
    as_is, _ = repair(cues, finding, fix_timing=True)
    kept, _ = split_into_windows(as_is, 45.0, count_tokens=lambda t: len(t.split()))
    windows, skips = split_into_windows(fixed, 45.0, count_tokens=lambda t: len(t.split()))
    left = fixed[3]
    assert any(s.reason == LEFT_OUT for s in skips)
    # Invariant: the windows are those of the subtitles as they are (same audio, same times)...
    assert [(w.start, w.duration) for w in windows] == [(w.start, w.duration) for w in kept]
    for w, k in zip(windows, kept):
        # ...less the left-out cue's text (the neighbours' timestamps untouched), whose audio is muted
        assert w.text == re.sub(r"<\|[\d.]+\|> sentence number 3<\|[\d.]+\|>", "", k.text)
        assert "sentence number 3" not in w.text + w.prompt
        inside = w.start < left.end and left.start < w.start + w.duration
        assert w.muted == (((left.start - w.start, left.end - w.start),) if inside else ())
    assert sum(bool(w.muted) for w in windows) == 1 and sum(k.text != w.text for w, k in zip(windows, kept)) == 1
    # without --fix-timing the times stay as written; without findings nothing changes
    same, _ = repair(cues, finding, fix_timing=False, max_cue_wer=None)
    assert [c.start for c in same] == [c.start for c in cues]
    assert repair(cues, None, fix_timing=True, max_cue_wer=0.5)[1] is None
    assert isinstance(fixed[0], RepairedCue)


def test_a_left_out_cue_overlapping_another_still_keeps_windows_off_both():
    cues = [RepairedCue(1.0, 3.0, "kept"), RepairedCue(2.0, 4.0, "wrong", LEFT_OUT), RepairedCue(6.0, 8.0, "last")]
    windows, skips = split_into_windows(cues, 40.0, count_tokens=lambda t: len(t.split()))
    # silencing the left-out cue would silence part of "kept": both stay out of every window
    assert {s.reason for s in skips} >= {LEFT_OUT} and all(not w.muted for w in windows)
    assert all(w.start >= 4.0 for w in windows) and "kept" not in "".join(w.text for w in windows)


# --- the promise, on generated recordings with known faults and the real tiny.en -----------

@pytest.fixture(scope="module")
def faulty_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    truth = _faulty_module().make_faulty_set(root, n_files=8, per_file=10)
    return root, truth


@pytest.fixture(scope="module")
def findings(faulty_set, tiny_en):
    from whisperft.datacheck import check_pairs, findings_json
    from whisperft.decoding import TorchTranscriber
    from whisperft.pairing import pair_files
    from whisperft.transcription import TranscribeOptions

    root, _ = faulty_set
    pairs, _, _ = pair_files(root / "audio", root / "subtitles")
    runner = TorchTranscriber(tiny_en, TranscribeOptions(language="en", beam_size=1))
    data = findings_json(check_pairs(pairs, "en", runner))
    (root / "check.json").write_text(json.dumps(data), encoding="utf-8")
    return {Path(f["audio"]).stem: f for f in data["files"]}


def test_check_data_finds_the_injected_faults(faulty_set, findings):
    _, truth = faulty_set
    flagged_ok = flagged = wrong_total = 0
    for name, injected in truth["files"].items():
        found = findings[name]
        timing = found["timing"]
        assert abs(timing["offset"] - injected["offset"]) < 0.1, (name, timing)
        assert abs(timing["rate"] - injected["rate"]) < 0.005, (name, timing)
        assert timing["sure"], name
        cues = {c["index"]: c for c in found["cues"]}
        text_flags = {i for i, c in cues.items() if "text disagrees" in c["problems"]}
        flagged += len(text_flags)
        flagged_ok += len(text_flags & set(injected["wrong"]))
        wrong_total += len(injected["wrong"])
        for i in injected["silence"]:
            assert "no speech" in cues[i]["problems"], (name, i)
            # words spilling into its span belong to the speech beside it: none is judged here
            assert cues[i]["cer"] == 1.0 and cues[i]["heard"] == "", (name, cues[i])
        for i in injected["past_end"]:
            assert "past the end" in cues[i]["problems"], (name, i)
        if not any(injected[k] for k in ("wrong", "silence", "past_end")) and injected["offset"] == 0 \
                and injected["rate"] == 1:
            assert found["sound"] and not found["problems"], (name, found["problems"])
    assert wrong_total >= 8
    precision, recall = flagged_ok / max(flagged, 1), flagged_ok / wrong_total
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_create_data_repairs_timing_and_leaves_out_disagreeing_cues(faulty_set, findings, tmp_path, capsys):
    """The repaired manifest holds only cues that were said, at the time they were said."""
    import re

    from whisperft.prepare import PrepareOptions, prepare

    root, truth = faulty_set
    clean = {}
    for srt_path in (root / "clean").glob("*.srt"):
        from whisperft.subtitles import read_subtitles

        for c in read_subtitles(srt_path):
            clean[(srt_path.stem, c.text)] = c.start
    out = tmp_path / "fixed.json"
    prepare(PrepareOptions(audio_dir=str(root / "audio"), transcript_dir=str(root / "subtitles"),
                           output=str(out), no_dump=True, fix_timing=True, max_cue_cer=0.5,
                           check_report=str(root / "check.json")))
    n_cues = 0
    for record in read_manifest(out):
        name = Path(record.audio_path).stem
        for m in re.finditer(r"<\|([\d.]+)\|>([^<]+)<\|[\d.]+\|>", record.text):
            n_cues += 1
            start = record.start + float(m.group(1))
            assert (name, m.group(2).strip()) in clean, (name, m.group(2))  # never text that was not said
            assert abs(start - clean[(name, m.group(2).strip())]) <= 0.1
        injected = truth["files"][name]
        if injected["offset"] or injected["rate"] != 1:
            assert record.repairs and "timing" in record.repairs
    assert n_cues >= 0.8 * len(clean)  # what is left out is the faulty tenth, not more
    assert "cue left out by the data check" in capsys.readouterr().err


def test_check_data_reports_bad_files_one_line_each_and_goes_on(faulty_set, tiny_en, tmp_path, capsys,
                                                                 monkeypatch):
    import shutil

    root, _ = faulty_set
    folder = tmp_path / "mixed"
    folder.mkdir()
    for src in sorted((root / "audio").glob("*.wav"))[:2]:
        shutil.copy(src, folder / src.name)
        shutil.copy(root / "subtitles" / f"{src.stem}.srt", folder / f"{src.stem}.srt")
    (folder / "broken.wav").write_bytes(b"not audio at all")
    (folder / "broken.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n", encoding="utf-8")
    shutil.copy(sorted((root / "audio").glob("*.wav"))[0], folder / "garbled.wav")
    (folder / "garbled.srt").write_text("this is not a subtitle file\n", encoding="utf-8")
    (folder / "lonely.wav").write_bytes(b"")
    import whisperft.transcribe as transcribe_module
    from whisperft.decoding import TorchTranscriber

    monkeypatch.setattr(transcribe_module, "load_transcriber", lambda opts: TorchTranscriber(tiny_en, opts))
    rc = check_data(CheckOptions(audio_dir=str(folder), json=str(tmp_path / "c.json"), html=str(tmp_path / "c.html")))
    err = capsys.readouterr()
    data = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    unreadable = [f for f in data["files"] if any(p["kind"] == "unreadable" for p in f["problems"])]
    assert {Path(f["audio"]).stem for f in unreadable} == {"broken", "garbled", "lonely"}
    for f in unreadable:
        (problem,) = f["problems"]
        assert "\n" not in problem["message"] and Path(f["audio"]).stem in problem["message"]
    assert sum(1 for f in data["files"] if f["cues"]) == 2  # the good files were checked
    assert rc == 1 and "<table>" in (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "broken.wav" in err.err


def test_the_commands_offer_the_check_and_the_repairs():
    import subprocess

    check = subprocess.run([sys.executable, "-m", "whisperft", "check-data", "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "--max-cue-cer" in check.stdout and "--html" in check.stdout
    prep = subprocess.run([sys.executable, "create_data.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    for flag in ("--check", "--fix-timing", "--max-cue-wer", "--max-cue-cer", "--check-report"):
        assert flag in prep.stdout, flag


def test_repair_options_are_checked_before_anything_slow(tmp_path):
    from whisperft import UserError
    from whisperft.prepare import PrepareOptions, prepare

    with pytest.raises(UserError, match="--max-cue-wer must be 0 or more"):
        prepare(PrepareOptions(audio_dir=str(tmp_path), output=str(tmp_path / "o.json"), max_cue_wer=-1))
    with pytest.raises(UserError, match="missing.json: no such file"):
        prepare(PrepareOptions(audio_dir=str(tmp_path), output=str(tmp_path / "o.json"),
                               check_report=str(tmp_path / "missing.json")))


def test_fix_timing_alone_checks_timing_without_a_model(faulty_set, tmp_path, monkeypatch):
    """--fix-timing needs only voice-activity detection: no model is loaded, the findings are
    written beside the manifest, and the shifted files' windows start on their speech."""
    import shutil

    import whisperft.transcribe as transcribe_module
    from whisperft.prepare import PrepareOptions, prepare

    def no_model(opts):
        raise AssertionError("--fix-timing loaded a model")

    monkeypatch.setattr(transcribe_module, "load_transcriber", no_model)
    root, truth = faulty_set
    audio, subs = tmp_path / "audio", tmp_path / "subs"
    audio.mkdir(), subs.mkdir()
    shifted = [n for n, f in truth["files"].items() if f["offset"] and f["rate"] == 1][:2]
    for name in shifted:
        shutil.copy(root / "audio" / f"{name}.wav", audio)
        shutil.copy(root / "subtitles" / f"{name}.srt", subs)
    out = tmp_path / "train.json"
    prepare(PrepareOptions(audio_dir=str(audio), transcript_dir=str(subs), output=str(out), no_dump=True,
                           fix_timing=True))
    findings = json.loads((tmp_path / "train_check.json").read_text(encoding="utf-8"))
    assert len(findings["files"]) == 2
    for record in read_manifest(out):
        offset = truth["files"][Path(record.audio_path).stem]["offset"]
        assert abs(record.repairs["timing"]["offset"] - offset) < 0.1


def test_the_check_page_is_self_contained_and_lists_every_problem_worst_first(tmp_path):
    from whisperft.datacheck import PROBLEM_ORDER, check_recording, findings_json
    from whisperft.datacheck_page import write_check_page

    import numpy as np

    # a recording of silence with two cues: one with <markup>, one past the end
    audio = np.zeros(16000 * 5, dtype=np.float32)
    cues = [Cue(1.0, 2.0, "<b>not said</b> & more"), Cue(4.5, 9.0, "after the end")]
    found = check_recording(audio, cues, "a.wav", "a.srt")
    data = findings_json([found])
    page = write_check_page(data, tmp_path / "c.html").read_text(encoding="utf-8")
    assert "<b>not said" not in page and "&lt;b&gt;not said" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    kinds = [p["kind"] for p in data["files"][0]["problems"]]
    assert kinds == sorted(kinds, key=PROBLEM_ORDER.index) and {"past the end", "no speech"} <= set(kinds)
    positions = [page.index(_html_escape(p["message"])) for p in data["files"][0]["problems"]]
    assert positions == sorted(positions)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


# --- muted spans: what training sees of a left-out cue --------------------------------------

def test_muted_spans_are_silent_in_the_features_and_keyed_in_the_encoder_cache(tmp_path):
    import numpy as np

    from conftest import random_bundle
    from whisperft.audio import FRAMES_PER_SECOND, SAMPLE_RATE, save_wav
    from whisperft.data import DataOptions, WhisperDataset
    from whisperft.encoder_cache import cache_key
    from whisperft.features import window_features
    from whisperft.manifest import Record, write_manifest
    from whisperft.tokens import TokenLayout

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(20 * SAMPLE_RATE)).astype(np.float32)
    audio[SAMPLE_RATE:2 * SAMPLE_RATE] *= 5  # the loudest second lies outside the muted span
    save_wav(tmp_path / "rec.wav", audio)
    text = "<|0.00|> kept<|2.00|>"
    write_manifest(tmp_path / "m.json", [Record(str(tmp_path / "rec.wav"), text, start=2.0, duration=15.0,
                                                muted=[[6.0, 9.5]]),
                                         Record(str(tmp_path / "rec.wav"), text, start=2.0, duration=15.0)])
    muted, plain = read_manifest(tmp_path / "m.json")
    assert muted.muted == [[6.0, 9.5]] and plain.muted is None
    bundle = random_bundle()
    dataset = WhisperDataset([muted, plain], TokenLayout(bundle.tokenizer, False), 80, DataOptions())
    got, full = dataset.features(muted), dataset.features(plain)
    lo, hi = int(6.0 * FRAMES_PER_SECOND), int(9.5 * FRAMES_PER_SECOND)
    inside = got[:, lo + 2:hi - 2]
    # Invariant: the span's samples are zero: its frames sit at the log-mel floor, nothing louder
    assert float(inside.max()) == float(inside.min()) == float(got[:, :1500].min())
    assert float(full[:, lo + 2:hi - 2].min()) > float(inside.max())
    # ...and the audio around it is untouched
    assert torch_equal(got[:, :lo - 2], full[:, :lo - 2]) and torch_equal(got[:, hi + 2:], full[:, hi + 2:])
    samples = audio[2 * SAMPLE_RATE:17 * SAMPLE_RATE].copy()
    samples[6 * SAMPLE_RATE:int(9.5 * SAMPLE_RATE)] = 0
    assert float((got - window_features(np.round(samples * 32767) / 32767, 80)).abs().max()) < 1e-3
    encoder = bundle.model.model.encoder
    assert cache_key(encoder, [muted], 80) != cache_key(encoder, [plain], 80)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_prepare_leaving_out_cues_keeps_the_windows_of_the_set_as_is(faulty_set, tmp_path):
    """Real recordings: --max-cue-cer keeps every window of the as-is run; a left-out cue's text
    is gone and its audio silent in the dumped WAV and features, nothing else changes."""
    import numpy as np

    from whisperft.audio import SAMPLE_RATE, load_audio
    from whisperft.prepare import PrepareOptions, prepare

    root, truth = faulty_set
    files = [{"audio": str(root / "audio" / f"{name}.wav"),
              "cues": [{"index": i, "cer": 1.0} for i in injected["wrong"]]}
             for name, injected in truth["files"].items()]
    (tmp_path / "wrong.json").write_text(json.dumps({"files": files}), encoding="utf-8")
    runs = {}
    for name, extra in (("asis", {}), ("left", {"max_cue_cer": 0.5, "check_report": str(tmp_path / "wrong.json")})):
        prepare(PrepareOptions(audio_dir=str(root / "audio"), transcript_dir=str(root / "subtitles"),
                               output=str(tmp_path / f"{name}.json"), **extra))
        runs[name] = read_manifest(tmp_path / f"{name}.json")
    asis, left = runs["asis"], runs["left"]
    assert [(r.source, r.start, r.duration) for r in left] == [(r.source, r.start, r.duration) for r in asis]
    assert sum(len(i["wrong"]) for i in truth["files"].values()) >= 8
    assert sum(len(r.muted or []) for r in left) >= 8
    for a, r in zip(asis, left):
        if not r.muted:
            assert r.text == a.text and np.array_equal(np.load(r.features_path), np.load(a.features_path))
            continue
        assert len(r.text) < len(a.text)
        wav = load_audio(r.audio_path)
        for lo, hi in r.muted:
            assert not wav[int(lo * SAMPLE_RATE):int(hi * SAMPLE_RATE)].any()
            assert load_audio(a.audio_path)[int(lo * SAMPLE_RATE):int(hi * SAMPLE_RATE)].any()
