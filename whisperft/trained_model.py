"""The model a training run trains: loaded from --model (or the resumed checkpoint), wrapped
with LoRA adapters, parts frozen, activations recomputed, as the run's flags say."""

from __future__ import annotations

from .conversions import base_model
from .errors import UserError
from .resume import started_from


def _add_lora(bundle, cfg, train_state: dict | None) -> None:
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


def load_for_training(cfg, train_state: dict | None):
    """The bundle to train: a resumed LoRA run from its base model + the adapter, a resumed full
    run from the checkpoint's weights, a new run from --model."""
    from .models import load_model

    if train_state is None:
        bundle = load_model(cfg.model)
    else:
        bundle = load_model(started_from(train_state, cfg) if cfg.lora_rank else cfg.resume)
    if cfg.lora_rank:
        _add_lora(bundle, cfg, train_state)
    if cfg.train_only_decoder:
        for p in base_model(bundle.model).model.encoder.parameters():
            p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        bundle.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        bundle.model.config.use_cache = False
    return bundle
