"""WER/CER reports: hand-computed scores on small strings, normalisers, the folder command, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whisperft.errors import UserError
from whisperft.metrics import Counts, EvaluateOptions, evaluate, score
from whisperft.normalizers import get_normalizer
from whisperft.subtitles import Cue
from whisperft.transcription import Segment, Transcript
from whisperft.writers import to_json, write_subtitles
from whisperft.tokens import language_code

REPO = Path(__file__).resolve().parents[1]


# --- scores on small strings, computed by hand ---------------------------------------------

# Three files, one of each error kind, of very different lengths:
#   short: "the cat sat down"   -> "the hat sat down"     S=1, N=4   rate 1/4  = 0.25
#   tiny:  "red green"          -> "red"                  D=1, N=2   rate 1/2  = 0.50
#   long:  "a b c d e f g h i j" -> same + " k"           I=1, N=10  rate 1/10 = 0.10
# unweighted = (0.25 + 0.50 + 0.10) / 3 = 0.283333... -> 28.33%
# weighted   = (1 + 1 + 1) / (4 + 2 + 10) = 3/16 = 0.1875 -> 18.75%
WER_PAIRS = [
    ("short", "the cat sat down", "the hat sat down"),
    ("tiny", "red green", "red"),
    ("long", "a b c d e f g h i j", "a b c d e f g h i j k"),
]


def test_wer_counts_and_both_averages():
    report = score(WER_PAIRS, metric="WER", normalizer="none")
    counts = {f.name: f.counts for f in report.files}
    assert counts["short"] == Counts(substitutions=1, deletions=0, insertions=0, reference_length=4)
    assert counts["tiny"] == Counts(substitutions=0, deletions=1, insertions=0, reference_length=2)
    assert counts["long"] == Counts(substitutions=0, deletions=0, insertions=1, reference_length=10)
    assert report.unweighted_average() == pytest.approx(0.85 / 3)
    assert report.weighted_average() == pytest.approx(3 / 16)
    assert report.summary_lines() == ["Unweighted Average WER: 28.33%",
                                      "Weighted Average WER: 18.75%"]


def test_cer_counts_spaces_for_languages_with_spaces():
    # "abcd" -> "abed":               S=1, N=4  -> 0.25
    # "hello world" -> "helloworld":  D=1 (the space), N=11 -> 1/11 = 0.090909...
    # unweighted = (0.25 + 1/11) / 2 = 0.170454... -> 17.05%
    # weighted   = 2 / 15 = 0.133333...           -> 13.33%
    report = score([("x", "abcd", "abed"), ("y", "hello world", "helloworld")],
                   metric="cer", normalizer="none")  # lower-case metric is accepted
    assert report.metric == "CER"
    assert [f.counts for f in report.files] == [Counts(1, 0, 0, 4), Counts(0, 1, 0, 11)]
    assert report.summary_lines() == ["Unweighted Average CER: 17.05%",
                                      "Weighted Average CER: 13.33%"]


def test_japanese_defaults_to_cer_without_spaces():
    # basic normaliser: "今日は、良い天気です。" -> "今日は 良い天気です " -> spaces dropped for CER:
    # 今日は良い天気です (9 chars) vs 今日は良い天気でした (10): す->し (S), +た (I) -> 2/9 = 22.22%.
    # raw: 今日は、良い天気です。 (11 chars): 、 deleted, す->し, 。->た -> S=2 D=1 -> 3/11 = 27.27%.
    report = score([("ja", "今日は、良い天気です。", "今日は 良い天気でした")], language="Japanese")
    assert (report.metric, report.normalizer, report.language) == ("CER", "basic", "ja")
    assert report.files[0].counts == Counts(1, 0, 1, 9)
    assert report.files[0].raw == Counts(2, 1, 0, 11)
    assert report.summary_lines() == ["Unweighted Average CER: 22.22%",
                                      "Weighted Average CER: 22.22%",
                                      "Unweighted Average CER (raw): 27.27%",
                                      "Weighted Average CER (raw): 27.27%"]


def test_explicit_metric_wins_over_the_language_default():
    assert score([("ja", "今日は", "今日は")], metric="WER", language="ja").metric == "WER"


def test_empty_reference_has_no_rate_but_its_insertions_count_in_the_weighted_average():
    # silence: "" -> "hello there": I=2, N=0, rate undefined (left out of the unweighted mean)
    # speech:  "a b" -> "a b":      0 errors, N=2, rate 0
    # unweighted = mean of defined rates = 0%; weighted = 2 / 2 = 100%
    report = score([("silence", "", "hello there"), ("speech", "a b", "a b")], normalizer="none")
    assert report.files[0].counts == Counts(0, 0, 2, 0)
    assert report.files[0].counts.rate is None
    assert report.empty_references() == ["silence"]
    assert report.summary_lines() == ["Unweighted Average WER: 0.00%",
                                      "Weighted Average WER: 100.00%"]


def test_no_pairs_gives_undefined_averages():
    report = score([], normalizer="none")
    assert report.summary_lines() == ["Unweighted Average WER: n/a", "Weighted Average WER: n/a"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from("abcde"), min_size=1, max_size=8),
                          st.lists(st.sampled_from("abcdef"), max_size=8)), min_size=1, max_size=5))
def test_weighted_average_is_the_corpus_rate(docs):
    # Invariant: weighted = jiwer's corpus WER over all files; unweighted = mean of file WERs.
    refs = [" ".join(r) for r, _ in docs]
    hyps = [" ".join(h) for _, h in docs]
    report = score([(str(i), r, h) for i, (r, h) in enumerate(zip(refs, hyps))], normalizer="none")
    assert report.weighted_average() == pytest.approx(jiwer.wer(refs, hyps))
    assert report.unweighted_average() == pytest.approx(
        sum(jiwer.wer(r, h) for r, h in zip(refs, hyps)) / len(docs))
    for f in report.files:
        assert f.counts.substitutions + f.counts.deletions <= f.counts.reference_length


# --- normalisers ---------------------------------------------------------------------------

def test_english_normaliser_forgives_formatting():
    # whisper: both sides become "mister smith is 2 cats" -> 0 errors.
    # raw: Mr./mister, Smith's/smith's, 2/two differ, cats matches -> S=3 of 4 = 75%.
    report = score([("a", "Mr. Smith's 2 cats", "mister smith's two cats")])
    assert report.normalizer == "whisper"
    assert report.files[0].counts == Counts(0, 0, 0, 5)
    assert report.files[0].raw == Counts(3, 0, 0, 4)
    assert report.summary_lines()[:2] == ["Unweighted Average WER: 0.00%",
                                          "Weighted Average WER: 0.00%"]
    assert report.summary_lines()[2:] == ["Unweighted Average WER (raw): 75.00%",
                                          "Weighted Average WER (raw): 75.00%"]


def test_english_normaliser_spelling_fillers_and_brackets():
    normalize = get_normalizer("auto", "en")
    assert normalize("[Music] Um, the COLOUR is grey!") == normalize("the color is gray")
    assert normalize("It's twenty-five percent") == "it is 25%"


def test_basic_normaliser_for_other_languages():
    # basic keeps numbers and words as written: "mr smith s 2 cats" vs "mister smith s two cats"
    # -> mr/mister and 2/two substituted: S=2 of 5 = 40%.
    report = score([("a", "Mr. Smith's 2 cats", "mister smith's two cats")], language="de")
    assert report.normalizer == "basic"
    assert report.files[0].counts == Counts(2, 0, 0, 5)
    assert get_normalizer("auto", "fr")("Ça va, Élodie ? (rires)") == "ça va élodie "


def test_normaliser_choice():
    assert get_normalizer("none", "en")("Mr. X!") == "Mr. X!"
    assert get_normalizer("auto", None)("Mr. X!") == get_normalizer("basic", "en")("Mr. X!")
    assert get_normalizer("WHISPER", "de")("Mr. X!") == "mister x"
    with pytest.raises(UserError, match="unknown normalizer 'fancy'"):
        get_normalizer("fancy", "en")


def test_language_and_metric_validation():
    assert language_code("en-US", default="en") == "en"
    assert language_code("Mandarin", default="en") == "zh"
    with pytest.raises(UserError, match="unknown language 'klingon'"):
        score([], language="klingon")
    with pytest.raises(UserError, match="unknown metric 'BLEU'"):
        score([], metric="BLEU")


# --- the folder command --------------------------------------------------------------------

def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


UNTIMED = "n/a (needs timed references and transcripts)"

SRT_REF = """1
00:00:00,000 --> 00:00:02,000
The cat

2
00:00:02,500 --> 00:00:04,000
sat down.
"""


@pytest.fixture
def dirs(tmp_path):
    hyp = write(tmp_path / "recognized", {f"{n}.txt": h for n, _, h in WER_PAIRS})
    ref = write(tmp_path / "references", {f"{n}.txt": r for n, r, _ in WER_PAIRS})
    return hyp, ref


def test_evaluate_prints_the_spec_report(dirs, capsys):
    hyp, ref = dirs
    code = evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref), metric="WER"))
    out, err = capsys.readouterr()
    assert code == 0
    # The English normaliser changes nothing in these lowercase pairs, so raw = normalised.
    # Then the timing and hallucination lines: plain text has no times; 1 insertion ("k") of
    # 16 reference words = 6.25%; only "long" has 5-grams (11 words: 7), none repeated.
    assert out.splitlines() == ["Processing 3 files...",
                                "Unweighted Average WER: 28.33%",
                                "Weighted Average WER: 18.75%",
                                "Unweighted Average WER (raw): 28.33%",
                                "Weighted Average WER (raw): 18.75%",
                                f"Segment start error: {UNTIMED}",
                                f"Segment end error: {UNTIMED}",
                                "Insertion rate: 6.25% (1 inserted / 16 reference words)",
                                "Repeated 5-gram rate: 0.00%",
                                "Longest repeated run: 0 words",
                                f"Words in reference silences: {UNTIMED}"]
    assert err == ""


def test_evaluate_verbose_lists_every_file(dirs, capsys):
    hyp, ref = dirs
    evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref), verbose=True,
                             normalizer="none"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Processing 3 files..."
    assert lines[1].startswith("Per file (none normalizer;")
    assert lines[2:5] == ["  long   WER   10.00%  (S=0 D=0 I=1 N=10)",
                          "  short  WER   25.00%  (S=1 D=0 I=0 N=4)",
                          "  tiny   WER   50.00%  (S=0 D=1 I=0 N=2)"]
    assert lines[5].startswith("Per file (start/end: median segment time error;")
    assert lines[6:9] == [
        "  long   start     n/a  end     n/a  ins  10.00%  rep5   0.00%  run 0  sil n/a",
        "  short  start     n/a  end     n/a  ins   0.00%  rep5   0.00%  run 0  sil n/a",
        "  tiny   start     n/a  end     n/a  ins   0.00%  rep5   0.00%  run 0  sil n/a"]
    assert lines[9:11] == ["Unweighted Average WER: 28.33%", "Weighted Average WER: 18.75%"]
    assert lines[11].startswith("Segment start error:")


def test_evaluate_lists_unpaired_files_and_fails(dirs, capsys):
    hyp, ref = dirs
    write(hyp, {"extra.txt": "nobody said this"})
    write(ref, {"forgotten.txt": "nobody transcribed this"})
    code = evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref)))
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines()[0] == "Processing 3 files..."  # only the pairs are scored
    assert "Weighted Average WER: 18.75%" in out.splitlines()
    assert f"No reference in {ref} for 1 recognized transcript(s):\n  extra.txt\n" in err
    assert f"No recognized transcript in {hyp} for 1 reference(s):\n  forgotten.txt\n" in err


def test_evaluate_writes_the_full_json_report(dirs, tmp_path, capsys):
    hyp, ref = dirs
    write(hyp, {"extra.txt": "x"})
    out_path = tmp_path / "reports" / "wer.json"
    code = evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref),
                                    json=str(out_path)))
    assert code == 1
    data = json.loads(out_path.read_text(encoding="utf-8"))
    assert [p.name for p in out_path.parent.iterdir()] == ["wer.json"]  # no temp file left over
    assert (data["metric"], data["normalizer"], data["language"]) == ("WER", "whisper", "en")
    assert data["num_files"] == 3
    assert data["unweighted_average"] == pytest.approx(0.85 / 3)
    assert data["weighted_average"] == pytest.approx(3 / 16)
    assert data["totals"] == {"substitutions": 1, "deletions": 1, "insertions": 1, "errors": 3,
                              "reference_length": 16, "rate": pytest.approx(3 / 16)}
    short = next(f for f in data["files"] if f["name"] == "short")
    assert short["substitutions"] == 1 and short["deletions"] == 0 and short["insertions"] == 0
    assert short["reference_length"] == 4 and short["rate"] == pytest.approx(0.25)
    assert short["raw"]["rate"] == pytest.approx(0.25)
    assert short["reference_path"] == str(ref / "short.txt")
    assert short["hypothesis_path"] == str(hyp / "short.txt")
    assert data["missing_references"] == ["extra.txt"] and data["missing_hypotheses"] == []


def test_evaluate_srt_reference_against_txt_hypothesis(tmp_path, capsys):
    # Cue text is joined across cues; the normaliser drops case and the final period:
    # "the cat sat down" vs "the cat sat" -> D=1 of 4 = 25%.
    ref = write(tmp_path / "refs", {"talk.srt": SRT_REF})
    hyp = write(tmp_path / "hyps", {"talk.txt": "The cat sat"})
    assert evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref))) == 0
    assert "Weighted Average WER: 25.00%" in capsys.readouterr().out.splitlines()


def test_evaluate_vtt_reference_and_an_unreadable_file(tmp_path, capsys):
    # talk: VTT with a voice tag, "the cat sat down" vs "the cat sat town" -> S=1 of 4 = 25%.
    # broken.srt cannot be parsed: listed with its reason, its pair not scored, exit code 1.
    ref = write(tmp_path / "refs", {
        "talk.vtt": "WEBVTT\n\n00:00.000 --> 00:02.000\n<v Ann>The cat\n\n"
                    "00:02.500 --> 00:04.000\nsat down.\n",
        "broken.srt": "1\n00:00:xx,000 --> 00:00:02,000\nhi\n",
    })
    hyp = write(tmp_path / "hyps", {"talk.txt": "the cat sat town", "broken.txt": "hi"})
    assert evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref))) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[:3] == ["Processing 2 files...", "Unweighted Average WER: 25.00%",
                                    "Weighted Average WER: 25.00%"]
    assert "Could not read 1 file(s)" in err
    assert f"  {ref / 'broken.srt'}: " in err and "bad timestamp '00:00:xx,000'" in err


def test_evaluate_prefers_srt_when_a_stem_has_several_formats(tmp_path, capsys):
    # transcribe --format all writes talk.srt and talk.txt: one pair, no "extra" file.
    ref = write(tmp_path / "refs", {"talk.txt": "the cat sat down"})
    hyp = write(tmp_path / "hyps", {"talk.srt": SRT_REF, "talk.txt": "something else entirely"})
    assert evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(ref))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Processing 1 file..."
    assert "Weighted Average WER: 0.00%" in out


def test_evaluate_missing_or_empty_folders_are_user_errors(dirs, tmp_path):
    hyp, ref = dirs
    with pytest.raises(UserError, match=r"^--recognized-dir \S*nowhere: no such folder$"):
        evaluate(EvaluateOptions(recognized_dir=str(tmp_path / "nowhere"), transcript_dir=str(ref)))
    empty = write(tmp_path / "empty", {"notes.md": "not a transcript"})
    with pytest.raises(UserError, match=r"^--transcript-dir \S*empty: no transcripts"):
        evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(empty)))
    other = write(tmp_path / "other", {"unrelated.txt": "words"})
    with pytest.raises(UserError, match="has a reference with the same name"):
        evaluate(EvaluateOptions(recognized_dir=str(hyp), transcript_dir=str(other)))


def test_cli_script(dirs, tmp_path):
    hyp, ref = dirs
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "calculate_metric.py", "--recognized-dir", str(hyp),
         "--transcript-dir", str(ref), "--metric", "wer", "--normalizer", "none", "--verbose",
         "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Processing 3 files..."
    summary = lines.index("Unweighted Average WER: 28.33%")
    assert lines[summary + 1] == "Weighted Average WER: 18.75%"
    assert lines[-1] == f"Words in reference silences: {UNTIMED}"
    assert json.loads(report.read_text(encoding="utf-8"))["num_files"] == 3


# --- timing, hallucination, two runs side by side, probes ----------------------------------

# a: 4 + 5 = 9 reference words, a 3 s silence (3.0-6.0) between its cues;
# b: 2 + 2 = 4 words, cues 0.5 s apart (no silence). 13 reference words in all.
TIMED_REFS = {
    "a": [Cue(1.0, 3.0, "The cat sat down."), Cue(6.0, 8.0, "It was a sunny day.")],
    "b": [Cue(0.0, 2.0, "Hello there."), Cue(2.5, 4.0, "General Kenobi.")],
}


@pytest.fixture
def timed_dirs(tmp_path):
    """SRT references; SRT transcripts with every cue 0.5 s late ("after"); JSON transcripts
    (our writer's) on time but with a "thank you" loop in a's silence ("before")."""
    refs, after, before = tmp_path / "refs", tmp_path / "after", tmp_path / "before"
    for folder in (refs, after, before):
        folder.mkdir()
    for name, cues in TIMED_REFS.items():
        write_subtitles(refs / f"{name}.srt", cues)
        write_subtitles(after / f"{name}.srt", [Cue(c.start + 0.5, c.end + 0.5, c.text)
                                                 for c in cues])
    loop = [Segment(1.0, 3.0, "The cat sat down."),
            Segment(3.0, 5.5, "Thank you. Thank you. Thank you. Thank you."),
            Segment(6.0, 8.0, "It was a sunny day.")]
    (before / "a.json").write_text(to_json(Transcript(loop, "en", 9.0)), encoding="utf-8")
    (before / "b.json").write_text(to_json(Transcript(
        [Segment(c.start, c.end, c.text) for c in TIMED_REFS["b"]], "en", 5.0)), encoding="utf-8")
    return refs, after, before


# "after": every segment 0.5 s late -> 4 start errors and 4 end errors of +0.5 s, no error in
# the words. Words in silences: a's first segment now spans 1.5-3.5, its 4 words at 1.75,
# 2.25, 2.75, 3.25: the last is in the 3-6 s silence -> 1. Its second ends 0.5 s after the last
# cue: too short for a silence. b has none -> 1 in all.
AFTER_LINES = ["Unweighted Average WER: 0.00%",
               "Weighted Average WER: 0.00%",
               "Unweighted Average WER (raw): 0.00%",
               "Weighted Average WER (raw): 0.00%",
               "Segment start error: median 0.50 s, p90 0.50 s (4 segments)",
               "Segment end error: median 0.50 s, p90 0.50 s (4 segments)",
               "Insertion rate: 0.00% (0 inserted / 13 reference words)",
               "Repeated 5-gram rate: 0.00%",
               "Longest repeated run: 0 words",
               "Words in reference silences: 1"]


def test_evaluate_timed_transcripts_half_a_second_late(timed_dirs, capsys):
    refs, after, _ = timed_dirs
    assert evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs))) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["Processing 2 files..."] + AFTER_LINES
    assert err == ""


# "before": a's transcript = "the cat sat down thank you thank you thank you thank you it was a
# sunny day" (17 words): 8 inserted of 9 -> a's WER 8/9 = 88.89%; b 0%.
#   unweighted (88.89 + 0) / 2 = 44.44%; weighted and insertion rate 8/13 = 61.54%.
# its 13 5-grams: two repeat ("thank you thank you thank" and "you thank you thank you", each
# seen 2 places earlier) -> a 2/13 = 15.38%; b (4 words) has none -> 2/13 overall.
# longest run: "thank you" x4: the 6 words after the first "thank you" repeat it (period 2).
# words in silences: the loop's 8 words lie in 3.0-5.5, inside a's 3-6 s silence -> 8.
# timing: the loop matches no cue (inserted only); the 4 other segments are exact -> 0.00 s.
COMPARE_TABLE = [
    "                                    before       after         delta",
    "  Unweighted Average WER            44.44%       0.00%    -44.44 pts",
    "  Weighted Average WER              61.54%       0.00%    -61.54 pts",
    "  Unweighted Average WER (raw)      44.44%       0.00%    -44.44 pts",
    "  Weighted Average WER (raw)        61.54%       0.00%    -61.54 pts",
    "  Segment start error, median       0.00 s      0.50 s       +0.50 s",
    "  Segment start error, p90          0.00 s      0.50 s       +0.50 s",
    "  Segment end error, median         0.00 s      0.50 s       +0.50 s",
    "  Segment end error, p90            0.00 s      0.50 s       +0.50 s",
    "  Insertion rate                    61.54%       0.00%    -61.54 pts",
    "  Repeated 5-gram rate              15.38%       0.00%    -15.38 pts",
    "  Longest repeated run                   6           0            -6",
    "  Words in reference silences            8           1            -7",
]


def test_evaluate_compare_prints_both_runs_and_the_change(timed_dirs, capsys):
    refs, after, before = timed_dirs
    code = evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs),
                                    compare=str(before), verbose=True))
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[:2] == ["Processing 2 files...", f"Processing 2 files in {before}..."]
    assert out[-len(COMPARE_TABLE) - 1:] == [
        f"Before ({before}) vs after ({after}); delta = after - before:", *COMPARE_TABLE]
    per_file = out.index("Per file, before -> after (delta):")
    assert out[per_file + 1] == (
        "  a  WER 88.89% -> 0.00% (-88.89 pts)  start 0.00 s -> 0.50 s (+0.50 s)  "
        "end 0.00 s -> 0.50 s (+0.50 s)  ins 88.89% -> 0.00% (-88.89 pts)  "
        "rep5 15.38% -> 0.00% (-15.38 pts)  run 6 -> 0 (-6)  sil 8 -> 1 (-7)")
    assert out[per_file + 2].startswith("  b  WER 0.00% -> 0.00% (+0.00 pts)  start 0.00 s")
    # the after run's own lines come first, as without --compare
    assert out[out.index(AFTER_LINES[0]):per_file] == AFTER_LINES


def test_evaluate_json_holds_every_run(timed_dirs, tmp_path, capsys):
    refs, after, before = timed_dirs
    path = tmp_path / "report.json"
    evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs),
                             compare=str(before), json=str(path)))
    data = json.loads(path.read_text(encoding="utf-8"))
    # the scores as before, and the runs beside them
    assert (data["metric"], data["normalizer"], data["num_files"]) == ("WER", "whisper", 2)
    assert data["weighted_average"] == 0.0 and data["files"][0]["reference_path"]
    assert set(data["runs"]) == {"after", "before"}
    summary = data["runs"]["after"]["summary"]
    assert summary["start_error"] == {"median": 0.5, "p90": 0.5, "count": 4}
    assert summary["end_error"] == {"median": 0.5, "p90": 0.5, "count": 4}
    assert (summary["wer_unweighted"], summary["wer_weighted"]) == (0.0, 0.0)
    assert (summary["insertion_rate"], summary["repeated_5gram_rate"]) == (0.0, 0.0)
    assert (summary["longest_repeated_run"], summary["words_in_silences"]) == (0, 1)
    assert summary["probe_words"] is None and data["runs"]["after"]["probes"] == []
    a = data["runs"]["before"]["files"][0]
    assert {"name", "reference", "hypothesis", "rate", "substitutions", "deletions",
            "insertions", "reference_words", "start_errors", "end_errors", "insertion_rate",
            "repeated_5gram_rate", "longest_repeated_run", "words_in_silences"} <= set(a)
    assert a["name"] == "a" and a["reference"] == "The cat sat down. It was a sunny day."
    assert a["hypothesis"].startswith("The cat sat down. Thank you.")
    assert (a["insertions"], a["reference_words"]) == (8, 9)
    assert a["rate"] == pytest.approx(8 / 9) and a["insertion_rate"] == pytest.approx(8 / 9)
    assert a["start_errors"] == [0.0, 0.0] and a["end_errors"] == [0.0, 0.0]
    assert a["repeated_5gram_rate"] == pytest.approx(2 / 13)
    assert (a["longest_repeated_run"], a["words_in_silences"]) == (6, 8)
    assert data["runs"]["after"]["files"][0]["start_errors"] == [0.5, 0.5]


def test_evaluate_html_hands_the_results_to_the_report(timed_dirs, tmp_path, monkeypatch,
                                                      capsys):
    import whisperft.report

    refs, after, _ = timed_dirs
    seen = {}
    monkeypatch.setattr(whisperft.report, "write_html_report",
                        lambda results, path: seen.update(results=results, path=path))
    evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs),
                             html=str(tmp_path / "report.html")))
    assert seen["path"] == tmp_path / "report.html"
    assert seen["results"]["runs"]["after"]["summary"]["start_error"]["median"] == 0.5


def test_evaluate_bad_timed_transcript_is_listed(timed_dirs, capsys):
    refs, after, _ = timed_dirs
    (after / "a.srt").unlink()
    (after / "a.json").write_text('{"segments": [{"start": 1.0, "end": 2.0, "text": "x"}, '
                                  '{"start": 2.0, "text": "y"}]}', encoding="utf-8")
    assert evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs))) == 1
    err = capsys.readouterr().err
    assert (f"  {after / 'a.json'}: segment 1: needs numeric \"start\" and \"end\" and a "
            f"\"text\" string, as the others have") in err


def test_evaluate_probe_flags_are_checked(timed_dirs):
    refs, after, _ = timed_dirs
    with pytest.raises(UserError, match="--probes-before .* give --compare"):
        evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs),
                                 probes_before="tiny.en"))


@pytest.mark.slow
def test_evaluate_probes_tiny_en(tiny_en, timed_dirs, tmp_path, capsys):
    refs, after, _ = timed_dirs
    path = tmp_path / "report.json"
    evaluate(EvaluateOptions(recognized_dir=str(after), transcript_dir=str(refs),
                             probes="tiny.en", json=str(path)))
    out = capsys.readouterr().out.splitlines()
    run = json.loads(path.read_text(encoding="utf-8"))["runs"]["after"]
    assert [p["name"] for p in run["probes"]] == ["silence", "white noise", "mains hum", "music"]
    assert all(isinstance(p["words"], int) and p["words"] >= 0 and isinstance(p["text"], str)
               for p in run["probes"])
    assert run["summary"]["probe_words"] == sum(p["words"] for p in run["probes"])
    counts = ", ".join(f"{p['name']} {p['words']}" for p in run["probes"])
    assert f"Probe words (tiny.en): {counts} (total {run['summary']['probe_words']}; " \
           f"0 is right)" in out
