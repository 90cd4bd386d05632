"""`whisperft check-data` (also `create_data.py --check`): can these subtitles be trusted to
teach a model? For each recording and its subtitle file:

  - timing: a constant offset and a linear drift of the cue times against the speech a
    voice-activity detector hears (sync.py), with how sure the estimate is;
  - per cue: whether speech is there at all (the detector), and how far its text agrees with
    what a model hears (one transcription pass of the recording, its words aligned to the
    cues' words: WER and CER per cue);
  - structure: empty cues, cues that do not end after they start, overlapping cues, cues past
    the audio's end.

The findings are a JSON file and an HTML page (one line per problem a person can act on, worst
first). `prepare` reads the same findings to repair timing (`--fix-timing`) and leave out cues
whose text disagrees (`--max-cue-wer`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError
from .options import opt
from .sync import TimingFit, estimate_timing
from .transcription import BACKENDS
from .windows import AUDIO_END_TOLERANCE_MS, OVERLAP_TOLERANCE_MS, join_cue_lines

NO_SPEECH_SHARE = 0.2  # a cue with less of its time heard as speech than this has no speech
# check-data flags a cue whose character error rate against what the model heard is above this.
# Characters rather than words: a misheard word keeps most of its letters ("mangett" for "market"),
# so a model's slips cost a correct cue less, while a cue of wrong text stays high: one English
# sentence scored against another lands at 0.67-1.0 (bench_data_check's sets), while tiny.en's
# correct cues reach 0.5 on everyday speech and 0.66 on drug names it mishears.
DEFAULT_MAX_CUE_CER = 0.6

# Problem kinds, worst first (the page and the JSON list problems in this order).
UNREADABLE = "unreadable"
TIMING = "timing"
TIMING_UNSURE = "timing unsure"
PAST_END = "past the end"
NO_SPEECH = "no speech"
TEXT = "text disagrees"
UNHEARD = "not heard"  # speech under the cue, but the model wrote nothing there: not judged
REVERSED = "reversed"
OVERLAP = "overlap"
EMPTY = "empty"
PROBLEM_ORDER = (UNREADABLE, TIMING, PAST_END, NO_SPEECH, TEXT, REVERSED, OVERLAP, UNHEARD, TIMING_UNSURE,
                 EMPTY)


@dataclass
class CheckOptions:
    audio_dir: str = opt(None, "folder of recordings; each is paired with the .srt/.vtt of the same name")
    transcript_dir: str | None = opt(None, "folder of .srt/.vtt transcripts (default: --audio-dir)")
    model: str | None = opt(None, "model that listens: the one you will fine-tune (name, Hub id, folder, "
                                  ".pt); default tiny.en for English, base for other languages")
    language: str = opt("en", "language of the data: a code or a name")
    max_cue_cer: float = opt(DEFAULT_MAX_CUE_CER, "flag a cue whose text disagrees with what the model "
                                                  "heard by more than this character error rate")
    json: str = opt("data_check.json", "where to write the findings (JSON)")
    html: str | None = opt(None, "also write the findings as a self-contained HTML page")
    beam_size: int = opt(1, "beam width of the transcription pass (1 = greedy, fastest)")
    backend: str = opt("auto", "decoder of the transcription pass (as transcribe's --backend)",
                       choices=BACKENDS)
    device: str = opt("auto", "cuda, mps, cpu, or auto")
    threads: int = opt(0, "CPU threads (0: all cores)")


@dataclass
class CueCheck:
    """What the check found about one cue."""

    index: int  # 1-based position in the subtitle file
    start: float  # seconds, as written
    end: float
    text: str
    heard: str = ""  # the model's words aligned to this cue (normalised)
    wer: float | None = None  # None: no words to compare (an empty cue), or no model pass
    cer: float | None = None
    speech_share: float | None = None  # of the cue's (timing-corrected) span heard as speech
    problems: list[str] = field(default_factory=list)


@dataclass
class Problem:
    kind: str
    message: str  # one line a person can act on
    cue: int | None = None  # 1-based cue index, None for the whole file
    weight: float = 0.0  # how bad, within its kind (sorts worst first)


@dataclass
class FileCheck:
    audio: str
    subtitles: str
    duration: float = 0.0
    timing: TimingFit | None = None
    cues: list[CueCheck] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def corrected(self) -> bool:
        """Whether --fix-timing moves these cues: the fit is sure and they are off."""
        return self.timing is not None and self.timing.sure and self.timing.off(self.duration)

    def fix(self, time: float) -> float:
        """A cue time moved onto the speech when the timing is corrected, else as is."""
        return self.timing.to_speech(time) if self.corrected else time

    @property
    def sound(self) -> bool:
        return not any(p.kind not in (TIMING_UNSURE, UNHEARD) for p in self.problems)


# --- one recording -------------------------------------------------------------------------

def _structure(check: FileCheck, language: str) -> None:
    """Empty, reversed, overlapping and past-the-end cues (on the corrected times)."""
    previous_end = None
    for cue in check.cues:
        if not join_cue_lines(cue.text, language):
            cue.problems.append(EMPTY)
            check.problems.append(Problem(EMPTY, f"cue {cue.index} ({cue.start:.2f} s) has no text", cue.index))
            continue
        start, end = check.fix(cue.start), check.fix(cue.end)
        if end <= start:
            cue.problems.append(REVERSED)
            check.problems.append(Problem(REVERSED, f"cue {cue.index} ({cue.start:.2f} s) ends at "
                                                    f"{cue.end:.2f} s, not after it starts", cue.index))
        if end > check.duration + AUDIO_END_TOLERANCE_MS / 1000:
            cue.problems.append(PAST_END)
            check.problems.append(Problem(PAST_END, f"cue {cue.index} ({cue.start:.2f}-{cue.end:.2f} s) "
                                                    f"runs past the audio's end at {check.duration:.2f} s",
                                          cue.index, end - check.duration))
        if previous_end is not None and previous_end - start > OVERLAP_TOLERANCE_MS / 1000:
            cue.problems.append(OVERLAP)
            check.problems.append(Problem(OVERLAP, f"cue {cue.index} ({cue.start:.2f} s) starts before "
                                                   "the previous cue ends", cue.index, previous_end - start))
        previous_end = end if previous_end is None else max(previous_end, end)


def _timing(check: FileCheck, speech: list[tuple[float, float]]) -> None:
    spans = [(c.start, c.end) for c in check.cues if c.text.strip() and c.end > c.start]
    check.timing = fit = estimate_timing(spans, speech, check.duration)
    if fit is None:
        return
    if not fit.sure:
        check.problems.append(Problem(TIMING_UNSURE, f"timing could not be checked surely: {fit.describe()}"))
    elif fit.off(check.duration):
        where = "late" if fit.offset > 0 else "early"
        message = f"cues are off the speech by up to {fit.displacement(check.duration):.2f} s: {fit.describe()}"
        if fit.rate == 1.0:
            message = f"cues run {abs(fit.offset):.2f} s {where}: {fit.describe()}"
        check.problems.append(Problem(TIMING, message + "; --fix-timing corrects it",
                                      weight=fit.displacement(check.duration)))


def _speech(check: FileCheck, speech: list[tuple[float, float]]) -> None:
    from .vad import speech_share

    for cue in check.cues:
        if EMPTY in cue.problems or REVERSED in cue.problems:
            continue
        cue.speech_share = speech_share(speech, check.fix(cue.start), check.fix(cue.end))
        if cue.speech_share < NO_SPEECH_SHARE:
            cue.problems.append(NO_SPEECH)
            check.problems.append(Problem(NO_SPEECH, f"cue {cue.index} ({cue.start:.2f}-{cue.end:.2f} s) "
                                                     f"has no speech under it ({100 * cue.speech_share:.0f}% "
                                                     f"heard): {cue.text[:60]!r}", cue.index,
                                          1 - cue.speech_share))


def _agreement(check: FileCheck, segments, language: str, max_cue_cer: float) -> None:
    """Per-cue WER/CER of the cue text against the recognised words aligned to it."""
    from .agreement import cue_agreement

    # A cue over silence takes no recognised words: any the model wrote in its span spilled
    # over from the speech beside it, and judging them there would blame that speech's cue.
    # Its own words are all missing, so it scores 100%.
    texts = ["" if EMPTY in c.problems or NO_SPEECH in c.problems else c.text for c in check.cues]
    spans = [(check.fix(c.start), check.fix(c.end)) for c in check.cues]
    for cue, found in zip(check.cues, cue_agreement(texts, spans, segments, language)):
        if found is None:
            if NO_SPEECH in cue.problems:
                cue.wer = cue.cer = 1.0
            continue
        if not found[2] and NO_SPEECH not in cue.problems:
            # speech is there and the model wrote nothing: its miss or the cue's, no telling which
            cue.problems.append(UNHEARD)
            check.problems.append(Problem(UNHEARD, f"cue {cue.index} ({cue.start:.2f} s): the model heard "
                                                   f"no words of it, so its text is not judged: {cue.text[:60]!r}",
                                          cue.index))
            continue
        cue.wer, cue.cer, cue.heard = found
        if cue.cer > max_cue_cer and NO_SPEECH not in cue.problems:
            cue.problems.append(TEXT)
            check.problems.append(Problem(TEXT, f"cue {cue.index} ({cue.start:.2f} s) text disagrees with "
                                                f"the audio (CER {100 * cue.cer:.0f}%, WER {100 * cue.wer:.0f}%): {cue.text[:60]!r}, "
                                                f"heard {cue.heard[:60]!r}", cue.index, cue.cer))


def check_recording(audio, cues, audio_path: str, subtitle_path: str, *, segments=None,
                    language: str = "en", max_cue_cer: float = DEFAULT_MAX_CUE_CER) -> FileCheck:
    """The findings for one recording (16 kHz samples) and its cues; `segments`, the model's
    transcription of it (anything with .start/.end/.text), adds the text agreement per cue."""
    from .audio import SAMPLE_RATE
    from .vad import speech_intervals

    check = FileCheck(str(audio_path), str(subtitle_path), len(audio) / SAMPLE_RATE)
    check.cues = [CueCheck(i + 1, c.start, c.end, c.text) for i, c in enumerate(cues)]
    speech = speech_intervals(audio)
    _timing(check, speech)
    _structure(check, language)
    _speech(check, speech)
    if segments is not None:
        _agreement(check, segments, language, max_cue_cer)
    check.problems.sort(key=lambda p: (PROBLEM_ORDER.index(p.kind), -p.weight, p.cue or 0))
    return check


# --- a folder ------------------------------------------------------------------------------

def listening_model(model: str | None, language: str) -> str:
    """The model given, or the smallest bundled one that knows the language."""
    return model or ("tiny.en" if language == "en" else "base")


def load_listener(model: str | None, language: str, beam_size: int = 1, backend: str = "auto",
                  device: str = "auto", threads: int = 0):
    """The transcriber of the check's one pass. It is told to hear everything: no window is
    skipped as silence (the detector says where silence is, and a model unsure of domain words
    would otherwise drop whole windows of them), no window is prompted with the text before it
    (a loop there would be blamed on the cues), and nothing is sampled: the temperature
    fallback would redraw exactly the windows of unfamiliar words, so two checks of the same
    data would disagree about them."""
    from .transcribe import load_transcriber
    from .transcription import TranscribeOptions

    return load_transcriber(TranscribeOptions(
        model=listening_model(model, language), language=language, beam_size=beam_size, backend=backend,
        device=device, threads=threads, no_speech_threshold=math.inf, condition_on_previous_text=False,
        temperature_increment=0.0))


def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _pairs(audio_dir: str, transcript_dir: str | None) -> tuple[list, list[FileCheck]]:
    from .pairing import folder_pairs, no_pairs

    pairs, problems, _ = folder_pairs(audio_dir, transcript_dir)
    if not pairs:
        raise no_pairs(audio_dir, transcript_dir)
    return pairs, [FileCheck(p.split(": ", 1)[0], "", problems=[Problem(UNREADABLE, p)]) for p in problems]


def _loaded(pairs, failed: list[FileCheck]):
    """(index, (audio, cues, audio path, subtitle path)) of each pair that reads; those that do
    not go to `failed` with their one-line reason."""
    from .audio import load_audio
    from .subtitles import read_subtitles

    for i, (audio_path, subtitle_path) in enumerate(pairs):
        try:
            cues = read_subtitles(subtitle_path)
            audio = load_audio(audio_path)
        except UserError as exc:
            _say(f"skipped: {exc}")
            failed.append(FileCheck(str(audio_path), str(subtitle_path), problems=[Problem(UNREADABLE, str(exc))]))
            continue
        yield i, (audio, cues, audio_path, subtitle_path)


def check_pairs(pairs, language: str, transcriber=None, max_cue_cer: float = DEFAULT_MAX_CUE_CER,
                progress: Callable | None = None) -> list[FileCheck]:
    """Findings for (audio path, subtitle path) pairs; with a `transcriber` (a loaded backend,
    see transcribe.load_transcriber) one transcription pass adds the per-cue text agreement.
    A file that cannot be read is a finding too; the batch goes on. Files are read as the
    transcriber takes them and dropped when their findings are made, so memory holds only
    the files in flight."""
    failed: list[FileCheck] = []
    in_flight: dict[int, tuple] = {}
    results: dict[int, FileCheck] = {}

    def feed():
        for i, item in _loaded(pairs, failed):
            in_flight[i] = item
            yield i, item[0]

    outcomes = transcriber.run(feed()) if transcriber is not None else ((i, None) for i, _ in feed())
    for i, result in outcomes:
        audio, cues, a, s = in_flight.pop(i)
        if isinstance(result, Exception):
            failed.append(FileCheck(str(a), str(s), problems=[Problem(UNREADABLE, f"{a}: {result}")]))
            continue
        results[i] = check_recording(audio, cues, a, s, segments=None if result is None else result.segments,
                                     language=language, max_cue_cer=max_cue_cer)
        if progress:
            progress()
    return [results[i] for i in sorted(results)] + failed


def summarize(files: list[FileCheck]) -> dict:
    """How much of the data looks sound: files, cues and cue seconds without a problem."""
    cues = [c for f in files for c in f.cues if EMPTY not in c.problems]
    sound = [c for c in cues if not c.problems]
    seconds = sum(max(0.0, c.end - c.start) for c in cues)
    sound_seconds = sum(max(0.0, c.end - c.start) for c in sound)
    kinds: dict[str, int] = {}
    for f in files:
        for p in f.problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
    return {"files": len(files), "files_sound": sum(f.sound for f in files),
            "cues": len(cues), "cues_sound": len(sound),
            "cue_seconds": round(seconds, 2), "sound_share": round(sound_seconds / seconds, 4) if seconds else None,
            "problems": {k: kinds[k] for k in PROBLEM_ORDER if k in kinds}}


def file_json(check: FileCheck) -> dict:
    fit = check.timing
    timing = None if fit is None else {
        "offset": round(fit.offset, 4), "rate": round(fit.rate, 6), "drift": round(fit.drift, 6),
        "sure": fit.sure, "off": fit.off(check.duration), "paired_edges": fit.paired, "edges": fit.edges,
        "residual": None if math.isinf(fit.residual) else round(fit.residual, 4),
        "offset_error": None if math.isinf(fit.offset_error) else round(fit.offset_error, 4),
        "applied_by_fix_timing": check.corrected, "description": fit.describe()}
    return {"audio": check.audio, "subtitles": check.subtitles, "duration": round(check.duration, 3),
            "sound": check.sound, "timing": timing,
            "problems": [{"kind": p.kind, "rank": PROBLEM_ORDER.index(p.kind), "cue": p.cue, "message": p.message,
                          "weight": round(p.weight, 4)}
                         for p in check.problems],
            "cues": [{"index": c.index, "start": c.start, "end": c.end, "text": c.text, "heard": c.heard,
                      "wer": None if c.wer is None else round(c.wer, 4),
                      "cer": None if c.cer is None else round(c.cer, 4),
                      "speech_share": None if c.speech_share is None else round(c.speech_share, 3),
                      "problems": c.problems} for c in check.cues]}


def findings_json(files: list[FileCheck], opts: CheckOptions | None = None) -> dict:
    data = {"summary": summarize(files), "files": [file_json(f) for f in files]}
    if opts is not None:
        data["settings"] = {"model": opts.model, "language": opts.language, "max_cue_cer": opts.max_cue_cer,
                            "beam_size": opts.beam_size}
    return data


def findings_for_prepare(pairs, language: str, output: str, *, listen: bool, model: str | None,
                         report: str | None) -> dict[str, dict]:
    """What `create_data.py --check/--fix-timing/--max-cue-*` repairs by: the findings of an
    earlier run (`report`), or found now and written beside the manifest `output` as
    OUTPUT-STEM_check.json (and .html after a model pass, which only `listen` asks for: timing
    needs the voice-activity detector alone)."""
    from .fileio import write_json_atomic
    from .repairs import index_findings, read_findings

    if report:
        return read_findings(report)
    transcriber = load_listener(model, language) if listen else None
    data = findings_json(check_pairs(pairs, language, transcriber))
    path = Path(output).with_name(Path(output).stem + "_check.json")
    write_json_atomic(path, data)
    if listen:
        from .datacheck_page import write_check_page

        write_check_page(data, path.with_suffix(".html"))
    _say(f"data check: {data['summary']['cues_sound']} of {data['summary']['cues']} cues look sound -> {path}")
    return index_findings(data["files"])


def problem_lines(files: list[FileCheck]) -> list[str]:
    """One line per problem, worst first across files."""
    found = [(PROBLEM_ORDER.index(p.kind), -p.weight, f.audio, p.message) for f in files for p in f.problems]
    return [f"{Path(audio).name}: {message}" for *_, audio, message in sorted(found)]


def check_data(opts: CheckOptions) -> int:
    """Check every recording under `opts.audio_dir`. The findings are the output: 0 when every
    file was checked, 1 when some could not be read (as prepare does)."""
    from tqdm import tqdm

    from .fileio import write_json_atomic
    from .tokens import language_code

    if not opts.audio_dir:
        raise UserError("check-data needs --audio-dir")
    if not 0 <= opts.max_cue_cer:
        raise UserError("--max-cue-cer must be 0 or more")
    language = language_code(opts.language, default="en")
    pairs, unreadable = _pairs(opts.audio_dir, opts.transcript_dir)
    for f in unreadable:
        _say(f"skipped: {f.problems[0].message}")
    opts.model = listening_model(opts.model, language)
    transcriber = load_listener(opts.model, language, opts.beam_size, opts.backend, opts.device, opts.threads)
    with tqdm(total=len(pairs), unit="file", desc="checking", file=sys.stderr, disable=None) as bar:
        files = check_pairs(pairs, language, transcriber, opts.max_cue_cer, progress=lambda: bar.update(1))
    files += unreadable
    data = findings_json(files, opts)
    write_json_atomic(opts.json, data)
    if opts.html:
        from .datacheck_page import write_check_page

        write_check_page(data, opts.html)
    lines = problem_lines(files)
    summary = data["summary"]
    share = summary["sound_share"]
    print(f"checked {summary['files']} file(s), {summary['cues']} cues: {summary['cues_sound']} look sound"
          + (f" ({100 * share:.1f}% of cue time)" if share is not None else "")
          + f"; {len(lines)} problem(s) -> {opts.json}" + (f", {opts.html}" if opts.html else ""))
    for line in lines:
        print(f"  {line}")
    return 1 if unreadable or any(p.kind == UNREADABLE for f in files for p in f.problems) else 0
