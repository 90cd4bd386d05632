"""What a model in training is measured by: its cross-entropy at the target positions only
(`TargetLoss`: what the loop minimises and validation reports), that loss over a validation set,
and the WER of greedy decoding on validation examples."""

from __future__ import annotations

import torch

from .conversions import base_model
from .tokens import IGNORE_INDEX


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
