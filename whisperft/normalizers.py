"""Text normalisers applied before scoring, the way Whisper reports its scores: the English one
for English, the basic one for other languages (transformers ships both; the English spelling
table it needs is bundled, see `english_spelling.LICENSE`). No torch.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

from .errors import UserError

NORMALIZERS = ("auto", "whisper", "basic", "none")

ENGLISH_SPELLING_FILE = Path(__file__).with_name("english_spelling.json")


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
def normalizer_for(resolved: str) -> Callable[[str], str]:
    """The normaliser of a resolved name (whisper, basic or none)."""
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
    return normalizer_for(resolve_normalizer(name, language))
