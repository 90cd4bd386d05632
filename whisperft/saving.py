"""Write a Whisper model in the formats it leaves whisperft in: a Hugging Face folder, an
openai-whisper checkpoint (written one tensor at a time by `atomic_torch_save`) and a CTranslate2
folder. whisper.cpp's format is ggml.py's. Each writer takes a `models.WhisperBundle`."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path

import torch

from .conversions import LazyTensor, base_model, hf_to_openai_state, on_cpu, openai_dims
from .errors import UserError
from .fileio import atomic_dir, atomic_write

CARD_FILE = "README.md"  # the model card of an exported folder: the Hub shows it as the model's page


def save_hf(bundle, out_dir: str | Path, dtype: torch.dtype | None = None, card: str | None = None) -> Path:
    """A Hugging Face folder: safetensors, config, generation config, tokenizer, preprocessor
    (what `transformers.pipeline` loads), and the model card README.md when `card` is given."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model = bundle.model
        if dtype is not None and dtype != next(model.parameters()).dtype:
            import copy

            model = copy.deepcopy(model).to(dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        bundle.tokenizer.save_pretrained(tmp)
        bundle.feature_extractor.save_pretrained(tmp)
        _write_card(tmp, card)
    return out_dir


def _write_card(folder: Path, card: str | None) -> None:
    if card is not None:
        (Path(folder) / CARD_FILE).write_text(card, encoding="utf-8", newline="\n")


def openai_checkpoint(bundle, dtype: torch.dtype = torch.float16) -> dict:
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
        lazies.append(value if isinstance(value, LazyTensor) else on_cpu(value))
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


def save_openai(bundle, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    return atomic_torch_save(openai_checkpoint(bundle, dtype), path)


def save_checkpoint(bundle, path: str | Path, train_state: dict | None = None,
                    dtype: torch.dtype = torch.float32) -> Path:
    """The checkpoint training writes (best_model.pt's kind): openai-whisper's format, with the
    resume state when given, atomic (a failed write leaves the previous file intact). A LoRA
    model is saved merged: downstream tools take plain weights."""
    ckpt = openai_checkpoint(bundle, dtype)
    if train_state is not None:
        ckpt["whisperft_train_state"] = train_state
    try:
        return atomic_torch_save(ckpt, path)
    except OSError as exc:
        raise UserError(f"{path}: could not save the checkpoint ({exc.strerror or exc}); "
                        "the previous one is intact") from None


CT2_QUANTIZATIONS = ("float32", "float16", "int8", "int8_float16", "int8_float32", "bfloat16")


# Generation-config entries of whisperft's own (e.g. audio_ctx.CONFIG_MARK) start with this; a
# CTranslate2 folder keeps them in its config.json (faster-whisper ignores keys it does not
# know) and models.py puts them back on the generation config.
OWN_CONFIG_PREFIX = "whisperft_"


def _own_generation_entries(bundle) -> dict:
    return {k: v for k, v in bundle.model.generation_config.to_dict().items() if k.startswith(OWN_CONFIG_PREFIX)}


def save_ct2(bundle, out_dir: str | Path, quantization: str = "float16", card: str | None = None) -> Path:
    """A CTranslate2 folder that faster_whisper.WhisperModel loads (needs `ctranslate2`), with
    the model card README.md when `card` is given."""
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
            own = _own_generation_entries(bundle)
            if own:
                config = json.loads((Path(tmp) / "config.json").read_text(encoding="utf-8"))
                (Path(tmp) / "config.json").write_text(json.dumps({**config, **own}, indent=2), encoding="utf-8")
            _write_card(tmp, card)
    return out_dir
