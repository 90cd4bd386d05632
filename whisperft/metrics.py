"""Word and character error rates of transcripts against references, the way Whisper reports them.

Every pair is scored twice: raw (only whitespace collapsed) and after a normaliser, because a
model that writes "Mr. Smith's 2 cats" where the reference says "mister smith's two cats" has
not misheard anything, while the raw score still shows formatting drift after fine-tuning.
Normalisers are Whisper's own: the English one for English, the basic one for other languages
(see normalizers.py). jiwer aligns the text and counts the errors.

Two averages, as `calculate_metric.py` prints them:
  unweighted = mean of the per-file rates (each file counts the same, however short);
  weighted   = corpus rate, total errors / total reference words (each word counts the same).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import UserError
from .tokens import NO_SPACE_LANGUAGES, language_code
from .options import opt
from .fileio import write_json_atomic
from .subtitles import TRANSCRIPT_SUFFIXES
# get_normalizer is importable from here, beside the scoring it serves
from .normalizers import NORMALIZERS, get_normalizer, normalizer_for, resolve_normalizer

METRICS = ("WER", "CER")


def resolve_metric(metric: str | None, language: str) -> str:
    """`WER`/`CER` in any case; None picks CER for languages written without spaces."""
    if metric is None or not metric.strip():
        return "CER" if language in NO_SPACE_LANGUAGES else "WER"
    key = metric.strip().upper()
    if key not in METRICS:
        raise UserError(f"unknown metric {metric!r}: choose WER or CER")
    return key


# --- scoring -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Edits that turn a reference into a hypothesis, in words (WER) or characters (CER)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int  # words or characters in the reference

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        # An empty reference has no rate (errors / 0); its insertions still count in the
        # weighted average, so a hallucination on a silent clip is not lost.
        return self.errors / self.reference_length if self.reference_length else None

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                      self.insertions + other.insertions,
                      self.reference_length + other.reference_length)

    def to_dict(self) -> dict:
        return {"substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "errors": self.errors,
                "reference_length": self.reference_length, "rate": self.rate}


ZERO = Counts(0, 0, 0, 0)


@dataclass(frozen=True)
class FileScore:
    name: str
    counts: Counts  # after normalisation
    raw: Counts  # before normalisation (whitespace collapsed only)


def _format_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f}%"


def _mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


@dataclass
class Report:
    """Scores of matched transcript pairs, plus the files that could not be paired or read."""

    metric: str  # "WER" or "CER"
    normalizer: str  # the resolved one: whisper, basic or none
    language: str
    files: list[FileScore]
    missing_references: list[str] = field(default_factory=list)  # hypotheses without a reference
    missing_hypotheses: list[str] = field(default_factory=list)  # references without a hypothesis
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> why

    def totals(self, raw: bool = False) -> Counts:
        return sum((f.raw if raw else f.counts for f in self.files), ZERO)

    def unweighted_average(self, raw: bool = False) -> float | None:
        """Mean of per-file rates; files with an empty reference have no rate and are left out."""
        return _mean((f.raw if raw else f.counts).rate for f in self.files)

    def weighted_average(self, raw: bool = False) -> float | None:
        """Total errors / total reference length: the corpus rate."""
        return self.totals(raw).rate

    @property
    def complete(self) -> bool:
        """True when every transcript on either side was paired and read."""
        return not (self.missing_references or self.missing_hypotheses or self.unreadable)

    def empty_references(self) -> list[str]:
        return [f.name for f in self.files if f.counts.reference_length == 0]

    def file_lines(self) -> list[str]:
        """One line per file: normalised rate with its counts, then the raw rate."""
        unit = "words" if self.metric == "WER" else "chars"
        width = max((len(f.name) for f in self.files), default=0)
        lines = [f"Per file ({self.normalizer} normalizer; S substitutions, D deletions, "
                 f"I insertions, N reference {unit}):"]
        for f in self.files:
            c = f.counts
            line = (f"  {f.name:<{width}}  {self.metric} {_format_rate(c.rate):>8}  "
                    f"(S={c.substitutions} D={c.deletions} I={c.insertions} "
                    f"N={c.reference_length})")
            if self.normalizer != "none":
                line += f"  raw {_format_rate(f.raw.rate)}"
            lines.append(line)
        return lines

    def summary_lines(self) -> list[str]:
        """The two average lines, then the same before normalisation (if there was one)."""
        lines = [f"Unweighted Average {self.metric}: {_format_rate(self.unweighted_average())}",
                 f"Weighted Average {self.metric}: {_format_rate(self.weighted_average())}"]
        if self.normalizer != "none":
            lines += [f"Unweighted Average {self.metric} (raw): "
                      f"{_format_rate(self.unweighted_average(raw=True))}",
                      f"Weighted Average {self.metric} (raw): "
                      f"{_format_rate(self.weighted_average(raw=True))}"]
        return lines

    def to_dict(self) -> dict:
        """The full report; rates are fractions (0.0823 = 8.23%), null where undefined."""
        return {
            "metric": self.metric,
            "normalizer": self.normalizer,
            "language": self.language,
            "num_files": len(self.files),
            "unweighted_average": self.unweighted_average(),
            "weighted_average": self.weighted_average(),
            "totals": self.totals().to_dict(),
            "raw": {"unweighted_average": self.unweighted_average(raw=True),
                    "weighted_average": self.weighted_average(raw=True),
                    "totals": self.totals(raw=True).to_dict()},
            "files": [{"name": f.name, **f.counts.to_dict(), "raw": f.raw.to_dict()}
                      for f in self.files],
            "missing_references": list(self.missing_references),
            "missing_hypotheses": list(self.missing_hypotheses),
            "unreadable": dict(self.unreadable),
        }


def _prepare(text: str, metric: str, language: str) -> str:
    # Transcripts read from subtitles carry line breaks and doubled spaces from cue joins;
    # those are layout, not words, so they never count as errors. In a language written
    # without spaces any space is such an artefact: CER drops them all.
    if metric == "CER" and language in NO_SPACE_LANGUAGES:
        return "".join(text.split())
    return " ".join(text.split())


def count_errors(reference: str, hypothesis: str, metric: str = "WER",
                 language: str = "en") -> Counts:
    """S/D/I of `hypothesis` against `reference` (texts already normalised as wanted)."""
    import jiwer

    metric = resolve_metric(metric, language)
    ref = _prepare(reference, metric, language)
    hyp = _prepare(hypothesis, metric, language)
    hyp_length = len(hyp.split()) if metric == "WER" else len(hyp)
    if not ref:
        # jiwer refuses to score against nothing: every hypothesis unit is an insertion.
        return Counts(0, 0, hyp_length, 0)
    out = (jiwer.process_words if metric == "WER" else jiwer.process_characters)(ref, hyp)
    length = len(ref.split()) if metric == "WER" else len(ref)
    return Counts(out.substitutions, out.deletions, out.insertions, length)


def score(pairs: list[tuple[str, str, str]], metric: str | None = None, normalizer: str = "auto",
          language: str | None = "en") -> Report:
    """Score (name, reference, hypothesis) triples.

    metric: WER or CER (any case); None -> CER for languages written without spaces, else WER.
    normalizer: auto|whisper|basic|none, see `get_normalizer`. Raw counts are always kept too.
    """
    language = language_code(language, default="en")
    metric = resolve_metric(metric, language)
    resolved = resolve_normalizer(normalizer, language)
    normalize = normalizer_for(resolved)
    files = [FileScore(name,
                       count_errors(normalize(ref), normalize(hyp), metric, language),
                       count_errors(ref, hyp, metric, language))
             for name, ref, hyp in pairs]
    return Report(metric=metric, normalizer=resolved, language=language, files=files)


# --- the command ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluateOptions:
    recognized_dir: str = opt(help="folder of recognized transcripts (what transcribe.py wrote)",
                              metavar="DIR")
    transcript_dir: str = opt(help="folder of reference transcripts (.srt, .vtt or .txt), "
                                   "matched to recognized ones by file name without extension",
                              metavar="DIR")
    metric: str | None = opt(None, help="WER or CER (any case); default: CER for languages "
                                        "written without spaces (zh, ja, th, lo, my, ...), "
                                        "WER otherwise", metavar="WER|CER")
    verbose: bool = opt(False, help="print the score of every file")
    normalizer: str = opt("auto", help="text normaliser applied before scoring: whisper "
                                       "(Whisper's English one), basic (Whisper's one for other "
                                       "languages), none, or auto (whisper for English, basic "
                                       "otherwise); raw scores are printed too",
                          choices=NORMALIZERS)
    language: str = opt("en", help="language of the transcripts (code or name); picks the "
                                   "normaliser and the default metric")
    json: str | None = opt(None, help="also write the full report (per file: substitutions, "
                                      "deletions, insertions, reference length, rates) to this "
                                      "JSON file", metavar="PATH")
    compare: str | None = opt(None, help="a second folder of recognized transcripts of the same "
                                         "references (e.g. the base model's): every measure is "
                                         "printed for both, side by side with the change (after "
                                         "- before)", metavar="BEFORE_DIR")
    probes: str | None = opt(None, help="transcribe generated non-speech probes (10 s each of "
                                        "silence, white noise, mains hum and music) with this "
                                        "model and report the words it writes on each (0 is "
                                        "right)", metavar="MODEL")
    probes_before: str | None = opt(None, help="with --compare: the model to probe for the "
                                               "before folder", metavar="MODEL")
    silence_gap: float = opt(1.0, help="seconds without a reference cue that count as a "
                                       "silence, for the words recognized in silences")
    html: str | None = opt(None, help="also write the report as one self-contained HTML page",
                           metavar="PATH")


def find_transcripts(folder: str | Path, flag: str = "folder",
                     exclude: Iterable[Path] = ()) -> dict[str, Path]:
    """Transcripts in `folder` (not recursive) by file stem; one per stem, see TRANSCRIPT_SUFFIXES.

    Raises UserError naming the folder when it does not exist or holds no transcript.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{flag} {folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: not a folder")
    skip = {p.resolve() for p in exclude}
    rank = {ext: i for i, ext in enumerate(TRANSCRIPT_SUFFIXES)}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        ext = path.suffix.lower()
        if ext not in rank or path.name.startswith(".") or not path.is_file():
            continue
        if path.resolve() in skip:
            continue
        current = found.get(path.stem)
        if current is None or rank[ext] < rank[current.suffix.lower()]:
            found[path.stem] = path
    if not found:
        raise UserError(f"{flag} {folder}: no transcripts ({', '.join(TRANSCRIPT_SUFFIXES)}) "
                        f"in this folder")
    return found


def _list_files(title: str, names: list[str]) -> None:
    print(title, file=sys.stderr)
    for name in names:
        print(f"  {name}", file=sys.stderr)


@dataclass(frozen=True)
class _Pair:
    name: str
    reference: str
    hypothesis: str
    reference_cues: list | None  # None: the reference has no times (.txt)
    hypothesis_segments: list | None  # None: the transcript has no times


def _read_pairs(names: list[str], references: dict[str, Path], hypotheses: dict[str, Path]
                ) -> tuple[list[_Pair], dict[str, str]]:
    """The text and times of each pair; the files that cannot be read (path -> why)."""
    from .quality import read_timed
    from .subtitles import read_text

    pairs: list[_Pair] = []
    unreadable: dict[str, str] = {}
    for name in names:
        read = []
        for path in (references[name], hypotheses[name]):
            try:
                read.append((read_text(path), read_timed(path)))
            except (UserError, ValueError, OSError) as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                # SubtitleError already starts with the file name; the listing adds it once.
                unreadable[str(path)] = why.removeprefix(f"{path}: ")
                break
        if len(read) == 2:
            (ref, cues), (hyp, segments) = read
            pairs.append(_Pair(name, ref, hyp, cues, segments))
    return pairs, unreadable


@dataclass
class EvaluatedRun:
    """One folder of recognized transcripts scored against the references."""

    folder: str
    report: Report
    files: list[dict]  # per file: the counts, the texts and the quality measures
    probes: list[dict] | None = None  # per non-speech probe, when a model was probed
    probe_model: str | None = None

    def summary(self) -> dict:
        from .quality import pooled_summary

        r = self.report
        return {"wer_unweighted": r.unweighted_average(), "wer_weighted": r.weighted_average(),
                "wer_unweighted_raw": r.unweighted_average(raw=True),
                "wer_weighted_raw": r.weighted_average(raw=True),
                **pooled_summary(self.files, self.probes)}

    def to_dict(self) -> dict:
        return {"label": self.folder, "recognized_dir": self.folder,
                "probe_model": self.probe_model, "summary": self.summary(), "files": self.files,
                "probes": list(self.probes or [])}


def _file_entry(pair: _Pair, scored: FileScore, paths: tuple[Path, Path], language: str,
                normalizer: str, silence_gap: float) -> dict:
    from .quality import transcript_quality

    c = scored.counts
    return {"name": pair.name, "reference": pair.reference, "hypothesis": pair.hypothesis,
            "reference_path": str(paths[0]), "hypothesis_path": str(paths[1]),
            "rate": c.rate, "substitutions": c.substitutions, "deletions": c.deletions,
            "insertions": c.insertions, "reference_words": c.reference_length,
            "insertion_rate": c.insertions / c.reference_length if c.reference_length else None,
            **transcript_quality(pair.reference_cues, pair.hypothesis_segments, pair.hypothesis,
                                 language, normalizer, silence_gap)}


def _evaluate_folder(folder: str, flag: str, hypotheses: dict[str, Path],
                     references: dict[str, Path], opts: EvaluateOptions,
                     settings: tuple[str, str, str]) -> EvaluatedRun:
    """Score every transcript of `folder` that has a reference; list what could not be paired."""
    metric, resolved, language = settings
    names = sorted(hypotheses.keys() & references.keys())
    if not names:
        raise UserError(f"no recognized transcript in {folder} has a reference with the same "
                        f"name in {opts.transcript_dir} (e.g. "
                        f"{next(iter(hypotheses.values())).name} vs "
                        f"{next(iter(references.values())).name})")
    where = "" if flag == "--recognized-dir" else f" in {folder}"
    print(f"Processing {len(names)} file{'s' if len(names) != 1 else ''}{where}...", flush=True)
    pairs, unreadable = _read_pairs(names, references, hypotheses)
    report = score([(p.name, p.reference, p.hypothesis) for p in pairs], metric=metric,
                   normalizer=resolved, language=language)
    report.missing_references = [hypotheses[n].name
                                 for n in sorted(hypotheses.keys() - references.keys())]
    report.missing_hypotheses = [references[n].name
                                 for n in sorted(references.keys() - hypotheses.keys())]
    report.unreadable = unreadable
    files = [_file_entry(p, s, (references[p.name], hypotheses[p.name]), language, resolved,
                         opts.silence_gap) for p, s in zip(pairs, report.files)]
    return EvaluatedRun(str(folder), report, files)


def _probe(run: EvaluatedRun, model: str, language: str, resolved: str) -> None:
    from .probes import PROBE_NAMES, transcribe_probes
    from .quality import units

    print(f"Transcribing {len(PROBE_NAMES)} non-speech probes with {model}...", flush=True)
    normalize = normalizer_for(resolved)
    run.probes = transcribe_probes(model, lambda text: len(units(normalize(text), language)))
    run.probe_model = model


def _list_problems(run: EvaluatedRun, opts: EvaluateOptions, where: str = "") -> None:
    """On stderr: the transcripts without a counterpart, those unreadable, empty references."""
    report = run.report
    if report.missing_references:
        _list_files(f"No reference in {opts.transcript_dir} for "
                    f"{len(report.missing_references)} recognized transcript(s){where}:",
                    report.missing_references)
    if report.missing_hypotheses:
        _list_files(f"No recognized transcript in {run.folder} for "
                    f"{len(report.missing_hypotheses)} reference(s):", report.missing_hypotheses)
    if report.unreadable:
        _list_files(f"Could not read {len(report.unreadable)} file(s); their pairs were not "
                    f"scored:", [f"{path}: {why}" for path, why in report.unreadable.items()])
    empty = report.empty_references()
    if empty and not where:
        _list_files(f"{len(empty)} reference(s) empty after normalisation; no per-file "
                    f"{report.metric}, left out of the unweighted average:", empty)


def _results(after: EvaluatedRun, before: EvaluatedRun | None, opts: EvaluateOptions) -> dict:
    """The full report: the scores as `Report.to_dict` has them, and every run's measures."""
    data = after.report.to_dict()
    data["recognized_dir"] = str(opts.recognized_dir)
    data["transcript_dir"] = str(opts.transcript_dir)
    paths = {f["name"]: f for f in after.files}
    for entry in data["files"]:
        entry["reference_path"] = paths[entry["name"]]["reference_path"]
        entry["hypothesis_path"] = paths[entry["name"]]["hypothesis_path"]
    if before is not None:
        data["compare_dir"] = str(opts.compare)
    data["runs"] = {"after": after.to_dict()}
    if before is not None:
        data["runs"]["before"] = before.to_dict()
    return data


def evaluate(opts: EvaluateOptions) -> int:
    """Score each recognized transcript against the reference of the same name; print the report.

    Besides the error rates: segment timing against timed references, marks of hallucination,
    with --compare a second folder side by side, with --probes words written on non-speech.
    Returns 0, or 1 when a transcript had no counterpart or could not be read (each is listed).
    """
    from .quality import comparison_lines, file_quality_lines, probe_lines, quality_lines

    # Resolve everything the user typed before touching files, so a typo fails at once.
    language = language_code(opts.language, default="en")
    settings = (resolve_metric(opts.metric, language),
                resolve_normalizer(opts.normalizer, language), language)
    if opts.probes_before and not opts.compare:
        raise UserError("--probes-before probes the model of the --compare folder: give --compare")
    if opts.silence_gap < 0:
        raise UserError(f"--silence-gap {opts.silence_gap}: must be 0 or more seconds")
    outputs = [Path(p) for p in (opts.json, opts.html) if p]  # reports in a scanned folder

    hypotheses = find_transcripts(opts.recognized_dir, "--recognized-dir", outputs)
    references = find_transcripts(opts.transcript_dir, "--transcript-dir", outputs)
    earlier = find_transcripts(opts.compare, "--compare", outputs) if opts.compare else None
    after = _evaluate_folder(opts.recognized_dir, "--recognized-dir", hypotheses, references,
                             opts, settings)
    before = (None if earlier is None else
              _evaluate_folder(opts.compare, "--compare", earlier, references, opts, settings))
    for run, model in ((after, opts.probes), (before, opts.probes_before)):
        if run is not None and model:
            _probe(run, model, language, settings[1])

    unit = "words" if settings[0] == "WER" else "chars"
    summary = after.summary()
    lines = []
    if opts.verbose:
        lines += after.report.file_lines() + file_quality_lines(after.files)
    lines += after.report.summary_lines() + quality_lines(summary, unit)
    lines += probe_lines(after.probes, after.probe_model, opts.verbose)
    if before is not None:
        lines += comparison_lines(before.to_dict(), after.to_dict(), settings[0], opts.verbose,
                                  raw=settings[1] != "none")
    print("\n".join(lines))
    _list_problems(after, opts)
    if before is not None:
        _list_problems(before, opts, f" in {before.folder}")

    if opts.json or opts.html:
        results = _results(after, before, opts)
        if opts.json:
            write_json_atomic(Path(opts.json), results)
        if opts.html:
            from .report import write_html_report

            write_html_report(results, Path(opts.html))
    complete = after.report.complete and (before is None or before.report.complete)
    return 0 if complete else 1
