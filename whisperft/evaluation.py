"""What a model in training is measured by: its cross-entropy at the target positions only
(`TargetLoss`: what the loop minimises and validation reports; with --dynamic-audio-ctx
`DynamicContextLoss`, the same on a cut context plus a distillation term; `objective` picks
one), that loss over a validation set,
and what greedy decoding of validation examples shows: WER, timestamp error and marks of
hallucination (quality.py measures the last two)."""

from __future__ import annotations

import torch

from . import audio_ctx
from .conversions import base_model
from .tokens import IGNORE_INDEX

DISTILL_TEMPERATURE = 1.0  # of the KL term of --dynamic-audio-ctx (1: the plain distributions)


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
                encoder_outputs=None, seconds=None, ctx_draws=None, reduction: str = "mean"):
        # `seconds` and `ctx_draws` (each example's audio, a random margin) matter only to a
        # cut context (audio_ctx.py): here the encoder always sees the full 30 s
        whisper = base_model(self.model)
        hidden = whisper.model(input_features=input_features, encoder_outputs=encoder_outputs,
                               decoder_input_ids=decoder_input_ids,
                               decoder_attention_mask=decoder_attention_mask,
                               use_cache=False).last_hidden_state
        keep = labels != IGNORE_INDEX
        logits = whisper.proj_out(hidden[keep])
        return torch.nn.functional.cross_entropy(logits.float(), labels[keep], reduction=reduction)


class DynamicContextLoss(torch.nn.Module):
    """The training objective of `--dynamic-audio-ctx`: the cross-entropy of the targets with the
    encoder cut to each batch's audio (plus a random margin), and `distill_weight` times the KL
    divergence from the frozen original model's predictions on the full 30 s context.

    The cut is one length per batch (its longest audio), so a batch stays one tensor; the data
    layer gives each example's seconds of audio and its margin's random draw. As in
    `TargetLoss`, only the target positions are projected onto the vocabulary.
    """

    def __init__(self, model, teacher, distill_weight: float):
        super().__init__()
        self.model = model
        self.teacher = teacher  # frozen: not a parameter of this module's optimizer
        self.distill_weight = distill_weight

    def _hidden(self, whisper, encoder_states, decoder_input_ids, decoder_attention_mask):
        return whisper.model.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                                     encoder_hidden_states=encoder_states, use_cache=False).last_hidden_state

    def forward(self, decoder_input_ids, decoder_attention_mask, labels, input_features=None,
                encoder_outputs=None, seconds=None, ctx_draws=None, teacher_states=None,
                reduction: str = "mean"):
        whisper = base_model(self.model)
        keep = labels != IGNORE_INDEX
        n = audio_ctx.FULL_POSITIONS
        if seconds is not None:  # validation: the cut context a transcriber would use
            n = audio_ctx.batch_positions(seconds, ctx_draws if self.training else None)
        states = audio_ctx.encode(whisper.model.encoder, input_features, n)
        hidden = self._hidden(whisper, states, decoder_input_ids, decoder_attention_mask)
        logits = whisper.proj_out(hidden[keep]).float()
        loss = torch.nn.functional.cross_entropy(logits, labels[keep], reduction=reduction)
        if not self.training or self.distill_weight <= 0:
            return loss
        with torch.no_grad():
            teacher = base_model(self.teacher)
            if teacher_states is None:  # else from the encoder cache: the teacher never changes
                teacher_states = teacher.model.encoder(input_features).last_hidden_state
            t_hidden = self._hidden(teacher, teacher_states, decoder_input_ids, decoder_attention_mask)
            t_logits = teacher.proj_out(t_hidden[keep]).float()
        kl = torch.nn.functional.kl_div(torch.log_softmax(logits / DISTILL_TEMPERATURE, -1),
                                        torch.log_softmax(t_logits / DISTILL_TEMPERATURE, -1),
                                        log_target=True, reduction="batchmean")
        return loss + self.distill_weight * kl * DISTILL_TEMPERATURE ** 2


def check_dynamic_ctx(cfg) -> None:
    """`--dynamic-audio-ctx` against the rest of a TrainConfig: one line, before anything slow."""
    from .errors import UserError

    if not cfg.dynamic_audio_ctx:
        return
    if cfg.train_only_decoder:
        raise UserError("--dynamic-audio-ctx trains the encoder on a cut context: "
                        "drop --train-only-decoder")
    if cfg.distill_weight < 0:
        raise UserError("--distill-weight must be 0 or more")


def objective(cfg, bundle, train_state: dict | None):
    """What a run minimises: `TargetLoss`, or with --dynamic-audio-ctx a `DynamicContextLoss`
    whose teacher is the model the run started from (loaded again on resume)."""
    import copy

    if not cfg.dynamic_audio_ctx:
        return TargetLoss(bundle.model)
    if train_state is None:
        teacher = copy.deepcopy(base_model(bundle.model))
    else:
        from .models import load_model
        from .resume import started_from

        teacher = load_model(started_from(train_state, cfg)).model
    teacher.to(next(bundle.model.parameters()).device).eval().requires_grad_(False)
    audio_ctx.mark(base_model(bundle.model).generation_config)
    return DynamicContextLoss(bundle.model, teacher, cfg.distill_weight)


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
                       labels=labels, seconds=batch["seconds"], reduction="sum")
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
    from .quality import Timed, hallucination_indicators, start_errors, summarize
    from .tokens import timed_segments

    pairs, starts, marks = [], [], []
    for i, (text, segments) in enumerate(greedy_decodes(bundle, dataset, layout, n, device)):
        r = dataset.records[i]
        language = r.language or "en"
        reference = bundle.tokenizer.decode(layout.encode_text(r.text), skip_special_tokens=True)
        pairs.append((str(i), reference, text))
        cues = [Timed(start, end, piece) for start, end, piece in timed_segments(r.text)]
        starts += start_errors(cues, segments, language)
        marks.append(hallucination_indicators(reference, text, language))
    report = score(pairs, metric="WER", language=dataset.records[0].language or "en")
    start_summary = summarize(starts)
    reference_words = sum(m["reference_words"] for m in marks)
    return {"dev_wer": report.weighted_average(),
            "dev_start_error_median": start_summary["median"], "dev_start_error_p90": start_summary["p90"],
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
