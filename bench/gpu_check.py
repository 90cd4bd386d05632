"""GPU check: what whisperft does on a GPU, checked in one run of a few minutes.

    python bench/gpu_check.py [--sizes tiny,base,...] [--model tiny.en] [--skip CHECK ...]

Each check uses the library's own entry points (`whisperft.train.train` with a `TrainConfig`,
`whisperft.transcribe.load_transcriber`, `whisperft train` under `torchrun`) on synthetic
30 s windows and a randomly initialised Whisper of the real tiny shape:

  - training in fp32 (the baseline the others are compared with), fp16 AMP with loss scaling,
    bf16 AMP, 8-bit AdamW (bitsandbytes), gradient checkpointing and LoRA;
  - resume: 2 steps, stop, resume for 2 more = 4 steps in one go;
  - `torchrun --nproc_per_node=<GPUs here>`: an NCCL all-reduce on every GPU, then
    `whisperft train` itself as that many processes;
  - transcription in float16 on both backends (torch and CTranslate2) of real speech
    (espeak-ng, when installed) with a real model (--model, default tiny.en);
  - peak GPU memory of a training step (batch 8, --use-amp) for each model size, random weights
    of the real shapes (80 mel bins; 128 for large-v3 and turbo), in the three set-ups of
    README.md's memory table, against its estimates: a size over its estimate fails (the README
    would be wrong), one that does not fit on this GPU is reported, not failed.

It prints one table and exits 1 if any check failed. On a machine without a CUDA GPU it says
so and exits 0. `--cpu-plumbing` runs what can run on a CPU, to test this script itself.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Real Whisper shapes: d_model, attention heads, encoder layers, decoder layers, mel bins, vocabulary.
SIZES = {
    "tiny": (384, 6, 4, 4, 80, 51865),
    "base": (512, 8, 6, 6, 80, 51865),
    "small": (768, 12, 12, 12, 80, 51865),
    "medium": (1024, 16, 24, 24, 80, 51865),
    "large-v3": (1280, 20, 32, 32, 128, 51866),
    "large-v3-turbo": (1280, 20, 32, 4, 128, 51866),
}
# README.md's memory table: the column each set-up is compared with, and its TrainConfig flags.
MEMORY_SETUPS = {
    "full fine-tuning": ("full fine-tuning (estimate)", {}),
    "8-bit AdamW + checkpointing": ("with `--use-adam-8bit --gradient-checkpointing` (estimate)",
                                    {"use_adam_8bit": True, "gradient_checkpointing": True}),
    "LoRA r=32": ("LoRA r=32 (estimate)", {"lora_rank": 32}),
}
MEMORY_BATCH = 8  # what the README's estimates assume
FEATURE_STEPS = 4
SPEECH = ("The quick brown fox jumps over the lazy dog.",
          "Please call Stella and ask her to bring these things with her from the store.")
MAX_WER = 0.4  # tiny.en on these espeak-ng clips: 25% (float32, CPU); broken decoding is ~100%
FAILED = ("FAIL", "OVER")


@dataclass
class Row:
    check: str
    result: str  # ok, FAIL, OVER (memory above the README's estimate), skip, n/a
    measured: str = ""
    expected: str = ""
    seconds: float = 0.0


class Skip(Exception):
    """A check that cannot run here (said in the table, not a failure)."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB"


# --------------------------------------------------------------------------------------------
# set-up shared by the checks


class Context:
    def __init__(self, args, device: str, workdir: Path):
        import torch

        self.args, self.device, self.workdir = args, device, workdir
        self.cuda = device == "cuda"
        self.n_gpus = torch.cuda.device_count() if self.cuda else 0
        self._tokenizer = None
        self._manifests: dict[int, Path] = {}
        self.feature_model: Path | None = None
        self.baseline: dict[int, float] | None = None  # step -> loss of the fp32 run

    def tokenizer(self):
        """The multilingual Whisper tokenizer (offline from whisperft[offline-models], else the Hub)."""
        if self._tokenizer is None:
            from whisperft.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer("multilingual")
        return self._tokenizer

    def manifest(self, n_mels: int, n: int = 16) -> Path:
        """n synthetic 30 s windows shaped like dictation: ~70 words with timestamps, a ~100-word
        previous-text prompt on every other window, noise for log-mel features."""
        if n_mels not in self._manifests:
            sys.path.insert(0, str(REPO / "bench"))
            from bench_train import make_manifest

            folder = self.workdir / f"data{n_mels}"
            folder.mkdir(parents=True, exist_ok=True)
            make_manifest(folder, n, n_mels)
            self._manifests[n_mels] = folder / "train.json"
        return self._manifests[n_mels]

    def random_bundle(self, size: str, device: str | None = None):
        """A randomly initialised Whisper of `size`'s real shape, built on `device`."""
        import torch
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        from whisperft.models import WhisperBundle
        from whisperft.tokenizer import reference_generation_config, whisper_config

        d, heads, enc, dec, mels, vocab = SIZES[size]
        tokenizer = self.tokenizer()
        sizes = dict(vocab_size=vocab, num_mel_bins=mels, d_model=d, encoder_layers=enc, decoder_layers=dec,
                     encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d,
                     decoder_ffn_dim=4 * d, max_source_positions=1500, max_target_positions=448)
        gen = reference_generation_config(tokenizer, vocab, None)
        torch.manual_seed(0)
        with torch.device(device or self.device):
            model = WhisperForConditionalGeneration(whisper_config(sizes, tokenizer, gen))
        model.generation_config = gen
        return WhisperBundle(model, tokenizer, WhisperFeatureExtractor(feature_size=mels), f"random {size}")

    def feature_model_path(self) -> Path:
        """The random tiny-shaped model the feature checks train, as an openai-whisper .pt."""
        if self.feature_model is None:
            import torch

            from whisperft import saving

            path = self.workdir / "random-tiny.pt"
            saving.save_openai(self.random_bundle("tiny", device="cpu"), path, torch.float32)
            self.feature_model = path
        return self.feature_model


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def reset_accelerate() -> None:
    """Accelerate keeps one state per process and refuses a second mixed precision: each run
    here starts from a fresh one, as a new process would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class Probe:
    """What train() set up, seen through Accelerate: mixed precision, loss scale, the optimizer
    and the model it prepared. Keeps names and numbers, never the objects."""

    def __init__(self):
        self.mixed_precision = None
        self.scales: list[float] = []
        self.optimizer = ""
        self.gradient_checkpointing = False
        self.lora = False
        self.trainable = self.total = 0
        self.processes = 0

    @contextlib.contextmanager
    def watching(self):
        from accelerate import Accelerator

        probe = self
        prepare, backward = Accelerator.prepare, Accelerator.backward

        def prepare_and_look(acc, *objects, **kw):
            import torch

            probe.mixed_precision, probe.processes = acc.mixed_precision, acc.num_processes
            for obj in objects:
                if isinstance(obj, torch.optim.Optimizer):
                    probe.optimizer = f"{type(obj).__module__}.{type(obj).__name__}"
                elif isinstance(obj, torch.nn.Module):
                    inner = getattr(obj, "model", obj)
                    probe.lora = hasattr(inner, "get_base_model")
                    base = inner.get_base_model() if probe.lora else inner
                    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") \
                        else "is_gradient_checkpointing"  # renamed in transformers 5
                    probe.gradient_checkpointing = bool(getattr(base, flag, False))
                    probe.trainable = sum(p.numel() for p in inner.parameters() if p.requires_grad)
                    probe.total = sum(p.numel() for p in inner.parameters())
            return prepare(acc, *objects, **kw)

        def backward_and_look(acc, loss, **kw):
            if acc.scaler is not None:
                probe.scales.append(float(acc.scaler.get_scale()))
            return backward(acc, loss, **kw)

        with patched(Accelerator, "prepare", prepare_and_look), \
                patched(Accelerator, "backward", backward_and_look):
            yield self


def train_run(ctx: Context, name: str, stop_after_steps: int | None = None, env: dict | None = None,
              **overrides) -> tuple[dict[int, float], Probe, Path]:
    """train() on the feature model and the 80-mel windows: (step -> loss, probe, save dir)."""
    from whisperft.train import TrainConfig, train

    save_dir = ctx.workdir / "runs" / name
    cfg = dict(train_json=str(ctx.manifest(80)), model=str(ctx.feature_model_path()), save_dir=str(save_dir),
               batch_size=4, accum_grad_steps=1, lr=1e-3, warmup_steps=1, train_steps=FEATURE_STEPS,
               eval_steps=FEATURE_STEPS, log_steps=1, device=ctx.device, num_workers=0, seed=0)
    cfg.update(overrides)
    probe = Probe()
    old_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        reset_accelerate()
        with probe.watching(), contextlib.redirect_stdout(sys.stderr):  # stdout: the table only
            train(TrainConfig(**cfg), stop_after_steps=stop_after_steps)
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    losses = {}
    for line in (save_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            losses[entry["step"]] = entry["loss"]
    return losses, probe, save_dir


def _finite_and_learning(losses: dict[int, float], need_decrease: bool = True) -> str:
    if len(losses) < 2 or not all(math.isfinite(v) for v in losses.values()):
        raise AssertionError(f"losses {losses}")
    first, last = losses[min(losses)], losses[max(losses)]
    if need_decrease and not last < first:
        raise AssertionError(f"loss did not go down: {first:.3f} -> {last:.3f}")
    return f"loss {first:.3f} -> {last:.3f}"


def _close_to_baseline(ctx: Context, losses: dict[int, float], rel: float, steps=None) -> float:
    if ctx.baseline is None:
        raise AssertionError("no fp32 baseline to compare with (it failed)")
    worst = 0.0
    for step in steps or sorted(ctx.baseline):
        ref = ctx.baseline[step]
        worst = max(worst, abs(losses[step] - ref) / abs(ref))
    if worst > rel:
        raise AssertionError(f"loss differs from fp32 by {worst:.2%} (allowed {rel:.1%}): "
                             f"{losses} vs {ctx.baseline}")
    return worst


# --------------------------------------------------------------------------------------------
# the checks: each returns (measured, expected) or raises (AssertionError/others = FAIL, Skip)


def check_fp32(ctx: Context):
    losses, probe, _ = train_run(ctx, "fp32")
    if probe.mixed_precision != "no":
        raise AssertionError(f"mixed precision {probe.mixed_precision!r} without --use-amp")
    ctx.baseline = losses
    return _finite_and_learning(losses), "loss goes down"


def check_fp16(ctx: Context):
    if not ctx.cuda:
        raise Skip("CUDA only")
    losses, probe, _ = train_run(ctx, "fp16", use_amp=True, env={"AMP_DTYPE": "float16"})
    if probe.mixed_precision != "fp16" or not probe.scales:
        raise AssertionError(f"mixed precision {probe.mixed_precision!r}, loss scaler "
                             f"{'on' if probe.scales else 'off'}")
    worst = _close_to_baseline(ctx, losses, 0.02, steps=[1])
    return (f"{_finite_and_learning(losses)}; loss scale {probe.scales[0]:g} -> {probe.scales[-1]:g}; "
            f"step 1 within {worst:.2%} of fp32"), "fp16 + GradScaler, step 1 within 2% of fp32"


def check_bf16(ctx: Context):
    import torch

    if not ctx.cuda:
        raise Skip("CUDA only")
    if not torch.cuda.is_bf16_supported():
        raise Skip("this GPU has no bfloat16 (train falls back to fp16)")
    losses, probe, _ = train_run(ctx, "bf16", use_amp=True, env={"AMP_DTYPE": "bfloat16"})
    if probe.mixed_precision != "bf16" or probe.scales:
        raise AssertionError(f"mixed precision {probe.mixed_precision!r}, loss scaler "
                             f"{'on' if probe.scales else 'off'}")
    worst = _close_to_baseline(ctx, losses, 0.03, steps=[1])
    return (f"{_finite_and_learning(losses)}; step 1 within {worst:.2%} of fp32",
            "bf16, no scaler, step 1 within 3% of fp32")


def check_adam8bit(ctx: Context):
    losses, probe, _ = train_run(ctx, "adam8bit", use_adam_8bit=True)
    if "8bit" not in probe.optimizer:
        raise AssertionError(f"optimizer is {probe.optimizer}")
    return f"{_finite_and_learning(losses)}; {probe.optimizer.rsplit('.', 1)[-1]}", "bitsandbytes AdamW8bit, loss goes down"


def check_checkpointing(ctx: Context):
    losses, probe, _ = train_run(ctx, "checkpointing", gradient_checkpointing=True)
    if not probe.gradient_checkpointing:
        raise AssertionError("the model trained without gradient checkpointing")
    worst = _close_to_baseline(ctx, losses, 1e-3)
    return f"every step within {worst:.1e} of fp32", "same losses as fp32 (within 0.1%)"


def check_lora(ctx: Context):
    losses, probe, save_dir = train_run(ctx, "lora", lora_rank=8)
    if not probe.lora or not 0 < probe.trainable < 0.2 * probe.total:
        raise AssertionError(f"LoRA {probe.lora}: {probe.trainable} of {probe.total} parameters trained")
    for name in ("best_model.pt", "last_model.pt"):
        if not (save_dir / name).is_file():
            raise AssertionError(f"no {name}")
    return (f"{_finite_and_learning(losses, need_decrease=False)}; "
            f"{probe.trainable / probe.total:.1%} of weights trained"), "adapters only, merged checkpoints saved"


def check_resume(ctx: Context):
    half = FEATURE_STEPS // 2
    train_run(ctx, "resume", stop_after_steps=half)
    save_dir = ctx.workdir / "runs" / "resume"
    losses, _, _ = train_run(ctx, "resume", resume=str(save_dir / "last_model.pt"))
    later = [s for s in sorted(ctx.baseline or {}) if s > half]
    worst = _close_to_baseline(ctx, losses, 1e-3, steps=later)
    return (f"steps {later[0]}-{later[-1]} after resume within {worst:.1e} of the run in one go",
            "same losses (within 0.1%)")


def check_torchrun(ctx: Context):
    if not ctx.cuda:
        raise Skip("CUDA only")
    n = ctx.n_gpus
    launcher = [shutil.which("torchrun")] if shutil.which("torchrun") else [sys.executable, "-m", "torch.distributed.run"]
    path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "NCCL_DEBUG": "VERSION", "PYTHONPATH": os.pathsep.join(path)}
    base = launcher + ["--standalone", f"--nproc_per_node={n}"]
    # 1. NCCL itself: an all-reduce across every GPU
    out = subprocess.run(base + [str(Path(__file__).resolve()), "--nccl-worker"], env=env, capture_output=True,
                         text=True, timeout=300)
    oks = [line for line in out.stdout.splitlines() if line.startswith("NCCL_OK")]
    if out.returncode != 0 or len(oks) != n:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
        raise AssertionError(f"NCCL all-reduce on {n} GPU(s): exit {out.returncode}, {len(oks)} rank(s) ok; {tail[0][:160]}")
    version = oks[0].split("nccl ", 1)[-1]
    # 2. whisperft train as n processes
    save_dir = ctx.workdir / "runs" / "torchrun"
    cmd = base + ["-m", "whisperft", "train", "--train-json", str(ctx.manifest(80)),
                  "--model", str(ctx.feature_model_path()), "--save-dir", str(save_dir),
                  "--batch-size", "2", "--accum-grad-steps", "1", "--train-steps", "2", "--eval-steps", "2",
                  "--warmup-steps", "1", "--log-steps", "1", "--num-workers", "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        tail = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
        raise AssertionError(f"whisperft train under torchrun: exit {out.returncode}; {tail[0][:160]}")
    if not re.search(rf"device cuda(:\d+)? x {n}\b", text):
        raise AssertionError(f"training did not run as {n} processes")
    if n > 1 and "NCCL version" not in text:
        raise AssertionError("DDP training did not initialise NCCL")
    return (f"all-reduce ok on {n} GPU(s), NCCL {version}; whisperft train ran as {n} process(es)",
            f"NCCL on all {n} GPU(s)")


def nccl_worker() -> int:
    """Run under torchrun by check_torchrun: one all-reduce over NCCL."""
    import torch
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.full((1024,), float(rank + 1), device="cuda")
    dist.all_reduce(t)
    torch.cuda.synchronize()
    ok = bool(torch.all(t == world * (world + 1) / 2))
    backend = dist.get_backend()
    dist.barrier()
    dist.destroy_process_group()
    if not ok or backend != "nccl":
        print(f"rank {rank}: all-reduce gave {t[0].item()}, backend {backend}", file=sys.stderr)
        return 1
    version = torch.cuda.nccl.version()
    version = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    print(f"NCCL_OK rank {rank} of {world} nccl {version}", flush=True)
    return 0


class Speech:
    """Two clips of real speech from espeak-ng (or, without it, two tones: text not checked)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.clips = None
        self.spoken = False
        self.texts: dict[str, list[str]] = {}

    def get(self) -> list:
        if self.clips is None:
            import numpy as np

            from whisperft.audio import SAMPLE_RATE, load_audio

            espeak = shutil.which("espeak-ng")
            self.spoken = espeak is not None
            self.clips = []
            for i, sentence in enumerate(SPEECH):
                if espeak:
                    wav = self.ctx.workdir / f"speech{i}.wav"
                    subprocess.run([espeak, "-v", "en-us", "-s", "160", "-w", str(wav), sentence], check=True,
                                   capture_output=True)
                    self.clips.append(load_audio(wav))
                else:
                    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
                    self.clips.append((0.1 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32))
        return self.clips


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def check_transcribe(ctx: Context, speech: Speech, backend: str):
    import jiwer

    from whisperft import transcribe as tr
    from whisperft.transcription import TranscribeOptions

    compute = "float16" if ctx.cuda else "float32"
    opts = TranscribeOptions(model=ctx.args.model, backend=backend, device=ctx.device, compute_type=compute,
                             beam_size=1, batch_size=2)
    runner = tr.load_transcriber(opts)
    if backend == "torch":
        where = (runner.device.type, str(runner.dtype).replace("torch.", ""))
    else:
        where = (runner.model.model.device, runner.model.model.compute_type)
    if where != (ctx.device, compute):
        raise AssertionError(f"ran on {where[0]} in {where[1]}, not {ctx.device} in {compute}")
    results = dict(runner.run(list(enumerate(speech.get()))))
    texts = []
    for key in sorted(results):
        if isinstance(results[key], Exception):
            raise results[key]
        texts.append(" ".join(results[key].text.split()))
    speech.texts[backend] = texts
    shown = texts[0] if len(texts[0]) <= 50 else texts[0][:47] + "..."
    if not speech.spoken:
        return f"{compute}; (tones, no espeak-ng) {shown!r}", "runs; text not checked without espeak-ng"
    wer = jiwer.wer([_words(t) for t in SPEECH], [_words(t) or "-" for t in texts])
    if wer > MAX_WER:
        raise AssertionError(f"{compute}: WER {wer:.0%} against the spoken text: {texts}")
    other = speech.texts.get("torch" if backend == "ct2" else "ct2")
    same = "" if other is None else ("; same text as torch" if other == texts else "; text differs from torch")
    return (f"{compute}, WER {wer:.0%}: {shown!r}{same}",
            f"{compute} on {ctx.device}, WER <= {MAX_WER:.0%} ({ctx.args.model}, espeak)")


def readme_estimates() -> dict[str, dict]:
    """README.md's memory table: size -> {"params": n, column header: bytes}."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    for i, line in enumerate(lines):
        if line.startswith("|") and "full fine-tuning (estimate)" in line:
            header = cells(line)
            table = {}
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                values = dict(zip(header, cells(row)))
                size = values.get("model")
                parsed = {"params": float(values["parameters"].split()[0]) * 1e6}
                for column, text in values.items():
                    found = re.fullmatch(r"([\d.]+)\s*GB", text)
                    if found:
                        parsed[column] = float(found.group(1)) * 1e9
                table[size] = parsed
            return table
    raise ValueError("README.md has no memory table (a header with 'full fine-tuning (estimate)')")


def memory_rows(ctx: Context, sizes: list[str], report) -> None:
    """Peak GPU memory of training steps of each size and set-up, against README.md: one
    row each, handed to `report` as it is measured."""
    import torch

    import whisperft.models as wm
    import whisperft.train as wt

    try:
        estimates = readme_estimates()
    except (OSError, ValueError) as exc:
        report(Row("peak memory: README table", "FAIL", one_line(exc)))
        return
    total = torch.cuda.get_device_properties(0).total_memory if ctx.cuda else 0
    real_load = wm.load_model
    built: dict[str, int] = {}

    def load_random(spec, device="cpu", dtype=torch.float32):
        if not str(spec).startswith("random:"):
            return real_load(spec, device=device, dtype=dtype)
        size = spec.split(":", 1)[1]
        bundle = ctx.random_bundle(size)
        built[size] = sum(p.numel() for p in bundle.model.parameters())
        return bundle

    batch = MEMORY_BATCH if ctx.cuda else 2
    for size in sizes:
        if size not in estimates:
            report(Row(f"peak memory: {size}", "FAIL", "not in README.md's memory table"))
            continue
        est = estimates[size]
        for setup, (column, flags) in MEMORY_SETUPS.items():
            name = f"peak memory: {size}, {setup}"
            t0 = time.perf_counter()
            cfg = dict(train_json=str(ctx.manifest(SIZES[size][4])), model=f"random:{size}",
                       save_dir=str(ctx.workdir / "runs" / f"mem-{size}-{setup.split()[0]}"), batch_size=batch,
                       accum_grad_steps=1, lr=1e-5, warmup_steps=1, train_steps=2, eval_steps=1000, log_steps=1,
                       device=ctx.device, num_workers=0, seed=0, use_amp=ctx.cuda, **flags)
            expected = f"<= {est[column] / 1e9:g} GB (README)" if column in est else "README has no estimate"
            try:
                reset_accelerate()  # before collecting: its state may hold the last run's objects
                gc.collect()
                before = (0, 0)
                if ctx.cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    before = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved())
                with patched(wm, "load_model", load_random), \
                        patched(wt, "save_checkpoint", lambda *a, **k: None), \
                        contextlib.redirect_stdout(sys.stderr):
                    wt.train(wt.TrainConfig(**cfg))
            except Exception as exc:
                if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
                    report(Row(name, "skip", f"does not fit in this GPU's {gb(total)}", expected,
                               time.perf_counter() - t0))
                else:
                    traceback.print_exc(file=sys.stderr)
                    report(Row(name, "FAIL", one_line(exc), expected, time.perf_counter() - t0))
                continue
            finally:
                gc.collect()
                if ctx.cuda:
                    torch.cuda.empty_cache()
            params = built.get(size, 0)
            ratio = params / est["params"] if est.get("params") else 1.0
            note = f"{params / 1e6:.0f} M params" + ("" if 0.95 <= ratio <= 1.05 else
                                                      f" (README: {est['params'] / 1e6:.0f} M)")
            if not ctx.cuda:
                report(Row(name, "n/a", f"{note}; ran on CPU (batch {batch}), no GPU memory to measure",
                           expected, time.perf_counter() - t0))
                continue
            # what this run added: anything a previous run left behind is not counted
            peak = torch.cuda.max_memory_allocated() - before[0]
            reserved = torch.cuda.max_memory_reserved() - before[1]
            result = "ok"
            if column in est and reserved > est[column]:
                result = "OVER"
            if not 0.95 <= ratio <= 1.05:
                result = "FAIL"
            report(Row(name, result, f"{gb(peak)} (reserved {gb(reserved)}); {note}", expected,
                       time.perf_counter() - t0))


# --------------------------------------------------------------------------------------------


def print_table(rows: list[Row], header_note: str) -> None:
    head = ("check", "result", "measured", "expected", "s")
    table = [head] + [(r.check, r.result, r.measured, r.expected, f"{r.seconds:.0f}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print(header_note)
    for k, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(SIZES),
                        help=f"model sizes for the memory rows, comma-separated (default: {','.join(SIZES)})")
    parser.add_argument("--model", default="tiny.en", help="real model the transcription checks load")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["training", "torchrun", "transcribe", "memory"], help="groups of checks to leave out")
    parser.add_argument("--keep", type=Path, help="keep the scratch files in this folder")
    parser.add_argument("--cpu-plumbing", action="store_true",
                        help="without a GPU: run what can run on the CPU, to test this script itself "
                             "(small batches; says nothing about GPUs)")
    parser.add_argument("--nccl-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nccl_worker:
        return nccl_worker()

    import torch

    if not torch.cuda.is_available() and not args.cpu_plumbing:
        if torch.version.cuda is None and shutil.which("nvidia-smi"):
            print(f"nvidia-smi is here, but this torch {torch.__version__} is a CPU-only build: install the "
                  "CUDA build (pytorch.org) and run this again", file=sys.stderr)
            return 1
        print(f"no CUDA GPU visible to PyTorch (torch {torch.__version__}): nothing to check on this "
              "machine; run bench/gpu_check.py where there is an NVIDIA GPU")
        return 0
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of each run would drown the rows
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="whisperft-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, device, workdir)
    if ctx.cuda:
        names = sorted({torch.cuda.get_device_name(i) for i in range(ctx.n_gpus)})
        note = (f"{ctx.n_gpus} x {', '.join(names)} ({gb(torch.cuda.get_device_properties(0).total_memory)}), "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        note = f"CPU plumbing run (no GPU): torch {torch.__version__}; nothing here measures a GPU"
        sizes = sizes[:1]
    print(note, file=sys.stderr)

    rows: list[Row] = []

    def report(row: Row) -> None:
        rows.append(row)
        print(f"[{row.result}] {row.check} ({row.seconds:.0f} s) {row.measured}", file=sys.stderr, flush=True)

    def run(name: str, fn, *a):
        t0 = time.perf_counter()
        try:
            measured, expected = fn(*a)
            row = Row(name, "ok", measured, expected)
        except Skip as why:
            row = Row(name, "skip", str(why))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            row = Row(name, "FAIL", one_line(exc))
        row.seconds = time.perf_counter() - t0
        report(row)

    try:
        if "training" not in args.skip:
            run("train fp32 (baseline)", check_fp32, ctx)
            run("fp16 AMP + loss scaling", check_fp16, ctx)
            run("bf16 AMP", check_bf16, ctx)
            run("8-bit AdamW", check_adam8bit, ctx)
            run("gradient checkpointing", check_checkpointing, ctx)
            run("LoRA r=8", check_lora, ctx)
            run("resume", check_resume, ctx)
        if "torchrun" not in args.skip:
            run("torchrun + NCCL", check_torchrun, ctx)
        if "transcribe" not in args.skip:
            speech = Speech(ctx)
            run("transcribe, torch backend", check_transcribe, ctx, speech, "torch")
            run("transcribe, ct2 backend", check_transcribe, ctx, speech, "ct2")
        if "memory" not in args.skip:
            memory_rows(ctx, sizes, report)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, note)
    failed = [r for r in rows if r.result in FAILED]
    print(f"gpu check: {len(failed)} of {len(rows)} checks FAILED: {', '.join(r.check for r in failed)}" if failed
          else f"gpu check: all {len(rows)} checks ok (or skipped, as said)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
