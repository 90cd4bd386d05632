"""Whisper's weights between the forms they are stored in, in memory only: a CTranslate2
`model.bin` read into transformers' names, openai-whisper's names to and from transformers'
(with openai-whisper's `dims`), and a model's plain weights, LoRA adapters merged, each made
only when asked for (`LazyTensor`)."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


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
# openai-whisper names and dims

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


def openai_dims(config) -> dict:
    return dict(n_mels=config.num_mel_bins, n_vocab=config.vocab_size,
                n_audio_ctx=config.max_source_positions, n_audio_state=config.d_model,
                n_audio_head=config.encoder_attention_heads, n_audio_layer=config.encoder_layers,
                n_text_ctx=config.max_target_positions, n_text_state=config.d_model,
                n_text_head=config.decoder_attention_heads, n_text_layer=config.decoder_layers)


# --------------------------------------------------------------------------------------------
# Plain weights of a (LoRA) model, made lazily


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


def on_cpu(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> LazyTensor:
    """`tensor`, copied to the CPU (in `dtype`, else its own) when made."""
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
            out[name] = on_cpu(tensor, dtype)
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
