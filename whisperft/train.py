"""Fine-tuning: `run_finetuning.py` / `whisperft train`.

The loop reads top to bottom (nanoGPT's shape): learning rate -> micro-steps under autocast
-> clip -> optimizer step -> log -> evaluate/checkpoint. Several GPUs or machines come from
Hugging Face Accelerate (`accelerate launch` or `torchrun` around the same script): it wraps
the model in DDP (or FSDP, as its configuration says) and handles mixed precision; each rank
takes its share of every step's batches; only the main process logs and saves.

Outputs in --save-dir: best_model.pt and last_model.pt (openai-whisper format: `whisper`,
faster-whisper via export, and our transcribe take them), stepN.pt with --save-all-checkpoints,
args.json, metrics.jsonl, loss_curve.png, and runs/ with --report-to. last_model.pt also holds
what resume needs (optimizer, step, RNG, best loss and WER): `--resume last_model.pt`
continues exactly where the run stopped.

Here: the set-up (`_set_up`), the loop (`_train`), validation and checkpoints. Beside it:
stop_signals.py (Ctrl-C and `kill` during a run), resume.py (checking and restoring a
checkpoint's training state), sharding.py (FSDP: whole checkpoints from shards), evaluation.py
(the loss and the validation measures), loss_curve.py, tracking.py (--report-to), trained_model.py
(loading, LoRA, freezing), preserve.py (--preserve-weight).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .evaluation import check_dynamic_ctx, describe_decoding, objective, evaluate_decoding, evaluate_loss
from .fileio import atomic_dir, atomic_write_text, write_json_atomic
from .conversions import base_model
from .loss_curve import plot_loss_curve
from .models import trainable_names
from .options import flag, opt
from .preserve import anchor_state, check_preserve_weight, make_anchor
from .resume import check_resume_flags, read_resume_state, restore_train_state, rng_state, started_from
from .run_commands import print_end_of_run
from .saving import save_checkpoint
from .sharding import WholeOptimizerState, check_sharded_flags, gathered_bundle, sharding_note, with_cpu_fsdp
from .stop_signals import StopFlag, ignore_stop_signals, workers_ignore_stop_signals
from .tracking import REPORT_TO, accelerator_kwargs, check_report_to, start_tracking, track
from .trained_model import load_for_training


@dataclass
class TrainConfig:
    train_json: str = opt(help="training manifest(s) from create_data.py; several as 'a.json,b.json'")
    dev_json: str = opt(None, "validation manifest(s), comma-separated")
    model: str = opt("tiny.en", "model to start from: name (tiny.en, base, large-v3, ...), Hub id, "
                     "folder, openai .pt or CTranslate2 folder")
    save_dir: str = opt("output", "where checkpoints, logs and the loss curve go")
    batch_size: int = opt(1, "examples per micro-batch (per process)")
    dev_batch_size: int = opt(16, "examples per validation batch")
    accum_grad_steps: int = opt(1, "micro-batches per optimizer step (effective batch = batch size x this x processes)")
    lr: float = opt(1e-4, "peak learning rate (reached after the warm-up, then linear decay to 0)")
    warmup_steps: int = opt(500, "optimizer steps of linear learning-rate warm-up")
    train_steps: int = opt(5000, "optimizer steps to train")
    eval_steps: int = opt(500, "evaluate and checkpoint every this many steps (and at the end)")
    log_steps: int = opt(10, "print the training loss every this many steps")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    weight_decay: float = opt(0.0, "AdamW weight decay (0 = Adam, as jumon/whisper-finetuning)")
    seed: int = opt(42, "random seed (data order, prompt/no-timestamp sampling, init)")
    deterministic: bool = opt(False, "on a GPU too, the same seed, data and flags give the same model bit "
                              "for bit (PyTorch's deterministic algorithms, slower there; on the CPU "
                              "always on: they cost nothing measured)")
    device: str = opt(None, "cuda, cuda:1, mps, cpu (default: a CUDA GPU, else an Apple GPU, else the CPU); "
                      "ignored under accelerate launch")
    num_workers: int = opt(None, "data-loading processes (default: 4 on GPU, 0 on CPU)")
    save_all_checkpoints: bool = opt(False, "also keep stepN.pt at every evaluation")
    train_only_decoder: bool = opt(False, "freeze the encoder: no encoder gradients or optimizer state")
    cache_encoder_outputs: bool = opt(True, "with --train-only-decoder: encode each window once "
                                      "(float16, memory-mapped in SAVE_DIR/encoder_cache) and train "
                                      "the decoder from that; with --dynamic-audio-ctx, the same for "
                                      "the frozen original's full-context encoding")
    prompt_use_rate: float = opt(0.5, "share of examples conditioned on the previous text (prompt)")
    no_timestamps_rate: float = opt(0.5, "share of examples trained without timestamps")
    no_timestamps_training: bool = opt(False, "train without timestamp tokens at all")
    use_amp: bool = opt(False, "mixed precision: fp16 with loss scaling on CUDA, or bf16 with "
                        "AMP_DTYPE=bfloat16; on CPU bf16 only if WHISPERFT_CPU_AMP=1 (it is slower there)")
    use_adam_8bit: bool = opt(False, "8-bit AdamW from bitsandbytes (4x less optimizer memory)")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward: less memory, ~20-30%% slower")
    eval_wer: int = opt(0, "also decode this many validation examples and report WER, timestamp "
                        "error and hallucination indicators (0 = off)")
    best_by: str = opt("loss", "what picks best_model.pt: the lowest validation loss, or the lowest "
                       "validation WER (needs --eval-wer)", choices=("loss", "wer"))
    report_to: str = opt("none", "also log metrics.jsonl's entries to TensorBoard or Weights & Biases "
                         "(offline unless WANDB_MODE is set), under SAVE_DIR/runs", choices=REPORT_TO)
    resume: str = opt(None, "continue from a last_model.pt (weights, optimizer, step, data order)")
    max_bad_steps: int = opt(10, "stop after this many consecutive steps with a NaN/inf loss")
    lora_rank: int = opt(0, "train LoRA adapters of this rank instead of every weight (0 = full "
                         "fine-tuning); best_model.pt/last_model.pt are saved merged")
    lora_alpha: float = opt(None, "LoRA scaling numerator (default: 2 x rank)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA input")
    lora_targets: str = opt("q_proj,k_proj,v_proj,out_proj,fc1,fc2",
                            "comma-separated names of the linear layers that get adapters")
    dynamic_audio_ctx: bool = opt(False, "train for a cut audio context (transcribe --audio-ctx): each "
                                  "batch encoded on its audio plus a random margin, not 30 s")
    distill_weight: float = opt(1.0, "with --dynamic-audio-ctx: weight of the KL term towards the "
                                "original model on the full context")
    preserve_weight: float = opt(0.0, "L2-SP: add W x the squared distance of the trained weights from "
                                 "where they started to the loss, so the fine-tune moves less (0 = off)")


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


# --------------------------------------------------------------------------------------------
# set-up


def check_config(cfg: TrainConfig) -> None:
    for name in ("batch_size", "dev_batch_size", "accum_grad_steps", "train_steps", "eval_steps", "log_steps"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{flag(name)} must be at least 1")
    for name in ("prompt_use_rate", "no_timestamps_rate"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise UserError(f"{flag(name)} must be between 0 and 1")
    if cfg.best_by not in ("loss", "wer"):
        raise UserError(f"--best-by {cfg.best_by}: use loss or wer")
    if cfg.best_by == "wer" and not (cfg.eval_wer > 0 and cfg.dev_json):
        raise UserError("--best-by wer needs --eval-wer N (N > 0) and --dev-json: "
                        "WER is measured on validation data")
    check_report_to(cfg.report_to)
    check_dynamic_ctx(cfg)
    check_preserve_weight(cfg.preserve_weight)


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    from .devices import choose_device, mixed_precision

    probe = torch.device(choose_device(cfg.device))
    kwargs = []
    if os.name == "nt":  # Windows' PyTorch has no NCCL: several processes talk over gloo
        from accelerate.utils import InitProcessGroupKwargs

        kwargs.append(InitProcessGroupKwargs(backend="gloo"))
    return with_cpu_fsdp(Accelerator(cpu=probe.type == "cpu", mixed_precision=mixed_precision(cfg.use_amp, probe),
                                     kwargs_handlers=kwargs, **accelerator_kwargs(cfg.report_to, cfg.save_dir)))


def make_datasets(cfg: TrainConfig, bundle, train_records, dev_records):
    """(token layout, training set, validation set or None) for the model in `bundle`."""
    from .data import DataOptions, WhisperDataset
    from .tokens import TokenLayout

    layout = TokenLayout(bundle.tokenizer, bundle.is_multilingual, bundle.model.config.max_target_positions)
    data_opts = DataOptions(cfg.prompt_use_rate, cfg.no_timestamps_rate, cfg.no_timestamps_training, cfg.seed)
    train_set = WhisperDataset(train_records, layout, bundle.n_mels, data_opts)
    dev_set = None
    if dev_records is not None:
        # validation is deterministic: always prompted, always with timestamps (as jumon)
        dev_opts = DataOptions(1.0, 0.0, cfg.no_timestamps_training, cfg.seed)
        dev_set = WhisperDataset(dev_records, layout, bundle.n_mels, dev_opts)
    return layout, train_set, dev_set


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


@dataclass
class _Run:
    """One run as the loop, validation and checkpoints share it: what set-up built, and where
    training stands (best validation loss and WER, every metrics.jsonl entry)."""

    cfg: TrainConfig
    accelerator: Any
    bundle: Any  # bundle.model is the model trained (a PEFT model with LoRA)
    layout: Any
    train_set: Any
    dev_set: Any  # None without --dev-json
    net: Any  # audio_ctx.objective around bundle.model, as accelerator.prepare returned it
    optimizer: Any
    params: list  # the trained tensors
    names: list[str]  # their names, saved for resume
    train_state: dict | None  # what --resume read
    train_fingerprint: str
    save_dir: Path
    start_step: int = 0
    best_loss: float = math.inf
    best_wer: float = math.inf  # with --eval-wer
    history: list[dict] = field(default_factory=list)
    train_loader: Any = None
    dev_loader: Any = None  # None without --dev-json
    enc_cache: Any = None  # with --train-only-decoder --cache-encoder-outputs
    teacher_cache: Any = None  # the frozen original's, with --dynamic-audio-ctx --cache-encoder-outputs
    anchor: Any = None  # with --preserve-weight: preserve.WeightAnchor

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def _set_up(cfg: TrainConfig) -> _Run:
    """Everything before the first step: inputs first (before anything slow), then device,
    model, data, optimizer, resume state, loaders, encoder cache and the run folder."""
    from accelerate.utils import set_seed

    from .data import manifests_fingerprint, read_manifests

    check_config(cfg)
    train_state = read_resume_state(cfg.resume) if cfg.resume else None
    train_records = read_manifests(cfg.train_json)
    dev_records = read_manifests(cfg.dev_json) if cfg.dev_json else None
    train_fingerprint = manifests_fingerprint(cfg.train_json)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    notes = check_resume_flags(train_state, cfg, world, train_fingerprint) if train_state else []
    check_sharded_flags(accelerator, cfg)
    set_seed(cfg.seed)

    bundle = load_for_training(cfg, train_state)
    bundle.model.to(device)
    bundle.model.train()
    layout, train_set, dev_set = make_datasets(cfg, bundle, train_records, dev_records)
    names = trainable_names(bundle.model)
    optimizer = make_optimizer([p for p in bundle.model.parameters() if p.requires_grad], cfg, device)
    net, optimizer = accelerator.prepare(objective(cfg, bundle, train_state), optimizer)
    params = [p for p in bundle.model.parameters() if p.requires_grad]  # after prepare: FSDP's shards
    run = _Run(cfg, accelerator, bundle, layout, train_set, dev_set, net, optimizer, params, names,
               train_state, train_fingerprint, Path(cfg.save_dir))
    if train_state is not None:
        whole_optimizer = WholeOptimizerState(accelerator, net, optimizer, names)
        run.start_step, run.best_loss, run.history = restore_train_state(train_state, cfg, whole_optimizer, names,
                                                                         accelerator.scaler)
        run.best_wer = float(train_state.get("best_wer", math.inf))  # absent from older checkpoints
    run.anchor = make_anchor(cfg.preserve_weight, params, names, train_state, started_from(train_state, cfg),
                             bool(cfg.lora_rank))
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    run.train_loader, run.dev_loader = make_loaders(cfg, train_set, dev_set, layout, world, rank, run.start_step,
                                                    workers)
    if cfg.train_only_decoder and cfg.cache_encoder_outputs:
        run.enc_cache = _build_encoder_cache(run, base_model(bundle.model))
    if cfg.dynamic_audio_ctx and cfg.distill_weight > 0 and cfg.cache_encoder_outputs:
        run.teacher_cache = _build_encoder_cache(run, accelerator.unwrap_model(net).teacher)
    _start_run_folder(run, notes)
    start_tracking(accelerator, cfg)
    return run


def _build_encoder_cache(run: _Run, encoder):
    """The training set's outputs of `encoder` (a Whisper model whose encoder is frozen): the
    main process writes them, the others open them."""
    from .encoder_cache import EncoderCache

    path = run.save_dir / "encoder_cache"
    cache = EncoderCache.build(encoder, run.train_set, path, run.device) if run.main else None
    run.accelerator.wait_for_everyone()
    if not run.main:
        cache = EncoderCache.build(encoder, run.train_set, path, run.device, progress=False)
    return cache


def _start_run_folder(run: _Run, notes: list[str]) -> None:
    """Resume notes, args.json and the run's summary line; a resumed run's metrics.jsonl set back
    to what its checkpoint knew."""
    cfg = run.cfg
    n_train = sum(p.numel() for p in run.params)
    n_all = sum(p.numel() for p in run.bundle.model.parameters())
    if run.main:
        for note in notes:
            print(note, file=sys.stderr)
        run.save_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run.save_dir / "args.json", dataclasses.asdict(cfg))
        print(f"model {run.bundle.source}: {n_all / 1e6:.1f}M parameters, {n_train / 1e6:.1f}M trained; "
              f"{len(run.train_set)} training examples; device {run.device} x {run.world}{sharding_note(run.accelerator)}; "
              f"effective batch {cfg.batch_size * cfg.accum_grad_steps * run.world}", flush=True)
    if run.main and run.train_state is not None:
        # After a kill -9 the file also holds lines logged after the checkpoint; the resumed
        # run logs those steps again: start from what the checkpoint knew.
        atomic_write_text(run.save_dir / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in run.history))


# --------------------------------------------------------------------------------------------
# logging, checkpoints, validation


def _say(run: _Run, message: str) -> None:
    """A line from the main process, above the progress bar."""
    from tqdm.auto import tqdm

    if run.main:
        tqdm.write(message)


def _log(run: _Run, entry: dict) -> None:
    """One metrics.jsonl entry, kept in the history too (resume and the loss curve read it), and
    given to the --report-to tracker."""
    run.history.append(entry)
    track(run.accelerator, entry)
    if run.main:
        with open(run.save_dir / "metrics.jsonl", "a", encoding="utf-8", newline="\n") as fh:
            fh.write(json.dumps(entry) + "\n")


def _resume_state(run: _Run, step: int) -> dict:
    """Everything `--resume` needs to continue exactly after `step`."""
    cfg, scaler = run.cfg, run.accelerator.scaler
    whole_optimizer = WholeOptimizerState(run.accelerator, run.net, run.optimizer, run.names)
    state = {"step": step, "optimizer": whole_optimizer.state_dict(), "best_loss": run.best_loss,
             "best_wer": run.best_wer, "rng": rng_state(), "history": json.dumps(run.history),
             "config": json.dumps(dataclasses.asdict(cfg)), "param_names": run.names,
             "world": run.world, "train_data_sha256": run.train_fingerprint,
             "scaler": scaler.state_dict() if scaler is not None else None,
             "started_from": started_from(run.train_state, cfg),
             **anchor_state(run.anchor, run.names, bool(cfg.lora_rank))}
    if cfg.lora_rank:
        from peft import get_peft_model_state_dict

        state["adapter"] = {k: v.detach().cpu() for k, v in
                            get_peft_model_state_dict(run.bundle.model).items()}
    return state


def _checkpoint(run: _Run, step: int, name: str, with_state: bool, dtype=torch.float32) -> None:
    """SAVE_DIR/name (and lora_adapter/ with a LoRA run's resume state); with_state adds what
    resume needs. Every process takes part, the main one writes."""
    state = _resume_state(run, step) if with_state else None
    bundle = gathered_bundle(run.accelerator, run.net, run.bundle)  # under FSDP: whole on the main process
    if run.main:
        if run.cfg.lora_rank and with_state:
            with atomic_dir(run.save_dir / "lora_adapter") as tmp:
                run.bundle.model.save_pretrained(tmp)
        save_checkpoint(bundle, run.save_dir / name, state, dtype)


def _validate(run: _Run, step: int) -> None:
    """Validation loss (with --eval-wer also WER, timestamp error and marks of hallucination)
    after `step`, logged and plotted; best_model.pt when the --best-by measure improves. Without
    validation data best_model.pt is written every time."""
    if run.dev_loader is None:
        _checkpoint(run, step, "best_model.pt", with_state=False, dtype=torch.float16)
        return
    with workers_ignore_stop_signals():
        dev_batches = iter(run.dev_loader)
    dev_loss = evaluate_loss(run.net, dev_batches, run.device, run.accelerator.autocast)
    entry = {"step": step, "dev_loss": dev_loss}
    if run.cfg.eval_wer and run.main:
        entry.update(evaluate_decoding(run.bundle, run.dev_set, run.layout, run.cfg.eval_wer, run.device))
    improved = _improves(run, entry)
    if improved:
        _checkpoint(run, step, "best_model.pt", with_state=False, dtype=torch.float16)
    _log(run, entry)
    if run.main:
        _say(run, f"Validation loss: {dev_loss:.4f}{describe_decoding(entry)}{' (new best!)' if improved else ''}")
        plot_loss_curve(run.history, run.save_dir / "loss_curve.png")


def _improves(run: _Run, entry: dict) -> bool:
    """Whether the validation `entry` beats the best so far by --best-by; the bests follow it.
    Only the main process decodes (the others never see a better WER), and only it saves."""
    wer = entry.get("dev_wer")
    better = {"loss": entry["dev_loss"] < run.best_loss, "wer": wer is not None and wer < run.best_wer}
    if better["loss"]:
        run.best_loss = entry["dev_loss"]
    if better["wer"]:
        run.best_wer = wer
    return better[run.cfg.best_by]


# --------------------------------------------------------------------------------------------
# the run


def train(cfg: TrainConfig, stop_after_steps: int | None = None) -> int:
    """Run the fine-tuning `cfg` describes. `stop_after_steps` acts as a Ctrl-C arriving
    after that many steps of this run (tests of resume use it)."""
    from .devices import choose_device, repeatable_kernels

    with StopFlag() as stop, repeatable_kernels(torch.device(choose_device(cfg.device)).type, cfg.deterministic):
        return _train(cfg, stop, stop_after_steps)


def _train(cfg: TrainConfig, stop: StopFlag, stop_after_steps: int | None) -> int:
    """Set-up, the first evaluation, the loop, and the loss curve of a run that logged no evaluation."""
    from tqdm.auto import tqdm

    run = _set_up(cfg)
    # jumon saves best_model.pt only when a later evaluation beats the initial one, so a short
    # run could end with none: the initial evaluation counts as the first best here.
    if run.start_step == 0 and run.dev_loader is not None:
        _validate(run, 0)

    # ---- the loop ---------------------------------------------------------------------------
    with workers_ignore_stop_signals():
        batches = iter(run.train_loader)
    stop.graceful = True  # from here a signal finishes the step and saves
    bad_steps = 0
    step = run.start_step
    bar = tqdm(total=cfg.train_steps, initial=step, desc="training", disable=not run.main, dynamic_ncols=True)
    progress = _Progress()
    while step < cfg.train_steps:
        lr = get_lr(step, cfg)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        step_loss = _forward_backward(run, batches, progress)
        stopping = stop.signal is not None or (
            stop_after_steps is not None and step + 1 - run.start_step >= stop_after_steps)
        if run.world > 1:
            # One all-reduce agrees on the step's mean loss and on stopping: a signal that
            # reached one rank stops every rank after the same step, none is left waiting.
            agreed = run.accelerator.reduce(torch.tensor([step_loss, float(stopping)], device=run.device), "sum")
            step_loss, stopping = agreed[0].item() / run.world, agreed[1].item() > 0
        bad_steps = _optimizer_step(run, step, step_loss, bad_steps)
        step += 1
        bar.update(1)

        if math.isfinite(step_loss):
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}")
            progress.losses.append(step_loss)
        if progress.losses and (step % cfg.log_steps == 0 or step == cfg.train_steps):
            _log_progress(run, step, lr, progress)
        if step % cfg.eval_steps == 0 or step == cfg.train_steps:
            _validate(run, step)
            if cfg.save_all_checkpoints:
                _checkpoint(run, step, f"step{step}.pt", with_state=False, dtype=torch.float16)
            _checkpoint(run, step, "last_model.pt", with_state=True)
            progress.since = time.time()  # step times exclude evaluation and saving
        elif stopping:
            _checkpoint(run, step, "last_model.pt", with_state=True)
        if stopping:
            _say(run, f"stopped at step {step}")
            break
    bar.close()
    del batches  # its data workers stop now, not whenever this frame is collected
    if run.main and not (run.save_dir / "loss_curve.png").exists() and run.history:
        plot_loss_curve(run.history, run.save_dir / "loss_curve.png")
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    if run.main:
        print_end_of_run(cfg, run.world, step, (run.dev_set or run.train_set).records)
    return 0


@dataclass
class _Progress:
    """What the log lines report: tokens and padding so far, the losses and time since the last line."""

    tokens: int = 0
    padded: int = 0
    losses: list[float] = field(default_factory=list)
    since: float = field(default_factory=time.time)


def _forward_backward(run: _Run, batches, progress: _Progress) -> float:
    """One optimizer step's micro-batches, forward and backward under autocast; the step's loss."""
    cfg, accelerator, device = run.cfg, run.accelerator, run.device
    step_loss = 0.0
    for micro in range(cfg.accum_grad_steps):
        batch = next(batches)
        progress.tokens += batch["n_tokens"]
        progress.padded += batch["n_padded"]
        last_micro = micro == cfg.accum_grad_steps - 1
        # gradients are all-reduced once per optimizer step, not per micro-batch
        sync = accelerator.no_sync(run.net) if not last_micro else contextlib.nullcontext()
        if run.enc_cache is not None:
            inputs = {"encoder_outputs": (_encoder_states(run, batch, run.enc_cache, base_model(run.bundle.model)),)}
        else:
            inputs = {"input_features": batch["input_features"].to(device)}
        if run.teacher_cache is not None:
            teacher = run.accelerator.unwrap_model(run.net).teacher
            inputs["teacher_states"] = _encoder_states(run, batch, run.teacher_cache, teacher)
        with sync, accelerator.autocast():
            loss = run.net(**inputs,
                           decoder_input_ids=batch["decoder_input_ids"].to(device),
                           decoder_attention_mask=batch["decoder_attention_mask"].to(device),
                           labels=batch["labels"].to(device), seconds=batch["seconds"],
                           ctx_draws=batch["ctx_draws"]) / cfg.accum_grad_steps
            accelerator.backward(loss)
        step_loss += loss.item()
    return step_loss


def _encoder_states(run: _Run, batch, cache, model) -> torch.Tensor:
    """Cached encoder outputs of `model`; rows whose audio was trimmed this step are encoded anew."""
    states = cache.get(batch["index"], run.device)
    fresh = [i for i, t in enumerate(batch["trimmed"]) if t]
    if fresh:
        with torch.no_grad():
            feats = batch["input_features"][fresh].to(run.device)
            states[fresh] = model.model.encoder(feats).last_hidden_state.float()
    return states


def _optimizer_step(run: _Run, step: int, step_loss: float, bad_steps: int) -> int:
    """Clip and step on a finite loss, skip the step on a NaN/inf one; the bad steps in a row."""
    if math.isfinite(step_loss):
        bad_steps = 0
        if run.accelerator.sync_gradients:
            run.accelerator.clip_grad_norm_(run.params, run.cfg.max_grad_norm)
        if run.anchor is not None:
            run.anchor.pull()
        run.optimizer.step()
    else:
        bad_steps += 1
        _say(run, f"Step {step + 1}: loss is {step_loss}; step skipped")
        if bad_steps >= run.cfg.max_bad_steps:
            raise UserError(f"{bad_steps} steps in a row with a non-finite loss; lower --lr, "
                            "or drop --use-amp; last_model.pt holds the last good state")
    run.optimizer.zero_grad(set_to_none=True)
    return bad_steps


def _log_progress(run: _Run, step: int, lr: float, progress: _Progress) -> None:
    """The log line for the steps since the last one (metrics.jsonl and the terminal)."""
    now = time.time()
    # the mean over the steps since the last line: one step's loss is too noisy
    mean_loss = sum(progress.losses) / len(progress.losses)
    entry = {"step": step, "loss": mean_loss, "lr": lr,
             "padding": 1 - progress.tokens / max(progress.padded, 1),
             "sec_per_step": (now - progress.since) / len(progress.losses),
             **({"preserve_penalty": run.anchor.penalty()} if run.anchor is not None else {})}
    progress.since, progress.losses = now, []
    _log(run, entry)
    _say(run, f"Step {step}: loss={mean_loss:.2f} | lr={lr:.2g} | padding={entry['padding']:.0%}")
