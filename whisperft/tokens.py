"""Whisper's special-token layout: manifest text -> decoder input and labels, ids -> cues.

Only this module knows the layout, and it takes every id from the tokenizer (never by
arithmetic: large-v3-turbo's ids differ from tiny's). A training example, as in
jumon/whisper-finetuning:

    input : [<|startofprev|> prompt…] <|sot|> [<|lang|> <|transcribe|>] [<|notimestamps|>] text…
    labels: [-100 …………………………………]  <|lang|> <|transcribe|>  [<|notimestamps|>] text… <|eot|>

English-only models have no language/task tokens; an empty text (a window without speech)
trains <|sot|> -> <|nospeech|> -> <|eot|>. The prompt and <|sot|> itself are never targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UserError

IGNORE_INDEX = -100  # label of positions that carry no loss (PyTorch's cross-entropy default)
# Languages written without spaces between words: cue texts join without a space, and "words"
# are whole sentences, so CER is scored instead of WER (Whisper's paper scores zh, ja, th, lo
# and my by characters; yue and km share the property).
NO_SPACE_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "my", "km"})
TIMESTAMP_RE = re.compile(r"<\|(\d+\.\d+)\|>")  # a timestamp token; its group is the time in seconds


def timestamp_token(seconds: float) -> str:
    """The text of Whisper's timestamp token for a time in seconds: `<|1.24|>`."""
    return f"<|{seconds:.2f}|>"


def timed_segments(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each stretch of text between two timestamp tokens of manifest text:
    `<|0.00|> one<|1.00|><|1.20|> two<|2.00|>` -> (0.0, 1.0, " one"), (1.2, 2.0, " two"). Text
    before the first or after the last timestamp (a cue cut off at the window end) has no span."""
    marks = list(TIMESTAMP_RE.finditer(text))
    return [(float(a.group(1)), float(b.group(1)), text[a.end():b.start()])
            for a, b in zip(marks, marks[1:]) if text[a.end():b.start()].strip()]


@dataclass
class Example:
    """Token ids of one training example."""

    decoder_input_ids: list[int]
    labels: list[int]  # same length as decoder_input_ids; IGNORE_INDEX where no loss
    trim_at: float | None  # seconds: cut the audio here (no-timestamp example ending mid-cue)


class TokenLayout:
    """Ids of Whisper's special tokens for one tokenizer, and the text <-> ids codec."""

    def __init__(self, tokenizer, multilingual: bool, max_text_ctx: int = 448):
        self.tokenizer = tokenizer
        self.multilingual = multilingual
        self.max_text_ctx = max_text_ctx
        ids = tokenizer.convert_tokens_to_ids
        self.sot = ids("<|startoftranscript|>")
        self.eot = ids("<|endoftext|>")
        self.sot_prev = ids("<|startofprev|>")
        self.no_timestamps = ids("<|notimestamps|>")
        self.transcribe = ids("<|transcribe|>")
        self.translate = ids("<|translate|>")
        nospeech = ids("<|nospeech|>")
        # English-only vocabularies name the no-speech token <|nocaptions|>
        self.no_speech = nospeech if nospeech != tokenizer.unk_token_id else ids("<|nocaptions|>")
        self.timestamp_begin = ids("<|0.00|>")
        if self.timestamp_begin != self.no_timestamps + 1:
            raise UserError("tokenizer has no timestamp tokens after <|notimestamps|>")
        # half the context for the prompt, as openai-whisper does (223 for n_text_ctx 448)
        self.max_prompt_tokens = max_text_ctx // 2 - 1
        self._time_ids: dict[str, int] = {}

    def timestamp_id(self, text: str) -> int:
        """Id of `<|t.tt|>` from the tokenizer; times must sit on the 20 ms grid."""
        tid = self._time_ids.get(text)
        if tid is None:
            tid = self.tokenizer.convert_tokens_to_ids(text)
            if tid is None or tid == self.tokenizer.unk_token_id or tid < self.timestamp_begin:
                raise UserError(f"{text} is not a Whisper timestamp token (0.00-30.00 in 0.02 s steps)")
            self._time_ids[text] = tid
        return tid

    def language_id(self, language: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(f"<|{language}|>")
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise UserError(f"language {language!r} is not one this Whisper model knows")
        return tid

    def encode_text(self, text: str) -> list[int]:
        """Ids of manifest text with `<|t.tt|>` timestamp markers (plain text works too)."""
        ids: list[int] = []
        pos = 0
        for m in TIMESTAMP_RE.finditer(text):
            if m.start() > pos:
                ids += self.tokenizer.encode(text[pos:m.start()], add_special_tokens=False)
            ids.append(self.timestamp_id(m.group(0)))
            pos = m.end()
        if pos < len(text):
            ids += self.tokenizer.encode(text[pos:], add_special_tokens=False)
        return ids

    def is_timestamp(self, token: int) -> bool:
        return token >= self.timestamp_begin

    def partial_segment_start(self, ids: list[int]) -> float | None:
        """Start (seconds) of a trailing cue that runs past the window end, if any.

        Such a cue is written as a lone start timestamp at the end of the text; a complete
        text ends with an end timestamp right after words (or with two timestamps).
        """
        if len(ids) >= 2 and self.is_timestamp(ids[-1]) and self.is_timestamp(ids[-2]):
            return self._seconds(ids[-1])
        if len(ids) == 1 and self.is_timestamp(ids[0]):
            return self._seconds(ids[0])
        return None

    def _seconds(self, token: int) -> float:
        return float(self.tokenizer.convert_ids_to_tokens(token)[2:-2])

    def prefix(self, language: str, no_timestamps: bool, task: str = "transcribe") -> list[int]:
        """<|sot|> [<|lang|> <|task|>] [<|notimestamps|>]: what decoding starts from."""
        ids = [self.sot]
        if self.multilingual:
            ids += [self.language_id(language), self.transcribe if task == "transcribe" else self.translate]
        elif language not in ("en", None):
            raise UserError(f"this model is English-only; got a record in language {language!r} "
                            "(use a multilingual model such as 'base' or 'small')")
        if no_timestamps:
            ids.append(self.no_timestamps)
        return ids

    def prompt_ids(self, prompt: str) -> list[int]:
        """<|startofprev|> + the last max_prompt_tokens ids of the prompt ([] when empty)."""
        if not prompt:
            return []
        ids = self.encode_text(prompt)
        return [self.sot_prev] + ids[-self.max_prompt_tokens:]

    def example(self, text: str, language: str, prompt: str = "", use_prompt: bool = True,
                no_timestamps: bool = False, where: str = "") -> Example:
        """Decoder input and labels of one manifest record."""
        text_ids = self.encode_text(text)
        trim_at = None
        if no_timestamps:
            trim_at = self.partial_segment_start(text_ids)
            text_ids = [t for t in text_ids if not self.is_timestamp(t)]
        if text_ids:
            prefix = self.prefix(language, no_timestamps)
        else:  # no speech: no language to predict, just the no-speech token
            prefix = [self.sot, self.no_speech]
        prompt_ids = self.prompt_ids(prompt) if use_prompt else []
        decoder_input = prompt_ids + prefix + text_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + prefix[1:] + text_ids + [self.eot]
        if len(decoder_input) > self.max_text_ctx:
            raise UserError(f"{where or 'record'}: {len(decoder_input)} tokens exceed the model's "
                            f"{self.max_text_ctx}-token context (prepare with a lower --max-tokens-length)")
        return Example(decoder_input, labels, trim_at)


def language_code(language: str | None, default: str | None = None) -> str | None:
    """A Whisper language code from a code, an English name or a tag, any case
    ("es", "Spanish", "en-US" -> "en"); `default` when none is given."""
    if language is None or not str(language).strip():
        return default
    # Imported here: transformers costs ~1.5 s, which `--help` should not pay.
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    text = str(language).strip().lower()
    if text in LANGUAGES:
        return text
    if text in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[text]
    primary = re.split(r"[-_]", text)[0]
    if primary in LANGUAGES:
        return primary
    raise UserError(f"unknown language {language!r}: give a Whisper language code "
                    f"(en, de, ja, ...) or name (English, German, Japanese, ...)")
