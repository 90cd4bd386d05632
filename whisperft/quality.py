"""What a word error rate does not show, measured against the reference subtitles: how far the
recognised segments' times are from the cues they transcribe, and the marks of hallucination
(inserted words, loops, words written where the reference is silent). No torch.

Units are words, or characters for languages written without spaces (zh, ja, th, ...), always
after the same normaliser as the WER (see normalizers.py); jiwer aligns them.

Timed input (`HasTiming`) is anything with `.start`, `.end` (seconds) and `.text`: a subtitle
`Cue`, a transcription `Segment`, or the `Timed` below, which `read_timed` returns for a
recognised transcript (its `words` hold word timestamps when the JSON has them).

The last part gathers these per file and per run for the evaluate command (metrics.py) and
writes its lines: each run's measures, and two runs side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .normalizers import get_normalizer
from .subtitles import SUBTITLE_SUFFIXES, Cue, SubtitleError, read_subtitles, read_text_file
from .tokens import NO_SPACE_LANGUAGES
from .transcription import Word

REPEAT_N = 5  # n of the repeated n-gram rate, as distil-whisper reports it


class HasTiming(Protocol):
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Timed:
    """A recognised segment: `text` from `start` to `end` (seconds); `words` when timed per word."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


# --- units and alignment -------------------------------------------------------------------

def units(text: str, language: str = "en") -> list[str]:
    """Words of `text`, or its characters (spaces dropped) in a language written without spaces."""
    if language in NO_SPACE_LANGUAGES:
        return list("".join(text.split()))
    return text.split()


def _alignment(reference: list[str], hypothesis: list[str]):
    """jiwer's alignment chunks of two unit lists (None when either is empty)."""
    import jiwer

    if not reference or not hypothesis:
        return None
    return jiwer.process_words(" ".join(reference), " ".join(hypothesis))


def _aligned_pairs(reference: list[str], hypothesis: list[str]) -> list[tuple[int, int]]:
    """(hypothesis index, reference index) of every hit or substitution, in order."""
    out = _alignment(reference, hypothesis)
    if out is None:
        return []
    pairs = []
    for chunk in out.alignments[0]:
        if chunk.type in ("equal", "substitute"):
            pairs += zip(range(chunk.hyp_start_idx, chunk.hyp_end_idx),
                         range(chunk.ref_start_idx, chunk.ref_end_idx))
    return pairs


def _insertions(reference: list[str], hypothesis: list[str]) -> int:
    if not reference:
        return len(hypothesis)
    out = _alignment(reference, hypothesis)
    return 0 if out is None else out.insertions


def _units_with_owner(items: Sequence[HasTiming], language: str,
                      normalize: Callable[[str], str]) -> tuple[list[str], list[int]]:
    """All items' units in order, and for each unit the index of the item it came from."""
    all_units: list[str] = []
    owners: list[int] = []
    for k, item in enumerate(items):
        found = units(normalize(item.text), language)
        all_units += found
        owners += [k] * len(found)
    return all_units, owners


# --- timing --------------------------------------------------------------------------------

def _votes(reference: Sequence[HasTiming], hypothesis: Sequence[HasTiming], language: str,
           normalizer: str) -> dict[int, list[int]]:
    """hypothesis index -> the cue of each of its aligned (hit or substituted) units, in order;
    the normalised units of all segments are aligned against those of all cues at once."""
    normalize = get_normalizer(normalizer, language)
    ref_units, ref_owner = _units_with_owner(reference, language, normalize)
    hyp_units, hyp_owner = _units_with_owner(hypothesis, language, normalize)
    cues: dict[int, list[int]] = {}
    for h, r in _aligned_pairs(ref_units, hyp_units):
        cues.setdefault(hyp_owner[h], []).append(ref_owner[r])
    return dict(sorted(cues.items()))


def match_segments(reference: Sequence[HasTiming], hypothesis: Sequence[HasTiming],
                   language: str = "en", normalizer: str = "auto") -> list[tuple[int, int]]:
    """(hypothesis index, reference index) of each hypothesis segment matched to a cue by text:
    the cue holding most of the segment's aligned units, the earlier cue on a tie. A segment
    with no aligned unit (only insertions) is not matched."""
    return [(seg, max(owners, key=lambda cue: (owners.count(cue), -cue)))
            for seg, owners in _votes(reference, hypothesis, language, normalizer).items()]


def timestamp_errors(reference: list[Cue], hypothesis: list[HasTiming], language: str = "en",
                     normalizer: str = "auto") -> list[tuple[float | None, float | None]]:
    """(start error, end error) in seconds, hypothesis minus reference, per segment that holds
    aligned words (segments are placed by text alignment, not by nearest time).

    A segment's start is compared with the start of the cue its first aligned word belongs to,
    when no earlier segment holds words of that cue: a segment may begin with a cue, but one
    that continues a cue begun in another segment has no reference start (None). Ends alike,
    with the last word's cue and no later segment. So a segment holding two whole sentences is
    right at both edges, and a sentence split over two segments is judged at its outer edges.
    """
    owners = _votes(reference, hypothesis, language, normalizer)
    first_holder: dict[int, int] = {}
    last_holder: dict[int, int] = {}
    for seg, cues in owners.items():
        for cue in cues:
            first_holder.setdefault(cue, seg)
            last_holder[cue] = seg
    return [(hypothesis[seg].start - reference[cues[0]].start if first_holder[cues[0]] == seg else None,
             hypothesis[seg].end - reference[cues[-1]].end if last_holder[cues[-1]] == seg else None)
            for seg, cues in owners.items()]


def start_errors(reference: list[Cue], hypothesis: list[HasTiming], language: str = "en",
                 normalizer: str = "auto") -> list[float]:
    """The start errors of `timestamp_errors` that have a reference start."""
    return [start for start, _ in timestamp_errors(reference, hypothesis, language, normalizer)
            if start is not None]


def _speech_intervals(reference: Sequence[HasTiming]) -> list[tuple[float, float]]:
    """The cues with text, as sorted time intervals with overlapping ones merged."""
    merged: list[list[float]] = []
    for start, end in sorted((c.start, c.end) for c in reference if c.text.strip()):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _silences(reference: Sequence[HasTiming], audio_end: float,
              min_gap: float) -> list[tuple[float, float]]:
    """Stretches without a reference cue longer than `min_gap`: before the first cue, between
    cues, and after the last one (up to `audio_end`, the last hypothesis time)."""
    speech = _speech_intervals(reference)
    if not speech:
        return [(0.0, float("inf"))] if audio_end > min_gap else []
    gaps = [(0.0, speech[0][0])] + [(a[1], b[0]) for a, b in zip(speech, speech[1:])]
    gaps = [(a, b) for a, b in gaps if b - a > min_gap]
    if audio_end - speech[-1][1] > min_gap:
        gaps.append((speech[-1][1], float("inf")))
    return gaps


def timed_units(segment: HasTiming, language: str,
                normalize: Callable[[str], str]) -> list[tuple[str, float]]:
    """Each unit of a segment with its time (midpoint): from its word timestamps when it has
    them, else the segment's units spread evenly over its span."""
    words = getattr(segment, "words", None)
    if words:
        return [(unit, (w.start + w.end) / 2) for w in words
                for unit in units(normalize(getattr(w, "word", "")), language)]
    found = units(normalize(segment.text), language)
    step = (segment.end - segment.start) / len(found) if found else 0.0
    return [(unit, segment.start + (i + 0.5) * step) for i, unit in enumerate(found)]


def words_in_silences(reference: list[Cue], hypothesis: list[HasTiming], min_gap: float = 1.0,
                      language: str = "en", normalizer: str = "none") -> int:
    """Hypothesis words whose time falls inside a reference silence longer than `min_gap` s.

    A silence is a gap between reference cues (cues without text do not count as speech), the
    stretch before the first cue, or the one after the last cue (measured up to the last
    hypothesis time). A word's time is its midpoint: from its word timestamps when the segment
    has a `.words` list (objects with start/end/word), else the segment's words are spread
    evenly over its span. Words are counted after `normalizer` (none: as written).
    """
    normalize = get_normalizer(normalizer, language)
    audio_end = max((s.end for s in hypothesis), default=0.0)
    silences = _silences(reference, audio_end, min_gap)
    count = 0
    for segment in hypothesis:
        for _, t in timed_units(segment, language, normalize):
            count += any(a < t < b for a, b in silences)
    return count


def summarize(values: Sequence[float]) -> dict:
    """`median` and `p90` of the absolute values (numpy percentiles, linear), and `count`;
    median and p90 are None for no values."""
    if len(values) == 0:
        return {"median": None, "p90": None, "count": 0}
    magnitudes = np.abs(np.asarray(values, dtype=float))
    return {"median": float(np.percentile(magnitudes, 50)),
            "p90": float(np.percentile(magnitudes, 90)), "count": int(magnitudes.size)}


# --- hallucination -------------------------------------------------------------------------

def repeated_ngram_counts(words: Sequence[str], n: int = REPEAT_N) -> tuple[int, int]:
    """(n-grams that already occurred earlier in the text, all n-grams of the text)."""
    total = max(len(words) - n + 1, 0)
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for i in range(total):
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeated += 1
        else:
            seen.add(gram)
    return repeated, total


def repeated_ngram_rate(words: Sequence[str], n: int = REPEAT_N) -> float:
    """Fraction of the text's n-grams (overlapping, n consecutive words) that already occurred
    earlier in the same text: distil-whisper's repeated 5-gram measure of looping, as a rate.
    0.0 when the text has fewer than n + 1 words (no n-gram can repeat).
    """
    repeated, total = repeated_ngram_counts(words, n)
    return repeated / total if len(words) > n else 0.0


def longest_repeated_run(words: Sequence[str]) -> int:
    """The longest stretch of consecutive words that repeat the span just before them (a loop).

    For a period p, a run is a stretch of words each equal to the word p places earlier; it
    counts when it is at least p long (so its first p words repeat the p words before them).
    "a b c a b c a b c" -> 6 (p = 3); "sat sat sat" -> 2 (p = 1); no repetition -> 0.
    """
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(w, len(index)) for w in words], dtype=np.int64)
    n, best = len(ids), 0
    for p in range(1, n // 2 + 1):
        if best >= n - p:  # no run of this period or a longer one can be longer
            break
        same = np.concatenate(([0], (ids[p:] == ids[:-p]).astype(np.int8), [0]))
        edges = np.diff(same)
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        if runs.size and runs.max() >= p:
            best = max(best, int(runs.max()))
    return best


def hallucination_indicators(reference: str, hypothesis: str, language: str = "en",
                             normalizer: str = "auto") -> dict:
    """Marks of hallucination in `hypothesis`, after the WER's normaliser and alignment.

    insertion_rate: inserted units / reference units (None for an empty reference; the count
                    is in `insertions`, with `reference_words`);
    repeated_5gram_rate: see `repeated_ngram_rate`; longest_repeated_run: see
    `longest_repeated_run` (both on the normalised hypothesis).
    """
    normalize = get_normalizer(normalizer, language)
    ref = units(normalize(reference), language)
    hyp = units(normalize(hypothesis), language)
    insertions = _insertions(ref, hyp)
    return {"insertion_rate": insertions / len(ref) if ref else None,
            "insertions": insertions, "reference_words": len(ref),
            "repeated_5gram_rate": repeated_ngram_rate(hyp, REPEAT_N),
            "longest_repeated_run": longest_repeated_run(hyp)}


# --- reading timed transcripts -------------------------------------------------------------

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _word(entry, path, i: int, j: int) -> Word:
    text = entry.get("word", entry.get("text")) if isinstance(entry, dict) else None
    if not (isinstance(text, str) and _number(entry.get("start")) and _number(entry.get("end"))):
        raise SubtitleError(f'{path}: segment {i}: word {j} needs "word", "start" and "end"')
    probability = entry.get("probability")
    return Word(float(entry["start"]), float(entry["end"]), text,
                float(probability) if _number(probability) else 0.0)


def _timed_segments(data, path) -> list[Timed] | None:
    segments = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(segments, list):
        return None  # text only
    timed = [isinstance(s, dict) and _number(s.get("start")) and _number(s.get("end"))
             for s in segments]
    if not any(timed):
        return None if segments else []
    out = []
    for i, (segment, ok) in enumerate(zip(segments, timed)):
        if not ok or not isinstance(segment.get("text", ""), str):
            raise SubtitleError(f'{path}: segment {i}: needs numeric "start" and "end" and a '
                                f'"text" string, as the others have')
        words = segment.get("words") or []
        if not isinstance(words, list):
            raise SubtitleError(f'{path}: segment {i}: "words" is not a list')
        out.append(Timed(float(segment["start"]), float(segment["end"]),
                         segment.get("text", ""),
                         tuple(_word(w, path, i, j) for j, w in enumerate(words))))
    return out


def read_timed(path: str | Path) -> list[Timed] | None:
    """The timed segments of a transcript: .srt/.vtt cues, or a JSON's segments with start/end
    (and `words` when present). None for a transcript without times (.txt, JSON of text only).

    Raises SubtitleError (one line naming the file) on a file that cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SUBTITLE_SUFFIXES:
        return [Timed(c.start, c.end, c.text) for c in read_subtitles(path)]
    if suffix != ".json":
        return None
    try:
        data = json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise SubtitleError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return _timed_segments(data, path)


# --- per file and per run, as the evaluate command reports them ----------------------------

def transcript_quality(reference_cues: list | None, segments: list | None, hypothesis: str,
                       language: str = "en", normalizer: str = "auto",
                       silence_gap: float = 1.0) -> dict:
    """The measures of one recognised transcript beside its error counts: timestamp errors and
    words in silences (None/empty unless both sides have times), and the loop measures."""
    hyp = units(get_normalizer(normalizer, language)(hypothesis), language)
    repeated, total = repeated_ngram_counts(hyp, REPEAT_N)
    timed = reference_cues is not None and segments is not None
    errors = timestamp_errors(reference_cues, segments, language, normalizer) if timed else []
    return {"start_errors": [round(start, 3) for start, _ in errors if start is not None],
            "end_errors": [round(end, 3) for _, end in errors if end is not None],
            "repeated_5gram_rate": repeated_ngram_rate(hyp, REPEAT_N),
            "repeated_5grams": repeated, "hypothesis_5grams": total,
            "longest_repeated_run": longest_repeated_run(hyp),
            "words_in_silences": (words_in_silences(reference_cues, segments, silence_gap,
                                                    language, normalizer) if timed else None)}


def pooled_summary(files: list[dict], probes: list[dict] | None = None) -> dict:
    """The run's measures over all its files (entries as `transcript_quality` gives, with
    `insertions` and `reference_words`): timestamp errors pooled, rates over the totals, the
    longest loop of any file, words in silences summed (None when no file was timed)."""
    inserted = sum(f["insertions"] for f in files)
    reference = sum(f["reference_words"] for f in files)
    grams = sum(f["hypothesis_5grams"] for f in files)
    silences = [f["words_in_silences"] for f in files if f["words_in_silences"] is not None]
    return {
        "start_error": summarize([e for f in files for e in f["start_errors"]]),
        "end_error": summarize([e for f in files for e in f["end_errors"]]),
        "insertion_rate": inserted / reference if reference else None,
        "insertions": inserted, "reference_words": reference,
        "repeated_5gram_rate": sum(f["repeated_5grams"] for f in files) / grams if grams else 0.0,
        "longest_repeated_run": max((f["longest_repeated_run"] for f in files), default=0),
        "words_in_silences": sum(silences) if silences else None,
        "timed_files": len(silences),
        "probe_words": None if probes is None else sum(p["words"] for p in probes),
    }


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f}%"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def quality_lines(summary: dict, unit: str = "words") -> list[str]:
    """The lines printed after the error rates: segment timing, then marks of hallucination."""
    lines = []
    untimed = "n/a (needs timed references and transcripts)"
    for kind in ("start", "end"):
        s = summary[f"{kind}_error"]
        if s["count"]:
            found = (f"median {_seconds(s['median'])}, p90 {_seconds(s['p90'])} "
                     f"({s['count']} segments)")
        else:
            found = ("n/a (no segment matched a reference cue)" if summary["timed_files"]
                     else untimed)
        lines.append(f"Segment {kind} error: {found}")
    lines += [f"Insertion rate: {_percent(summary['insertion_rate'])} ({summary['insertions']} "
              f"inserted / {summary['reference_words']} reference {unit})",
              f"Repeated 5-gram rate: {_percent(summary['repeated_5gram_rate'])}",
              f"Longest repeated run: {summary['longest_repeated_run']} {unit}"]
    silences = summary["words_in_silences"]
    lines.append(f"Words in reference silences: {untimed if silences is None else silences}")
    return lines


def _file_values(entry: dict) -> list[tuple[str, object, str]]:
    """(short label, value, kind) of the measures shown for one file."""
    return [("start", summarize(entry["start_errors"])["median"], "seconds"),
            ("end", summarize(entry["end_errors"])["median"], "seconds"),
            ("ins", entry["insertion_rate"], "rate"),
            ("rep5", entry["repeated_5gram_rate"], "rate"),
            ("run", entry["longest_repeated_run"], "count"),
            ("sil", entry["words_in_silences"], "count")]


def file_quality_lines(files: list[dict]) -> list[str]:
    """One line per file: median |start| and |end| error, insertion rate, repeated 5-gram rate,
    longest repeated run, words in reference silences."""
    width = max((len(f["name"]) for f in files), default=0)
    lines = ["Per file (start/end: median segment time error; ins: insertion rate; rep5: "
             "repeated 5-gram rate; run: longest repeated run; sil: words in reference silences):"]
    for f in files:
        cells = [f"{label} {_value(value, kind):>{0 if kind == 'count' else 7}}"
                 for label, value, kind in _file_values(f)]
        lines.append(f"  {f['name']:<{width}}  " + "  ".join(cells))
    return lines


def probe_lines(probes: list[dict] | None, model: str | None, verbose: bool = False) -> list[str]:
    """`Probe words (MODEL): silence 0, ...` and, verbose, what was written on each probe."""
    if probes is None:
        return []
    counts = ", ".join(f"{p['name']} {p['words']}" for p in probes)
    lines = [f"Probe words ({model}): {counts} (total {sum(p['words'] for p in probes)}; "
             f"0 is right)"]
    if verbose:
        lines += [f"  {p['name']}: {p['text']!r}" for p in probes]
    return lines


# (label, where in a run's summary, kind); "{metric}" is filled in
COMPARED = (
    ("Unweighted Average {metric}", ("wer_unweighted",), "rate"),
    ("Weighted Average {metric}", ("wer_weighted",), "rate"),
    ("Unweighted Average {metric} (raw)", ("wer_unweighted_raw",), "rate"),
    ("Weighted Average {metric} (raw)", ("wer_weighted_raw",), "rate"),
    ("Segment start error, median", ("start_error", "median"), "seconds"),
    ("Segment start error, p90", ("start_error", "p90"), "seconds"),
    ("Segment end error, median", ("end_error", "median"), "seconds"),
    ("Segment end error, p90", ("end_error", "p90"), "seconds"),
    ("Insertion rate", ("insertion_rate",), "rate"),
    ("Repeated 5-gram rate", ("repeated_5gram_rate",), "rate"),
    ("Longest repeated run", ("longest_repeated_run",), "count"),
    ("Words in reference silences", ("words_in_silences",), "count"),
    ("Probe words", ("probe_words",), "count"),
)


def _value(value, kind: str) -> str:
    if value is None:
        return "n/a"
    return {"rate": _percent, "seconds": _seconds, "count": str}[kind](value)


def _delta(before, after, kind: str) -> str:
    """after - before: percentage points for rates."""
    if before is None or after is None:
        return "n/a"
    change = after - before
    if kind == "rate":
        return f"{change * 100:+.2f} pts"
    return f"{change:+.2f} s" if kind == "seconds" else f"{change:+d}"


def _side_by_side(before, after, kind: str) -> str:
    return f"{_value(before, kind)} -> {_value(after, kind)} ({_delta(before, after, kind)})"


def _file_comparison(before: dict, after: dict, metric: str) -> str:
    cells = [f"{metric} {_side_by_side(before['rate'], after['rate'], 'rate')}"]
    cells += [f"{label} {_side_by_side(old, new, kind)}" for (label, old, kind), (_, new, _)
              in zip(_file_values(before), _file_values(after))]
    return "  ".join(cells)


def comparison_lines(before: dict, after: dict, metric: str = "WER", verbose: bool = False,
                     raw: bool = True) -> list[str]:
    """Two runs (as `EvaluatedRun.to_dict` gives them) side by side with the change, after -
    before (rates in percentage points); verbose: each file in both runs too. `raw`: include
    the scores before normalisation."""
    lines = []
    if verbose:
        earlier = {f["name"]: f for f in before["files"]}
        files = [(f, earlier[f["name"]]) for f in after["files"] if f["name"] in earlier]
        width = max((len(f["name"]) for f, _ in files), default=0)
        lines.append("Per file, before -> after (delta):")
        lines += [f"  {f['name']:<{width}}  {_file_comparison(b, f, metric)}" for f, b in files]
    lines.append(f"Before ({before.get('label')}) vs after ({after.get('label')}); "
                 f"delta = after - before:")
    rows = [row for row in COMPARED if raw or "(raw)" not in row[0]]
    if before["summary"]["probe_words"] is None and after["summary"]["probe_words"] is None:
        rows = [row for row in rows if row[1] != ("probe_words",)]
    labels = [label.format(metric=metric) for label, _, _ in rows]
    width = max(len(label) for label in labels)
    lines.append(f"  {'':<{width}}  {'before':>10}  {'after':>10}  {'delta':>12}")
    for label, (_, path, kind) in zip(labels, rows):
        values = []
        for run in (before, after):
            value = run["summary"]
            for key in path:
                value = value[key]
            values.append(value)
        lines.append(f"  {label:<{width}}  {_value(values[0], kind):>10}  "
                     f"{_value(values[1], kind):>10}  {_delta(*values, kind):>12}")
    return lines
