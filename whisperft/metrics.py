"""Word and character error rates of transcripts against references, the way Whisper reports them.

Every pair is scored twice: raw (only whitespace collapsed) and after a normaliser, because a
model that writes "Mr. Smith's 2 cats" where the reference says "mister smith's two cats" has
not misheard anything, while the raw score still shows formatting drift after fine-tuning.
Normalisers are Whisper's own: the English one for English, the basic one for other languages
(transformers ships both; the English spelling table it needs is bundled, see
`english_spelling.LICENSE`). jiwer aligns the text and counts the errors.

Two averages, as `calculate_metric.py` prints them:
  unweighted = mean of the per-file rates (each file counts the same, however short);
  weighted   = corpus rate, total errors / total reference words (each word counts the same).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import UserError
from .tokens import NO_SPACE_LANGUAGES, language_code
from .options import opt
from .fileio import write_json_atomic
from .subtitles import TRANSCRIPT_SUFFIXES

METRICS = ("WER", "CER")
NORMALIZERS = ("auto", "whisper", "basic", "none")


ENGLISH_SPELLING_FILE = Path(__file__).with_name("english_spelling.json")


# --- normalisers ---------------------------------------------------------------------------

def resolve_normalizer(name: str, language: str | None) -> str:
    """`auto` -> `whisper` for English, `basic` for any other (or unknown) language."""
    key = (name or "auto").strip().lower()
    if key not in NORMALIZERS:
        raise UserError(f"unknown normalizer {name!r}: choose one of {', '.join(NORMALIZERS)}")
    if key == "auto":
        # An unknown language gets the basic normaliser: the English one rewrites numbers and
        # spellings, which would corrupt text in another language.
        return "whisper" if language == "en" else "basic"
    return key


def resolve_metric(metric: str | None, language: str) -> str:
    """`WER`/`CER` in any case; None picks CER for languages written without spaces."""
    if metric is None or not metric.strip():
        return "CER" if language in NO_SPACE_LANGUAGES else "WER"
    key = metric.strip().upper()
    if key not in METRICS:
        raise UserError(f"unknown metric {metric!r}: choose WER or CER")
    return key


@functools.lru_cache(maxsize=None)
def _english_spelling() -> dict[str, str]:
    try:
        return json.loads(ENGLISH_SPELLING_FILE.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{ENGLISH_SPELLING_FILE}: cannot read the English spelling table "
                        f"({exc.strerror}); reinstall whisperft") from None


def _keep_text(text: str) -> str:
    return text


@functools.lru_cache(maxsize=None)
def _normalizer(resolved: str) -> Callable[[str], str]:
    if resolved == "none":
        return _keep_text
    from transformers.models.whisper.english_normalizer import (BasicTextNormalizer,
                                                                EnglishTextNormalizer)
    if resolved == "whisper":
        return EnglishTextNormalizer(_english_spelling())
    return BasicTextNormalizer()


def get_normalizer(name: str, language: str | None) -> Callable[[str], str]:
    """The text normaliser `name` (auto|whisper|basic|none) for `language` (a code, or None).

    whisper: Whisper's English normaliser (numbers to digits, British to American spelling,
             contractions expanded, fillers and bracketed text removed), whatever the language;
    basic:   Whisper's basic normaliser (lower case, punctuation and bracketed text removed);
    none:    the text unchanged;
    auto:    whisper for English, basic otherwise (also when the language is unknown).
    """
    return _normalizer(resolve_normalizer(name, language))


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
    normalize = _normalizer(resolved)
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


def evaluate(opts: EvaluateOptions) -> int:
    """Score each recognized transcript against the reference of the same name; print the report.

    Returns 0, or 1 when a transcript had no counterpart or could not be read (each is listed).
    """
    from .subtitles import read_text

    # Resolve everything the user typed before touching files, so a typo fails at once.
    language = language_code(opts.language, default="en")
    metric = resolve_metric(opts.metric, language)
    resolved = resolve_normalizer(opts.normalizer, language)
    json_path = Path(opts.json) if opts.json else None
    exclude = [json_path] if json_path else []  # a report written into a scanned folder

    hypotheses = find_transcripts(opts.recognized_dir, "--recognized-dir", exclude)
    references = find_transcripts(opts.transcript_dir, "--transcript-dir", exclude)
    names = sorted(hypotheses.keys() & references.keys())
    if not names:
        raise UserError(f"no recognized transcript in {opts.recognized_dir} has a reference "
                        f"with the same name in {opts.transcript_dir} (e.g. "
                        f"{next(iter(hypotheses.values())).name} vs "
                        f"{next(iter(references.values())).name})")

    print(f"Processing {len(names)} file{'s' if len(names) != 1 else ''}...", flush=True)
    pairs: list[tuple[str, str, str]] = []
    unreadable: dict[str, str] = {}
    for name in names:
        texts = []
        for path in (references[name], hypotheses[name]):
            try:
                texts.append(read_text(path))
            except (UserError, ValueError, OSError) as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                # SubtitleError already starts with the file name; the listing adds it once.
                unreadable[str(path)] = why.removeprefix(f"{path}: ")
                break
        if len(texts) == 2:
            pairs.append((name, texts[0], texts[1]))

    report = score(pairs, metric=metric, normalizer=resolved, language=language)
    report.missing_references = [hypotheses[n].name
                                 for n in sorted(hypotheses.keys() - references.keys())]
    report.missing_hypotheses = [references[n].name
                                 for n in sorted(references.keys() - hypotheses.keys())]
    report.unreadable = unreadable

    if opts.verbose:
        for line in report.file_lines():
            print(line)
    for line in report.summary_lines():
        print(line)

    if report.missing_references:
        _list_files(f"No reference in {opts.transcript_dir} for "
                    f"{len(report.missing_references)} recognized transcript(s):",
                    report.missing_references)
    if report.missing_hypotheses:
        _list_files(f"No recognized transcript in {opts.recognized_dir} for "
                    f"{len(report.missing_hypotheses)} reference(s):", report.missing_hypotheses)
    if unreadable:
        _list_files(f"Could not read {len(unreadable)} file(s); their pairs were not scored:",
                    [f"{path}: {why}" for path, why in unreadable.items()])
    empty = report.empty_references()
    if empty:
        _list_files(f"{len(empty)} reference(s) empty after normalisation; no per-file "
                    f"{metric}, left out of the unweighted average:", empty)

    if json_path is not None:
        data = report.to_dict()
        data["recognized_dir"] = str(opts.recognized_dir)
        data["transcript_dir"] = str(opts.transcript_dir)
        for entry in data["files"]:
            entry["reference_path"] = str(references[entry["name"]])
            entry["hypothesis_path"] = str(hypotheses[entry["name"]])
        write_json_atomic(json_path, data)
    return 0 if report.complete else 1
