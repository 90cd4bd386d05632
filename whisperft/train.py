"""Fine-tuning: `run_finetuning.py` / `whisperft train`.

The loop reads top to bottom (nanoGPT's shape): learning rate -> micro-steps under autocast
-> clip -> optimizer step -> log -> evaluate/checkpoint. Several GPUs or machines come from
Hugging Face Accelerate (`accelerate launch` or `torchrun` around the same script): it wraps
the model in DDP and handles mixed precision; each rank takes its own share of every step's
batches; only the main process logs and saves.

Outputs in --save-dir: best_model.pt and last_model.pt (openai-whisper format: `whisper`,
faster-whisper via export, and our transcribe take them), stepN.pt with
--save-all-checkpoints, args.json, metrics.jsonl, loss_curve.png. last_model.pt also holds
everything resume needs (optimizer, step, RNG, best loss), so `--resume last_model.pt`
continues exactly where the run stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .devices import mps_available
from .errors import UserError
from .fileio import atomic_dir, atomic_write, atomic_write_text, write_json_atomic
from .models import base_model, trainable_names
from .options import opt
from .tokens import IGNORE_INDEX

AMP_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}


@dataclass
class TrainConfig:
    train_json: str = opt(help="training manifest(s) from create_data.py; several as 'a.json,b.json'")
    dev_json: str = opt(None, "validation manifest(s), comma-separated")
    model: str = opt("tiny.en", "model to start from: name (tiny.en, base, large-v3, ...), Hub id, "
                     "folder, openai .pt or CTranslate2 folder")
    save_dir: str = opt("output", "where checkpoints, logs and the loss curve go")
    batch_size: int = opt(1, "examples per micro-batch (per process)")
    dev_batch_size: int = opt(16, "examples per validation batch")
    accum_grad_steps: int = opt(64, "micro-batches per optimizer step (effective batch = batch size x this x processes)")
    lr: float = opt(1e-4, "peak learning rate (reached after the warm-up, then linear decay to 0)")
    warmup_steps: int = opt(500, "optimizer steps of linear learning-rate warm-up")
    train_steps: int = opt(5000, "optimizer steps to train")
    eval_steps: int = opt(500, "evaluate and checkpoint every this many steps (and at the end)")
    log_steps: int = opt(10, "print the training loss every this many steps")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    weight_decay: float = opt(0.0, "AdamW weight decay (0 = Adam, as jumon/whisper-finetuning)")
    seed: int = opt(42, "random seed (data order, prompt/no-timestamp sampling, init)")
    device: str = opt(None, "cuda, cuda:1, mps, cpu (default: a CUDA GPU, else an Apple GPU, else the CPU); "
                      "ignored under accelerate launch")
    num_workers: int = opt(None, "data-loading processes (default: 4 on GPU, 0 on CPU)")
    save_all_checkpoints: bool = opt(False, "also keep stepN.pt at every evaluation")
    train_only_decoder: bool = opt(False, "freeze the encoder: no encoder gradients or optimizer state")
    cache_encoder_outputs: bool = opt(True, "with --train-only-decoder: encode each window once "
                                      "(float16, memory-mapped in SAVE_DIR/encoder_cache) and train "
                                      "the decoder from that")
    prompt_use_rate: float = opt(0.5, "share of examples conditioned on the previous text (prompt)")
    no_timestamps_rate: float = opt(0.5, "share of examples trained without timestamps")
    no_timestamps_training: bool = opt(False, "train without timestamp tokens at all")
    use_amp: bool = opt(False, "mixed precision: fp16 with loss scaling on CUDA, or bf16 with "
                        "AMP_DTYPE=bfloat16; on CPU bf16 only if WHISPERFT_CPU_AMP=1 (it is slower there)")
    use_adam_8bit: bool = opt(False, "8-bit AdamW from bitsandbytes (4x less optimizer memory)")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward: less memory, ~20-30%% slower")
    eval_wer: int = opt(0, "also decode this many validation examples and report WER (0 = off)")
    resume: str = opt(None, "continue from a last_model.pt (weights, optimizer, step, data order)")
    max_bad_steps: int = opt(10, "stop after this many consecutive steps with a NaN/inf loss")
    lora_rank: int = opt(0, "train LoRA adapters of this rank instead of every weight (0 = full "
                         "fine-tuning); best_model.pt/last_model.pt are saved merged")
    lora_alpha: float = opt(None, "LoRA scaling numerator (default: 2 x rank)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA input")
    lora_targets: str = opt("q_proj,k_proj,v_proj,out_proj,fc1,fc2",
                            "comma-separated names of the linear layers that get adapters")


# --------------------------------------------------------------------------------------------
# helpers the loop calls


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then linear decay to 0 at train_steps (jumon's schedule)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    remaining = max(cfg.train_steps - step, 0)
    return cfg.lr * remaining / max(cfg.train_steps - cfg.warmup_steps, 1)


def make_optimizer(params: list, cfg: TrainConfig, device: torch.device):
    if cfg.use_adam_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("--use-adam-8bit needs bitsandbytes: pip install bitsandbytes "
                            "(official wheels for Linux, Windows and macOS; no DLL patching)") from None
        if device.type == "cpu":
            print("note: 8-bit Adam on CPU saves optimizer memory but steps slower than fused AdamW",
                  file=sys.stderr)
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fused AdamW steps ~4x faster than the for-each one on CPU, and is the fast path on CUDA
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def mixed_precision(cfg: TrainConfig, device: torch.device) -> str:
    """Accelerate's mixed_precision for --use-amp on this device ('no', 'fp16' or 'bf16')."""
    if not cfg.use_amp:
        return "no"
    gpu = device.type in ("cuda", "mps")
    wanted = os.environ.get("AMP_DTYPE", "float16" if gpu else "bfloat16")
    if wanted not in AMP_DTYPES:
        raise UserError(f"AMP_DTYPE={wanted!r}: use bfloat16 or float16")
    if device.type == "mps":  # fp16 autocast with loss scaling, as on CUDA
        return AMP_DTYPES[wanted]
    if device.type == "cuda":
        if wanted == "bfloat16" and not torch.cuda.is_bf16_supported():
            print("note: this GPU has no bfloat16; using float16 with loss scaling", file=sys.stderr)
            return "fp16"
        return AMP_DTYPES[wanted]
    if os.environ.get("WHISPERFT_CPU_AMP") == "1" and wanted == "bfloat16":
        return "bf16"
    print("note: --use-amp ignored on CPU: bf16 autocast measured ~17x slower than fp32 here "
          "(bench/bench_train.py); set WHISPERFT_CPU_AMP=1 to force it", file=sys.stderr)
    return "no"


def _pyplot():
    """matplotlib.pyplot (Agg), imported the first time in a thread of its own: pyparsing, which
    matplotlib imports, keeps the frames that first import it alive for good, and the trainer's
    would keep the model, the optimizer and the data workers with them."""
    if "matplotlib.pyplot" not in sys.modules:
        def load():
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        thread = threading.Thread(target=load)
        thread.start()
        thread.join()
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(history: list[dict], path: Path) -> None:
    """Train and validation loss against step, as a PNG (written atomically)."""
    plt = _pyplot()

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    dev = [(h["step"], h["dev_loss"]) for h in history if "dev_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", alpha=0.8)
    if dev:
        ax.plot(*zip(*dev), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("whisperft fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_write(path) as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)


class TargetLoss(torch.nn.Module):
    """Whisper plus its cross-entropy, projecting onto the vocabulary only where there is a target.

    transformers' loss projects every decoder position onto the 51,864-token vocabulary and
    then ignores the prompt and padding positions; those are often half of a batch (a prompt
    may take 223 tokens) and that projection is the decoder's largest matmul, forward and
    backward. Picking the target positions first gives the same loss for less work. Wrapping
    the model in a module keeps DDP's gradient hooks in the forward pass.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model  # WhisperForConditionalGeneration, or a PEFT model around one

    def forward(self, decoder_input_ids, decoder_attention_mask, labels, input_features=None,
                encoder_outputs=None, reduction: str = "mean"):
        whisper = base_model(self.model)
        hidden = whisper.model(input_features=input_features, encoder_outputs=encoder_outputs,
                               decoder_input_ids=decoder_input_ids,
                               decoder_attention_mask=decoder_attention_mask,
                               use_cache=False).last_hidden_state
        keep = labels != IGNORE_INDEX
        logits = whisper.proj_out(hidden[keep])
        return torch.nn.functional.cross_entropy(logits.float(), labels[keep], reduction=reduction)


@torch.no_grad()
def evaluate_loss(net: TargetLoss, loader, device, autocast) -> float:
    """Token-weighted mean cross-entropy over the validation set."""
    net.eval()
    total, tokens = 0.0, 0
    for batch in loader:
        labels = batch["labels"].to(device)
        with autocast():
            loss = net(input_features=batch["input_features"].to(device),
                       decoder_input_ids=batch["decoder_input_ids"].to(device),
                       decoder_attention_mask=batch["decoder_attention_mask"].to(device),
                       labels=labels, reduction="sum")
        total += loss.item()
        tokens += int((labels != IGNORE_INDEX).sum())
    net.train()
    return total / max(tokens, 1)


@torch.no_grad()
def evaluate_wer(bundle, dataset, layout, n: int, device) -> float:
    """WER of greedy decoding (timestamps on, previous text as prompt) on the first n examples."""
    from .metrics import score

    model = base_model(bundle.model)
    model.eval()
    pairs = []
    for i in range(min(n, len(dataset))):
        r = dataset.records[i]
        feats = dataset.features(r)[None].to(device)
        prefix = layout.prefix(r.language, no_timestamps=False)
        prompt = layout.prompt_ids(r.prompt)
        ids = model.generate(feats, decoder_input_ids=torch.tensor([prompt + prefix], device=device),
                             return_timestamps=True, max_new_tokens=220)
        ids = (ids.sequences if hasattr(ids, "sequences") else ids)[0].tolist()
        text = bundle.tokenizer.decode([t for t in ids if t < layout.eot], skip_special_tokens=True)
        reference = bundle.tokenizer.decode(layout.encode_text(r.text), skip_special_tokens=True)
        pairs.append((str(i), reference, text))
    model.train()
    report = score(pairs, metric="WER", language=dataset.records[0].language or "en")
    return report.weighted_average()


# Ctrl-C, `kill`, and Windows' Ctrl-Break / console close.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, n))


class StopFlag:
    """The stop signals, for the whole of a run.

    Before the loop (loading, encoder cache, first evaluation) nothing is trained yet: a signal
    aborts at once, and what was half-written is removed on the way out. In the loop it asks
    for the step to finish, a resumable checkpoint and a clean exit; a second one aborts.
    """

    def __init__(self):
        self.signal = None
        self.graceful = False
        self._old = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if not self.graceful or self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, saving, then stopping "
              "(press again to abort without saving)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """In a data-loading worker: a Ctrl-C to the terminal's process group is the trainer's to
    handle (it finishes its step); a worker exits when the trainer does."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def workers_ignore_stop_signals():
    """Start DataLoader workers inside this: they inherit ignored stop signals from their first
    instruction on, under fork and spawn alike (ignored signals survive exec, and Python keeps
    an ignored SIGINT ignored); `ignore_stop_signals` as worker_init_fn covers Windows."""
    old = {}
    for sig in STOP_SIGNALS:
        try:
            old[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if mps_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and mps_available():
        torch.mps.set_rng_state(state["mps"])


def save_checkpoint(bundle, path: Path, train_state: dict | None = None,
                    dtype: torch.dtype = torch.float32) -> None:
    """openai-whisper checkpoint (+ our tokenizer/generation config, + resume state), atomic.
    A LoRA model is saved merged (downstream tools take plain weights)."""
    from .models import atomic_torch_save, openai_checkpoint

    ckpt = openai_checkpoint(bundle, dtype)
    if train_state is not None:
        ckpt["whisperft_train_state"] = train_state
    try:
        atomic_torch_save(ckpt, path)
    except OSError as exc:
        raise UserError(f"{path}: could not save the checkpoint ({exc.strerror or exc}); "
                        "the previous one is intact") from None


# --------------------------------------------------------------------------------------------
# resume: what a checkpoint must agree with to continue exactly

# Flags whose change breaks an exact continuation: which batches come, which examples get a
# prompt or timestamps, which weights train and with what optimizer.
RESUME_FIXED = ("batch_size", "seed", "prompt_use_rate", "no_timestamps_rate", "no_timestamps_training",
                "train_only_decoder", "cache_encoder_outputs", "use_amp", "use_adam_8bit", "lora_rank",
                "lora_alpha", "lora_dropout", "lora_targets")
# Flags that only reshape the schedule from the resumed step on: allowed, and said.
RESUME_SCHEDULE = ("train_steps", "lr", "warmup_steps", "weight_decay", "max_grad_norm")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_resume_flags(state: dict, cfg: TrainConfig, world: int, train_fingerprint: str) -> list[str]:
    """Refuse (one line) a resume whose flags change the run; return notes for safe changes."""
    saved = json.loads(state.get("config") or "{}")
    changed = [f"{_flag(n)} {saved[n]} -> {getattr(cfg, n)}" for n in RESUME_FIXED
               if n in saved and saved[n] != getattr(cfg, n)]
    if cfg.lora_rank and saved.get("model") not in (None, cfg.model):
        changed.append(f"--model {saved['model']} -> {cfg.model}")
    if "accum_grad_steps" in saved:
        was, now = saved["accum_grad_steps"] * state.get("world", 1), cfg.accum_grad_steps * world
        if was != now:
            changed.append(f"micro-batches per step (--accum-grad-steps x processes) {was} -> {now}")
    if state.get("train_data_sha256", train_fingerprint) != train_fingerprint:
        changed.append(f"--train-json {cfg.train_json}: not the manifest(s) of that run")
    if changed:
        raise UserError(f"--resume {cfg.resume}: {'; '.join(changed)}: that would not continue the run "
                        f"(resume with its flags, or start a new run with --model {cfg.resume})")
    step = int(state["step"])
    return [f"note: {_flag(n)} {saved[n]} -> {getattr(cfg, n)} on resume: the learning-rate schedule "
            f"follows the new value from step {step} on" for n in RESUME_SCHEDULE
            if n in saved and saved[n] != getattr(cfg, n)]


def load_optimizer_state(optimizer, state: dict, names: list[str], where: str) -> None:
    """Optimizer state matched to the parameters by name; a different set is refused."""
    opt_state = state["optimizer"]
    saved = state.get("param_names")
    if saved is None:  # a checkpoint that kept no names: only the count can be checked
        count = sum(len(g["params"]) for g in opt_state["param_groups"])
        if count != len(names):
            raise UserError(f"--resume {where}: its optimizer covers {count} tensors, this model trains "
                            f"{len(names)}: not the same run's model")
    elif saved != names:
        only_saved, only_here = sorted(set(saved) - set(names)), sorted(set(names) - set(saved))
        if only_saved or only_here:
            raise UserError(f"--resume {where}: trained tensors differ (only in the checkpoint: "
                            f"{only_saved[:2]}, only here: {only_here[:2]}): not the same run's model")
        position = {n: i for i, n in enumerate(saved)}
        old = opt_state["state"]
        opt_state = {"state": {i: old[position[n]] for i, n in enumerate(names) if position[n] in old},
                     "param_groups": [{**opt_state["param_groups"][0], "params": list(range(len(names)))}]}
    optimizer.load_state_dict(opt_state)


def read_resume_state(path: str) -> dict:
    resume = Path(path)
    if not resume.is_file():
        raise UserError(f"--resume {resume}: no such checkpoint")
    from .models import load_weights_only

    state = load_weights_only(resume).get("whisperft_train_state")  # a code-running pickle is refused
    if state is None:
        raise UserError(f"{resume}: holds weights but no training state to resume "
                        "(use it as --model to start a new run from it)")
    return state


# --------------------------------------------------------------------------------------------
# set-up


def _add_lora(bundle, cfg: TrainConfig, train_state: dict | None) -> None:
    """Wrap bundle.model with LoRA adapters (restored from `train_state` when resuming)."""
    try:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    except ImportError:
        raise UserError("--lora-rank needs peft: pip install 'whisperft[lora]'") from None
    targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
                        lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none")
    try:
        peft_model = get_peft_model(bundle.model, config)
    except ValueError as exc:
        raise UserError(f"--lora-targets {cfg.lora_targets}: {str(exc).splitlines()[0]}") from None
    if train_state is not None:
        set_peft_model_state_dict(peft_model, train_state["adapter"])
    bundle.model = peft_model


def _save_adapter(peft_model, folder: Path) -> None:
    with atomic_dir(folder) as tmp:
        peft_model.save_pretrained(tmp)


def check_config(cfg: TrainConfig) -> None:
    for name in ("batch_size", "dev_batch_size", "accum_grad_steps", "train_steps", "eval_steps", "log_steps"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{_flag(name)} must be at least 1")
    for name in ("prompt_use_rate", "no_timestamps_rate"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise UserError(f"{_flag(name)} must be between 0 and 1")


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    from .devices import choose_device

    probe = torch.device(choose_device(cfg.device))
    kwargs = []
    if os.name == "nt":  # Windows' PyTorch has no NCCL: several processes talk over gloo
        from accelerate.utils import InitProcessGroupKwargs

        kwargs.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(cpu=probe.type == "cpu", mixed_precision=mixed_precision(cfg, probe), kwargs_handlers=kwargs)


def load_for_training(cfg: TrainConfig, train_state: dict | None):
    """The bundle to train: a resumed LoRA run from its base model + the adapter, a resumed full
    run from the checkpoint's weights, a new run from --model."""
    from .models import load_model

    if train_state is None:
        bundle = load_model(cfg.model)
    else:
        bundle = load_model(train_state.get("lora_base") or cfg.resume)
    if cfg.lora_rank:
        _add_lora(bundle, cfg, train_state)
    if cfg.train_only_decoder:
        for p in base_model(bundle.model).model.encoder.parameters():
            p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        bundle.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        bundle.model.config.use_cache = False
    return bundle


def make_loaders(cfg: TrainConfig, train_set, dev_set, layout, world: int, rank: int, start_step: int,
                 workers: int):
    from .data import BatchStream, BucketBatchSampler, Collator, EpochKeyed

    collator = Collator(layout.eot)
    sampler = BucketBatchSampler([train_set.label_length(i) for i in range(len(train_set))],
                                 cfg.batch_size, seed=cfg.seed)
    stream = BatchStream(sampler, world, rank, start_step * cfg.accum_grad_steps)
    # Each loader draws its workers' seeds from its own generator: iterators started at other
    # moments (a resumed run starts its loaders after restoring the RNG) must not move the
    # global RNG that dropout draws from, or a resumed run would not be exact.
    common = dict(collate_fn=collator, num_workers=workers,
                  worker_init_fn=ignore_stop_signals if workers else None)
    seeded = lambda: torch.Generator().manual_seed(cfg.seed)  # noqa: E731
    train_loader = torch.utils.data.DataLoader(EpochKeyed(train_set), batch_sampler=stream, generator=seeded(),
                                               **common)
    dev_loader = None
    if dev_set is not None:  # workers kept: under spawn each restart re-imports everything
        dev_loader = torch.utils.data.DataLoader(dev_set, batch_size=cfg.dev_batch_size, shuffle=False,
                                                 persistent_workers=workers > 0, generator=seeded(), **common)
    return train_loader, dev_loader


# --------------------------------------------------------------------------------------------
# the run


def train(cfg: TrainConfig, stop_after_steps: int | None = None) -> int:
    """Run the fine-tuning `cfg` describes. `stop_after_steps` acts as a Ctrl-C arriving
    after that many steps of this run (tests of resume use it)."""
    with StopFlag() as stop:
        return _train(cfg, stop, stop_after_steps)


def _train(cfg: TrainConfig, stop: StopFlag, stop_after_steps: int | None) -> int:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .data import DataOptions, WhisperDataset, manifests_fingerprint, read_manifests
    from .tokens import TokenLayout

    # ---- set-up: inputs first (before anything slow), then device, model, data ---------------
    check_config(cfg)
    train_state = read_resume_state(cfg.resume) if cfg.resume else None
    train_records = read_manifests(cfg.train_json)
    dev_records = read_manifests(cfg.dev_json) if cfg.dev_json else None
    train_fingerprint = manifests_fingerprint(cfg.train_json)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    notes = check_resume_flags(train_state, cfg, world, train_fingerprint) if train_state else []
    set_seed(cfg.seed)
    save_dir = Path(cfg.save_dir)

    bundle = load_for_training(cfg, train_state)
    model = bundle.model
    model.to(device)
    model.train()
    layout = TokenLayout(bundle.tokenizer, bundle.is_multilingual, model.config.max_target_positions)
    data_opts = DataOptions(cfg.prompt_use_rate, cfg.no_timestamps_rate, cfg.no_timestamps_training, cfg.seed)
    train_set = WhisperDataset(train_records, layout, bundle.n_mels, data_opts)
    dev_set = None
    if dev_records is not None:
        # validation is deterministic: always prompted, always with timestamps (as jumon)
        dev_opts = DataOptions(1.0, 0.0, cfg.no_timestamps_training, cfg.seed)
        dev_set = WhisperDataset(dev_records, layout, bundle.n_mels, dev_opts)

    names = trainable_names(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg, device)
    net, optimizer = accelerator.prepare(TargetLoss(model), optimizer)

    start_step = 0
    best_loss = math.inf
    history: list[dict] = []
    if train_state is not None:
        load_optimizer_state(optimizer, train_state, names, cfg.resume)
        start_step = int(train_state["step"])
        best_loss = float(train_state["best_loss"])
        history = json.loads(train_state["history"])
        _set_rng_state(train_state["rng"])
        if train_state.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(train_state["scaler"])  # fp16's loss scale
        if start_step >= cfg.train_steps:
            raise UserError(f"--resume {cfg.resume}: already at step {start_step} of --train-steps "
                            f"{cfg.train_steps}; raise --train-steps to continue")
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    train_loader, dev_loader = make_loaders(cfg, train_set, dev_set, layout, world, rank, start_step, workers)

    enc_cache = None
    if cfg.train_only_decoder and cfg.cache_encoder_outputs:
        from .encoder_cache import EncoderCache

        if main:
            enc_cache = EncoderCache.build(base_model(bundle.model), train_set, save_dir / "encoder_cache", device)
        accelerator.wait_for_everyone()
        if not main:  # the other ranks open what the main one wrote
            enc_cache = EncoderCache.build(base_model(bundle.model), train_set, save_dir / "encoder_cache", device,
                                           progress=False)

    def encoder_states(batch) -> torch.Tensor:
        """Cached encoder outputs; rows whose audio was trimmed this step are encoded anew."""
        states = enc_cache.get(batch["index"], device)
        fresh = [i for i, t in enumerate(batch["trimmed"]) if t]
        if fresh:
            with torch.no_grad():
                feats = batch["input_features"][fresh].to(device)
                states[fresh] = base_model(bundle.model).model.encoder(feats).last_hidden_state.float()
        return states

    n_train = sum(p.numel() for p in params)
    n_all = sum(p.numel() for p in bundle.model.parameters())
    if main:
        for note in notes:
            print(note, file=sys.stderr)
        save_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(save_dir / "args.json", dataclasses.asdict(cfg))
        print(f"model {bundle.source}: {n_all / 1e6:.1f}M parameters, {n_train / 1e6:.1f}M trained; "
              f"{len(train_set)} training examples; device {device} x {world}; "
              f"effective batch {cfg.batch_size * cfg.accum_grad_steps * world}", flush=True)
    metrics_path = save_dir / "metrics.jsonl"
    if main and train_state is not None:
        # After a kill -9 the file also holds lines logged after the checkpoint; the resumed
        # run logs those steps again: start from what the checkpoint knew.
        atomic_write_text(metrics_path, "".join(json.dumps(e) + "\n" for e in history))

    def log(entry: dict) -> None:
        history.append(entry)
        if main:
            with open(metrics_path, "a", encoding="utf-8", newline="\n") as fh:
                fh.write(json.dumps(entry) + "\n")

    def checkpoint(step: int, name: str, with_state: bool, dtype=torch.float32) -> None:
        state = None
        if with_state:
            state = {"step": step, "optimizer": optimizer.state_dict(), "best_loss": best_loss,
                     "rng": _rng_state(), "history": json.dumps(history),
                     "config": json.dumps(dataclasses.asdict(cfg)), "param_names": names,
                     "world": world, "train_data_sha256": train_fingerprint,
                     "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
            if cfg.lora_rank:
                from peft import get_peft_model_state_dict

                state["lora_base"] = (train_state or {}).get("lora_base") or cfg.model
                state["adapter"] = {k: v.detach().cpu() for k, v in
                                    get_peft_model_state_dict(model).items()}
        if main:
            if cfg.lora_rank and with_state:
                _save_adapter(model, save_dir / "lora_adapter")
            save_checkpoint(bundle, save_dir / name, state, dtype)

    def validate(step: int) -> None:
        nonlocal best_loss
        if dev_loader is None:
            checkpoint(step, "best_model.pt", with_state=False, dtype=torch.float16)
            return
        with workers_ignore_stop_signals():
            dev_batches = iter(dev_loader)
        dev_loss = evaluate_loss(net, dev_batches, device, accelerator.autocast)
        entry = {"step": step, "dev_loss": dev_loss}
        if cfg.eval_wer and main:
            entry["dev_wer"] = evaluate_wer(bundle, dev_set, layout, cfg.eval_wer, device)
        improved = dev_loss < best_loss
        if improved:
            best_loss = dev_loss
            checkpoint(step, "best_model.pt", with_state=False, dtype=torch.float16)
        log(entry)
        if main:
            wer = f" | WER {entry['dev_wer']:.2%}" if "dev_wer" in entry else ""
            tqdm.write(f"Validation loss: {dev_loss:.4f}{wer}{' (new best!)' if improved else ''}")
            plot_loss_curve(history, save_dir / "loss_curve.png")

    # jumon saves best_model.pt only when a later evaluation beats the initial one, so a short
    # run could end with none: the initial evaluation counts as the first best here.
    if start_step == 0 and dev_loader is not None:
        validate(0)

    # ---- the loop ---------------------------------------------------------------------------
    with workers_ignore_stop_signals():
        batches = iter(train_loader)
    stop.graceful = True  # from here a signal finishes the step and saves
    bad_steps = 0
    interval_losses: list[float] = []
    tokens_seen = padded_seen = 0
    step = start_step
    bar = tqdm(total=cfg.train_steps, initial=start_step, desc="training", disable=not main,
               dynamic_ncols=True)
    t_last = time.time()
    while step < cfg.train_steps:
        lr = get_lr(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in range(cfg.accum_grad_steps):
            batch = next(batches)
            tokens_seen += batch["n_tokens"]
            padded_seen += batch["n_padded"]
            last_micro = micro == cfg.accum_grad_steps - 1
            # gradients are all-reduced once per optimizer step, not per micro-batch
            sync = accelerator.no_sync(net) if not last_micro else contextlib.nullcontext()
            if enc_cache is not None:
                inputs = {"encoder_outputs": (encoder_states(batch),)}
            else:
                inputs = {"input_features": batch["input_features"].to(device)}
            with sync, accelerator.autocast():
                loss = net(**inputs,
                           decoder_input_ids=batch["decoder_input_ids"].to(device),
                           decoder_attention_mask=batch["decoder_attention_mask"].to(device),
                           labels=batch["labels"].to(device)) / cfg.accum_grad_steps
                accelerator.backward(loss)
            step_loss += loss.item()
        stopping = stop.signal is not None or (
            stop_after_steps is not None and step + 1 - start_step >= stop_after_steps)
        if world > 1:
            # One all-reduce agrees on the step's mean loss and on stopping: a signal that
            # reached one rank stops every rank after the same step, none is left waiting.
            agreed = accelerator.reduce(torch.tensor([step_loss, float(stopping)], device=device), "sum")
            step_loss, stopping = agreed[0].item() / world, agreed[1].item() > 0
        if math.isfinite(step_loss):
            bad_steps = 0
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
        else:
            bad_steps += 1
            if main:
                tqdm.write(f"Step {step + 1}: loss is {step_loss}; step skipped")
            if bad_steps >= cfg.max_bad_steps:
                raise UserError(f"{bad_steps} steps in a row with a non-finite loss; lower --lr, "
                                "or drop --use-amp; last_model.pt holds the last good state")
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        if math.isfinite(step_loss):
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}")
            interval_losses.append(step_loss)
        if interval_losses and (step % cfg.log_steps == 0 or step == cfg.train_steps):
            now = time.time()
            # the mean over the steps since the last line: one step's loss is too noisy
            mean_loss = sum(interval_losses) / len(interval_losses)
            entry = {"step": step, "loss": mean_loss, "lr": lr,
                     "padding": 1 - tokens_seen / max(padded_seen, 1),
                     "sec_per_step": (now - t_last) / len(interval_losses)}
            t_last, interval_losses = now, []
            log(entry)
            if main:
                tqdm.write(f"Step {step}: loss={mean_loss:.2f} | lr={lr:.2g} | "
                           f"padding={entry['padding']:.0%}")
        if step % cfg.eval_steps == 0 or step == cfg.train_steps:
            validate(step)
            if cfg.save_all_checkpoints:
                checkpoint(step, f"step{step}.pt", with_state=False, dtype=torch.float16)
            checkpoint(step, "last_model.pt", with_state=True)
            t_last = time.time()  # step times exclude evaluation and saving
        elif stopping:
            checkpoint(step, "last_model.pt", with_state=True)
        if stopping:
            if main:
                tqdm.write(f"stopped at step {step}; resume with --resume {save_dir / 'last_model.pt'}")
            break
    bar.close()
    del batches  # its data workers stop now, not whenever this frame is collected
    if main and not (save_dir / "loss_curve.png").exists() and history:
        plot_loss_curve(history, save_dir / "loss_curve.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0
