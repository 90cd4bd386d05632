"""Full fine-tuning sharded over processes with FSDP, set up by Accelerate's own configuration
(`accelerate launch --config_file fsdp.yaml run_finetuning.py ...`).

Under FSDP each process holds a shard of every weight, gradient and Adam state; this module
brings them back whole where the run needs them whole: the checkpoints (the same
best_model.pt / last_model.pt as an unsharded run, gathered to the main process) and resume
(the optimizer state saved in the unsharded layout, sharded again on load). A checkpoint from
a sharded run therefore resumes unsharded and the other way round.

FSDP2 (`fully_shard`, Accelerate's `fsdp_version: 2`) is the version supported: Accelerate
only turns FSDP on for GPU-like devices, and FSDP1's plugin refuses to start without one, so
on the CPU (gloo, where the tests run) this module finishes what Accelerate leaves undone.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .errors import UserError
from .options import flag


def _fsdp_asked() -> bool:
    """Whether `accelerate launch` was given an FSDP configuration (it says so in the env)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def with_cpu_fsdp(accelerator):
    """`accelerator`, sharding on the CPU too when its configuration asks for FSDP.

    Accelerate (1.x) turns FSDP on only for GPU-like devices; on the CPU it silently falls back
    to DDP (MULTI_CPU), which would hold a whole model per process. fully_shard itself runs on
    the CPU over gloo, so the plugin Accelerate built from the configuration is put in place."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not (_fsdp_asked() and accelerator.distributed_type == DistributedType.MULTI_CPU):
        return accelerator
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:  # FSDP1's plugin needs a GPU-like device to start
        raise UserError("FSDP on the CPU needs fsdp_version: 2 in the accelerate configuration")
    accelerator.state.fsdp_plugin = plugin
    # both singletons: AcceleratorState copies PartialState's type again whenever it is made
    PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    return accelerator


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def sharding_note(accelerator) -> str:
    """What the run's summary line says of sharding."""
    return ", sharded with FSDP2" if is_sharded(accelerator) else ""


def check_sharded_flags(accelerator, cfg) -> None:
    """Refuse, before the model loads, what a sharded run does not do: the main process alone
    cannot decode (--eval-wer) or encode (the encoder cache) with weights every process holds a
    part of, and LoRA trains too few weights to need sharding."""
    if not is_sharded(accelerator):
        return
    if not accelerator.is_fsdp2:
        raise UserError("FSDP1 is not supported: set fsdp_version: 2 in the accelerate configuration")
    refused = [("lora_rank", "LoRA fits one device: launch it without FSDP"),
               ("eval_wer", "validation loss only under FSDP (measure WER on best_model.pt afterwards)"),
               ("preserve_weight", "its anchors are whole tensors: launch it without FSDP")]
    for name, why in refused:
        if getattr(cfg, name):
            raise UserError(f"{flag(name)} {getattr(cfg, name)} under FSDP: {why}")
    if cfg.train_only_decoder and cfg.cache_encoder_outputs:
        raise UserError("--train-only-decoder under FSDP: add --no-cache-encoder-outputs "
                        "(the encoder cache is built from whole weights)")


def gathered_bundle(accelerator, net, bundle):
    """`bundle` with whole weights for saving: itself when unsharded; under FSDP every process
    takes part in gathering the weights onto the main process's CPU, which gets a bundle
    around a model built from them (the others get None)."""
    if not is_sharded(accelerator):
        return bundle
    state = accelerator.get_state_dict(net)  # collective; whole, on the CPU, on the main process only
    if not accelerator.is_main_process:
        return None
    prefix = "model."  # TargetLoss holds the Whisper model as .model
    state = {k[len(prefix):]: v for k, v in state.items()}
    whisper = bundle.model
    with torch.device("meta"):
        model = type(whisper)(whisper.config)
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    model.generation_config = whisper.generation_config
    return dataclasses.replace(bundle, model=model)


class WholeOptimizerState:
    """The optimizer's state_dict / load_state_dict in the unsharded layout (tensors numbered in
    the order of the trained parameters' `names`), whether or not the run is sharded."""

    def __init__(self, accelerator, net, optimizer, names: list[str]):
        self.accelerator, self.net, self.optimizer = accelerator, net, optimizer
        self.fqns = [f"model.{n}" for n in names]  # names in the model, as the wrapper sees them

    def state_dict(self) -> dict:
        """Every process takes part; under FSDP only the main process gets the state (others {})."""
        if not is_sharded(self.accelerator):
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        whole = get_optimizer_state_dict(self.net, self.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not whole:
            return {}
        index = {fqn: i for i, fqn in enumerate(self.fqns)}
        return {"state": {index[k]: v for k, v in whole["state"].items()},
                "param_groups": [{**g, "params": [index[k] for k in g["params"]]} for g in whole["param_groups"]]}

    def load_state_dict(self, state: dict) -> None:
        """Every process loads the whole state (each read the checkpoint) and keeps its shard."""
        if not is_sharded(self.accelerator):
            self.optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        whole = {"state": {self.fqns[i]: v for i, v in state["state"].items()},
                 "param_groups": [{**g, "params": [self.fqns[i] for i in g["params"]]}
                                  for g in state["param_groups"]]}
        set_optimizer_state_dict(self.net, self.optimizer, whole, options=StateDictOptions(full_state_dict=True))
