"""How far each cue's text agrees with what a model heard: the recognised words of a whole
recording are aligned to the words of all its cues at once (so a cue's words are found even
when the cue is timed wrong), and each cue is scored on the words aligned to it. No torch."""

from __future__ import annotations

from typing import Sequence

from .normalizers import get_normalizer
from .quality import HasTiming, timed_units, units
from .tokens import NO_SPACE_LANGUAGES


# A recognised word paired with a cue's word by the text alignment is taken as heard there only
# when its time is within this many seconds of the cue's (corrected) span; farther, the pairing
# is the alignment's chance match (a "milligrams daily" from the next cue) and the word goes to
# the cue nearest in time. Word times are spread over their segment, so this is loose.
ALIGN_SLACK = 1.0


def _distance(t: float, span: tuple[float, float]) -> float:
    return max(span[0] - t, t - span[1], 0.0)


def _nearest(t: float, spans: Sequence[tuple[float, float]], among: Sequence[int]) -> int:
    return min(among, key=lambda k: _distance(t, spans[k]))


def _home(t: float, k: int, spans: Sequence[tuple[float, float]], every: Sequence[int]) -> int:
    """Cue `k` when a word heard at `t` is within ALIGN_SLACK of it, else the cue nearest in time."""
    return k if _distance(t, spans[k]) <= ALIGN_SLACK else _nearest(t, spans, every)


def cue_agreement(texts: Sequence[str], spans: Sequence[tuple[float, float]],
                  segments: Sequence[HasTiming], language: str = "en"
                  ) -> list[tuple[float, float, str] | None]:
    """(WER, CER, heard text) of each cue text against the recognised `segments`, None for a
    cue without words. `spans` are the cues' (corrected) times: a recognised word the
    alignment leaves between two cues goes to the one nearer in time."""
    import jiwer

    normalize = get_normalizer("auto", language)
    ref, owner = [], []
    for k, text in enumerate(texts):
        words = units(normalize(text), language) if text else []
        ref += words
        owner += [k] * len(words)
    timed = [pair for seg in segments for pair in timed_units(seg, language, normalize)]
    hyp, hyp_time = [unit for unit, _ in timed], [t for _, t in timed]
    errors = [0] * len(texts)
    heard: list[list[tuple[int, str]]] = [[] for _ in texts]
    if ref and hyp:
        chunks = jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]
    else:
        chunks = []
        errors = [sum(1 for o in owner if o == k) for k in range(len(texts))]
    every = sorted(set(owner))  # a cue without words (empty, or over silence) takes none
    for chunk in chunks:
        if chunk.type == "insert":
            before = owner[chunk.ref_start_idx - 1] if chunk.ref_start_idx > 0 else None
            after = owner[chunk.ref_start_idx] if chunk.ref_start_idx < len(owner) else None
            for j in range(chunk.hyp_start_idx, chunk.hyp_end_idx):
                near = _nearest(hyp_time[j], spans, [k for k in (before, after) if k is not None])
                k = _home(hyp_time[j], near, spans, every)
                errors[k] += 1
                heard[k].append((j, hyp[j]))
            continue
        if chunk.type == "delete":
            for r in range(chunk.ref_start_idx, chunk.ref_end_idx):
                errors[owner[r]] += 1
            continue
        for r, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx),
                        range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
            k, home = owner[r], _home(hyp_time[j], owner[r], spans, every)
            if home == k:
                errors[k] += chunk.type != "equal"
            else:  # a match far from the cue in time: its word was not said, the heard one belongs elsewhere
                errors[k] += 1
                errors[home] += 1
            heard[home].append((j, hyp[j]))
    joiner = "" if language in NO_SPACE_LANGUAGES else " "
    out: list[tuple[float, float, str] | None] = []
    for k, text in enumerate(texts):
        n = owner.count(k)
        if n == 0:
            out.append(None)
            continue
        said = joiner.join(w for _, w in sorted(heard[k]))
        written = joiner.join(ref[r] for r in range(len(ref)) if owner[r] == k)
        cer = jiwer.cer(written, said) if said else 1.0
        out.append((errors[k] / n, float(cer), said))
    return out

