"""What a model in training is measured by: its cross-entropy at the target positions only
(`TargetLoss`: what the loop minimises and validation reports), that loss over a validation set,
and what greedy decoding of validation examples shows: WER, timestamp error and marks of
hallucination (quality.py measures the last two)."""

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
def greedy_decodes(bundle, dataset, layout, n: int, device) -> list[tuple[str, list]]:
    """Greedy decoding (timestamps on, previous text as prompt) of the first n examples: per
    example its text (timestamps stripped) and its timed segments (`quality.Timed`, seconds from
    the window start)."""
    from .quality import Timed

    model = base_model(bundle.model)
    model.eval()
    decode = bundle.tokenizer.decode
    out = []
    for i in range(min(n, len(dataset))):
        r = dataset.records[i]
        feats = dataset.features(r)[None].to(device)
        prefix = layout.prefix(r.language, no_timestamps=False)
        prompt = layout.prompt_ids(r.prompt)
        result = model.generate(feats, decoder_input_ids=torch.tensor([prompt + prefix], device=device),
                                return_timestamps=True, return_segments=True, max_new_tokens=220)
        ids = result["sequences"][0].tolist()
        text = decode([t for t in ids if t < layout.eot], skip_special_tokens=True)
        segments = [Timed(float(s["start"]), float(s["end"]),
                          decode([t for t in s["tokens"].tolist() if t < layout.eot], skip_special_tokens=True))
                    for s in result["segments"][0]]
        out.append((text, [s for s in segments if s.text.strip()]))
    model.train()
    return out


def evaluate_decoding(bundle, dataset, layout, n: int, device) -> dict:
    """What greedy decoding of the first n examples shows, as metrics.jsonl keys: `dev_wer`; the
    start error of the segments matched to reference segments by text (median and 90th
    percentile of |hypothesis - reference|, seconds; None when none matched); and the marks of
    hallucination: inserted words per reference word (None without reference words), the mean
    repeated 5-gram rate and the longest repeated run (words) of any example."""
    from .metrics import score
    from .quality import Timed, hallucination_indicators, summarize, timestamp_errors
    from .tokens import timed_segments

    pairs, start_errors, marks = [], [], []
    for i, (text, segments) in enumerate(greedy_decodes(bundle, dataset, layout, n, device)):
        r = dataset.records[i]
        language = r.language or "en"
        reference = bundle.tokenizer.decode(layout.encode_text(r.text), skip_special_tokens=True)
        pairs.append((str(i), reference, text))
        cues = [Timed(start, end, piece) for start, end, piece in timed_segments(r.text)]
        start_errors += [start for start, _ in timestamp_errors(cues, segments, language)]
        marks.append(hallucination_indicators(reference, text, language))
    report = score(pairs, metric="WER", language=dataset.records[0].language or "en")
    starts = summarize(start_errors)
    reference_words = sum(m["reference_words"] for m in marks)
    return {"dev_wer": report.weighted_average(),
            "dev_start_error_median": starts["median"], "dev_start_error_p90": starts["p90"],
            "dev_insertion_rate": sum(m["insertions"] for m in marks) / reference_words if reference_words else None,
            "dev_repeated_5gram_rate": sum(m["repeated_5gram_rate"] for m in marks) / max(len(marks), 1),
            "dev_longest_repeated_run": max((m["longest_repeated_run"] for m in marks), default=0)}


def describe_decoding(entry: dict) -> str:
    """The validation line's part for `evaluate_decoding`'s measures ("" without them)."""
    if "dev_wer" not in entry:
        return ""
    rate = lambda key, digits=1: "n/a" if entry.get(key) is None else f"{entry[key]:.{digits}%}"  # noqa: E731
    median, p90 = entry.get("dev_start_error_median"), entry.get("dev_start_error_p90")
    starts = "n/a" if median is None else f"{median:.2f} s (p90 {p90:.2f} s)"
    return (f" | WER {rate('dev_wer', 2)} | start error {starts} | insertions {rate('dev_insertion_rate')}"
            f" | repeated 5-grams {rate('dev_repeated_5gram_rate')}"
            f" | longest repeat {entry.get('dev_longest_repeated_run', 0)} words")
