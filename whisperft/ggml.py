"""whisper.cpp (ggml) model files: writer and an independent reader.

The layout is that of whisper.cpp's own converter (`models/convert-pt-to-ggml.py`), all
little-endian int32 / float32 / float16:

  magic 0x67676d6c ("ggml")
  hparams: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
           n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype (0 = f32, 1 = f16)
  mel filters: n_mels, 201, then n_mels x 201 float32 (openai-whisper's librosa filterbank)
  vocabulary: count, then per token its byte length and its raw bytes (the GPT-2 byte-level BPE
           tokens, ids 0..count-1; the special tokens are not written: whisper.cpp derives them)
  tensors, until the end of the file, each: n_dims, name length, ftype, dims (innermost first,
           i.e. numpy's shape reversed), name (utf-8), data

Tensors are in openai-whisper's state-dict order and naming. Conv biases are written as (n, 1).
In f16 files, 1-D tensors, the conv biases and both positional embeddings stay float32 (as
the converter does and as whisper.cpp's loader expects); every other tensor is float16.
Given the same weights, the file is byte-identical to the converter's output.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from .audio import N_FFT, SAMPLE_RATE
from .conversions import base_model, hf_to_openai_state, openai_dims
from .errors import UserError

GGML_MAGIC = 0x67676D6C
N_FFT_BINS = N_FFT // 2 + 1  # frequency bins of the mel filterbank
FTYPES = {"f32": 0, "f16": 1}
# whisper.cpp's CPU convolution takes f16 kernels only, and its loader keeps an f32 file's conv
# weights in f32: such a file loads, then stops at the first encoder pass (whisper.cpp #2557).
F32_CPU_NOTE = ("note: whisper.cpp's CPU build stops on f32 model files (its convolution takes f16 "
                "weights only: whisper.cpp issue #2557); the default f16 runs everywhere")
FTYPE_ALIASES = {"f32": "f32", "float32": "f32", "fp32": "f32",
                 "f16": "f16", "float16": "f16", "fp16": "f16"}
HPARAM_NAMES = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
                "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
# 2-D+ tensors the converter still writes as float32 in an f16 file
F32_IN_F16 = frozenset({"encoder.conv1.bias", "encoder.conv2.bias",
                        "encoder.positional_embedding", "decoder.positional_embedding"})
CONV_BIASES = ("encoder.conv1.bias", "encoder.conv2.bias")


# --------------------------------------------------------------------------------------------
# Vocabulary


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (its byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocab_bytes(tokenizer) -> list[bytes]:
    """The raw bytes of every non-special token, in id order (ids 0..n-1).

    `tokenizer`: a transformers Whisper tokenizer (byte-level BPE). The BPE model's token
    strings are spelt in GPT-2's byte alphabet; decoding them through that table gives the bytes
    openai-whisper's tiktoken files hold, which is what whisper.cpp's converter writes.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError("ggml export needs a fast (tokenizers-backed) Whisper tokenizer")
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise UserError("ggml export: the tokenizer is not a byte-level BPE tokenizer")
    special_ids = {int(t["id"]) for t in data.get("added_tokens", [])}
    base = sorted((i, tok) for tok, i in model["vocab"].items() if i not in special_ids)
    if [i for i, _ in base] != list(range(len(base))):
        raise UserError("ggml export: the tokenizer's regular tokens are not numbered 0..n-1")
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    out = []
    for i, tok in base:
        try:
            out.append(bytes(decoder[c] for c in tok))
        except KeyError:
            raise UserError(f"ggml export: token {i} ({tok!r}) is not in GPT-2's byte alphabet") from None
    return out


# --------------------------------------------------------------------------------------------
# Mel filters


def whisper_mel_filters(n_mels: int) -> np.ndarray:
    """openai-whisper's `mel_filters.npz` filterbank, (n_mels, 201) float32, bit for bit.

    That file holds `librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)`: Slaney mel scale
    and area normalisation, computed in float64 but stored into a float32 array twice (the
    triangles, then the normalised values). Doing the same reproduces it exactly; it agrees with
    `whisperft.features.mel_filters` (single rounding) to float32 precision.
    """
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return min_log_mel + np.log(f / min_log_hz) / logstep if f >= min_log_hz else f / f_sp

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), n_mels + 2)
    mel_f = f_sp * mels
    log_t = mels >= min_log_mel
    mel_f[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    fftfreqs = np.fft.rfftfreq(n=2 * (N_FFT_BINS - 1), d=1.0 / SAMPLE_RATE)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, N_FFT_BINS), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


# --------------------------------------------------------------------------------------------
# Tensors


def openai_tensor_names(n_audio_layer: int, n_text_layer: int) -> list[str]:
    """Every tensor name of an openai-whisper model, in its state-dict order."""
    def attn(prefix: str) -> list[str]:
        return [f"{prefix}.query.weight", f"{prefix}.query.bias", f"{prefix}.key.weight",
                f"{prefix}.value.weight", f"{prefix}.value.bias", f"{prefix}.out.weight",
                f"{prefix}.out.bias", f"{prefix}_ln.weight", f"{prefix}_ln.bias"]

    def mlp(prefix: str) -> list[str]:
        return [f"{prefix}.mlp.0.weight", f"{prefix}.mlp.0.bias", f"{prefix}.mlp.2.weight",
                f"{prefix}.mlp.2.bias", f"{prefix}.mlp_ln.weight", f"{prefix}.mlp_ln.bias"]

    names = ["encoder.positional_embedding", "encoder.conv1.weight", "encoder.conv1.bias",
             "encoder.conv2.weight", "encoder.conv2.bias"]
    for i in range(n_audio_layer):
        names += attn(f"encoder.blocks.{i}.attn") + mlp(f"encoder.blocks.{i}")
    names += ["encoder.ln_post.weight", "encoder.ln_post.bias",
              "decoder.positional_embedding", "decoder.token_embedding.weight"]
    for i in range(n_text_layer):
        b = f"decoder.blocks.{i}"
        names += attn(f"{b}.attn") + attn(f"{b}.cross_attn") + mlp(b)
    names += ["decoder.ln.weight", "decoder.ln.bias"]
    return names


def ggml_tensors(bundle, ftype: str = "f16"):
    """(name, array as written, ggml ftype) for every tensor, in file order."""
    dims = openai_dims(base_model(bundle.model).config)
    try:
        state = hf_to_openai_state(bundle.model)
    except (KeyError, ValueError) as exc:
        raise UserError(f"ggml export: unexpected weight {exc} (not a plain Whisper model)") from None
    names = openai_tensor_names(dims["n_audio_layer"], dims["n_text_layer"])
    if set(state) != set(names):
        extra, missing = sorted(set(state) - set(names)), sorted(set(names) - set(state))
        raise UserError(f"ggml export: weights do not match Whisper's layout "
                        f"(unexpected {extra[:3]}, missing {missing[:3]})")
    for name in names:
        data = state[name].make().to(torch.float32).numpy()  # made one at a time: no second model
        if name in CONV_BIASES:
            data = data.reshape(data.shape[0], 1)
        keep_f32 = ftype == "f32" or data.ndim < 2 or name in F32_IN_F16
        out = np.ascontiguousarray(data, dtype="<f4" if keep_f32 else "<f2")
        if not keep_f32 and np.isinf(out).any() and np.isfinite(data).all():
            raise UserError(f"ggml export: {name} has values beyond float16's range; use f32")
        yield name, out, FTYPES["f32"] if keep_f32 else FTYPES["f16"]


# --------------------------------------------------------------------------------------------
# Writer


def ftype_name(ftype: str) -> str:
    """"f16" or "f32" for any of their spellings (float16, fp32, ...); a clear error otherwise."""
    key = FTYPE_ALIASES.get(str(ftype).lower())
    if key is None:
        raise UserError(f"ggml export: unknown type {ftype!r}; choose f16 or f32")
    return key


def save_ggml(bundle, path: str | Path, ftype: str = "f16") -> Path:
    """Write `bundle` (a `WhisperBundle`) as a whisper.cpp model file at `path`.

    ftype: "f16" (whisper.cpp's default; small tensors stay f32) or "f32" (aliases: float16,
    float32). Written to a temporary file beside `path`, then renamed over it. Returns `path`.
    """
    ftype_key = ftype_name(ftype)
    model = bundle.model
    cfg = model.config
    dims = openai_dims(cfg)
    if dims["n_mels"] not in (80, 128):
        raise UserError(f"ggml export: {dims['n_mels']} mel bins; whisper.cpp supports 80 and 128")
    if cfg.encoder_ffn_dim != 4 * cfg.d_model or cfg.decoder_ffn_dim != 4 * cfg.d_model:
        raise UserError("ggml export: whisper.cpp needs feed-forward width 4 x d_model")
    vocab = vocab_bytes(bundle.tokenizer)
    if len(vocab) > dims["n_vocab"]:
        raise UserError(f"ggml export: tokenizer has {len(vocab)} regular tokens, model only {dims['n_vocab']}")
    hparams = [dims[k] for k in HPARAM_NAMES[:-1]] + [FTYPES[ftype_key]]
    filters = whisper_mel_filters(dims["n_mels"])

    from .fileio import atomic_write

    with atomic_write(path) as fh:
        fh.write(struct.pack("<i", GGML_MAGIC))
        fh.write(struct.pack(f"<{len(hparams)}i", *hparams))
        fh.write(struct.pack("<ii", *filters.shape))
        fh.write(filters.astype("<f4").tobytes())
        fh.write(struct.pack("<i", len(vocab)))
        for token in vocab:
            fh.write(struct.pack("<i", len(token)))
            fh.write(token)
        for name, data, code in ggml_tensors(bundle, ftype_key):
            encoded = name.encode("utf-8")
            fh.write(struct.pack("<iii", data.ndim, len(encoded), code))
            fh.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
            fh.write(encoded)
            fh.write(memoryview(data).cast("B"))
    path = Path(path)
    return path


# --------------------------------------------------------------------------------------------
# Reader (independent of the writer: used to check files, ours or whisper.cpp's)


def read_ggml(path: str | Path) -> dict:
    """Parse a whisper.cpp model file (f32/f16 tensors; quantized ones are refused).

    Returns {"hparams": {name: int}, "mel_filters": (n_mel, n_fft) float32, "vocab": [bytes],
    "tensors": {name: ndarray in numpy shape order (f32 or f16 as stored)},
    "ftypes": {name: 0 | 1}, "order": [names as in the file]}.
    """
    data = Path(path).read_bytes()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise ValueError(f"{path}: truncated at byte {pos} (wanted {n} more)")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    def ints(n: int) -> tuple[int, ...]:
        return struct.unpack(f"<{n}i", take(4 * n))

    (magic,) = ints(1)
    if magic != GGML_MAGIC:
        raise ValueError(f"{path}: bad magic {magic:#x} (not a ggml whisper model)")
    hparams = dict(zip(HPARAM_NAMES, ints(len(HPARAM_NAMES))))
    n_mel, n_fft = ints(2)
    mel = np.frombuffer(take(4 * n_mel * n_fft), dtype="<f4").reshape(n_mel, n_fft).copy()
    (n_tokens,) = ints(1)
    vocab = []
    for _ in range(n_tokens):
        (length,) = ints(1)
        vocab.append(take(length))
    tensors, ftypes, order = {}, {}, []
    while pos < len(data):
        n_dims, name_len, code = ints(3)
        if not 1 <= n_dims <= 4:
            raise ValueError(f"{path}: tensor with {n_dims} dims at byte {pos}")
        ne = ints(n_dims)
        name = take(name_len).decode("utf-8")
        dtype = {0: "<f4", 1: "<f2"}.get(code)
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has type {code} (quantized: not supported here)")
        count = int(np.prod(ne))
        arr = np.frombuffer(take(count * np.dtype(dtype).itemsize), dtype=dtype)
        if name in tensors:
            raise ValueError(f"{path}: tensor {name} appears twice")
        tensors[name] = arr.reshape(tuple(reversed(ne))).copy()
        ftypes[name] = code
        order.append(name)
    return {"hparams": hparams, "mel_filters": mel, "vocab": vocab, "tensors": tensors,
            "ftypes": ftypes, "order": order}
