"""Peer arm: the Hugging Face blog recipe "Fine-Tune Whisper For Multilingual ASR with 🤗
Transformers" (huggingface.co/blog/fine-tune-whisper), trained on a clips list.tsv.

The recipe, kept as the blog writes it, with only what a short CPU benchmark needs changed:
  - `prepare_dataset`: the feature extractor's log-mel of each clip (padded to 30 s) and the
    tokenizer's ids of its sentence, mapped over the data set once before training;
  - `DataCollatorSpeechSeq2SeqWithPadding`: pads features and labels, labels' padding -> -100,
    drops a leading <|startoftranscript|> (the model prepends the decoder start token itself);
  - `Seq2SeqTrainingArguments` + `Seq2SeqTrainer(...).train()`; one clip per 30 s input, no
    timestamps.
Changed from the blog: fp32 on CPU (no fp16, no gradient checkpointing), no evaluation or
saving during training, no Hub push, no TensorBoard, warm-up 1 step, `max_steps` and batch size
from the caller; `datasets` is not a whisperft dependency, so the `map` is a list comprehension
over the same `prepare_dataset` (the blog's Arrow cache would add its own serialisation cost).

    python bench/peer_hf_trainer.py --train-tsv clips/train.tsv --steps 4 [--batch-size 4]

list.tsv: `path<TAB>text` per line, paths relative to the file, 16 kHz mono 16-bit WAV (what
bench_packing.py writes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SAMPLE_RATE = 16000
NAME = "HF Seq2SeqTrainer (blog recipe)"


def convert_model(name: str, folder: Path) -> Path:
    """The same weights the whisperft arms train, as a Hugging Face folder the recipe loads."""
    sys.path.insert(0, str(REPO))
    from whisperft.models import load_model
    from whisperft.saving import save_hf

    return save_hf(load_model(name), folder)


def read_clips(train_tsv: Path) -> list[dict]:
    """The rows of list.tsv as the blog's data set rows: {"audio": {...}, "sentence": ...}."""
    rows = []
    for line in train_tsv.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        path, sentence = line.split("\t", 1)
        # stdlib decoding keeps the peer free of whisperft's audio code; the bench writes PCM16 16 kHz
        with wave.open(str(train_tsv.parent / path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
                raise ValueError(f"{path}: expected 16 kHz mono 16-bit WAV")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rows.append({"audio": {"array": pcm.astype(np.float32) / 32768.0, "sampling_rate": SAMPLE_RATE},
                     "sentence": sentence})
    return rows


@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    processor: Any
    decoder_start_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        # inputs and labels differ in length and need different padding: pad them apart
        input_features = [{"input_features": f["input_features"]} for f in features]
        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")

        label_features = [{"input_ids": f["labels"]} for f in features]
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        # -100 so the loss ignores padding
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        # the tokenizer wrote the start token and the model prepends it again: cut it here
        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


class RecordingCollator:
    """Keeps the dataset indices of each batch, in the order the trainer asks for them, so the
    speech consumed is counted from the batches drawn. The trainer's data loader may fetch a
    batch ahead, hence the caller reads only the first `steps` batches."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        self.batches.append([f["index"] for f in features])
        return self.collator([{k: f[k] for k in ("input_features", "labels")} for f in features])


def step_timer():
    """A TrainerCallback that keeps each optimizer step's wall seconds (end to end, data included)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self._last = [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.seconds.append(now - self._last)
            self._last = now

    return StepTimer()


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {**self.rows[i], "index": i}


def run_peer(train_tsv: Path, model_dir: Path, out_dir: Path, batch_size: int = 4, steps: int = 12,
             lr: float = 1e-4, seed: int = 42) -> dict:
    """Train `model_dir` (a Hugging Face Whisper folder) with the blog recipe; save to `out_dir`.

    Returns step_seconds (trainer.train()'s own train_runtime: the loop, not model loading,
    data preparation or saving), train_call_seconds (the whole train() call), prepare_seconds
    (audio decoding + feature extraction + tokenising: the blog's `map`), speech_s (seconds of
    audio in the batches of the `steps` optimizer steps), per step: step_times, step_speech and
    step_sizes (examples), and first_loss, last_loss, model_path.
    """
    from transformers import (Seq2SeqTrainer, Seq2SeqTrainingArguments, WhisperForConditionalGeneration,
                              WhisperProcessor)

    train_tsv, model_dir, out_dir = Path(train_tsv), Path(model_dir), Path(out_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    multilingual = bool(getattr(model.generation_config, "is_multilingual", True))
    # The blog sets language and task (multilingual model). On an English-only model they would
    # put <|en|><|transcribe|> into every label, tokens .en models never saw: leave them out.
    lang = dict(language="en", task="transcribe") if multilingual else {}
    processor = WhisperProcessor.from_pretrained(model_dir, **lang)
    if multilingual:
        model.generation_config.language = "en"
        model.generation_config.task = "transcribe"
        model.generation_config.forced_decoder_ids = None

    def prepare_dataset(batch: dict) -> dict:
        audio = batch["audio"]
        batch["input_features"] = processor.feature_extractor(
            audio["array"], sampling_rate=audio["sampling_rate"]).input_features[0]
        batch["labels"] = processor.tokenizer(batch["sentence"]).input_ids
        batch["duration"] = len(audio["array"]) / audio["sampling_rate"]
        del batch["audio"]  # as the blog's remove_columns: the waveform is not needed any more
        return batch

    start = time.perf_counter()
    rows = [prepare_dataset(row) for row in read_clips(train_tsv)]
    prepare_seconds = time.perf_counter() - start

    tok = processor.tokenizer
    expected = tok.convert_tokens_to_ids(["<|startoftranscript|>", *(
        [f"<|{lang['language']}|>", f"<|{lang['task']}|>"] if lang else []), "<|notimestamps|>"])
    for row in rows:
        if row["labels"][:len(expected)] != expected or row["labels"][-1] != tok.eos_token_id:
            raise ValueError(f"unexpected label layout: {tok.convert_ids_to_tokens(row['labels'][:6])}")

    collator = RecordingCollator(DataCollatorSpeechSeq2SeqWithPadding(
        processor=processor, decoder_start_token_id=model.config.decoder_start_token_id))
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=lr,
        warmup_steps=1,
        lr_scheduler_type="linear",
        max_steps=steps,
        seed=seed,
        use_cpu=True,  # the whisperft arms of bench_packing train on CPU too
        fp16=False,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        dataloader_num_workers=0,
        remove_unused_columns=False,  # else the trainer strips "index" before our collator sees it
        disable_tqdm=True,
        push_to_hub=False,
    )
    trainer = Seq2SeqTrainer(
        args=training_args,
        model=model,
        train_dataset=ListDataset(rows),
        data_collator=collator,
        processing_class=processor.feature_extractor,
        callbacks=[timer := step_timer()],
    )
    start = time.perf_counter()
    result = trainer.train()
    train_call_seconds = time.perf_counter() - start
    trainer.save_model(str(out_dir))
    processor.save_pretrained(str(out_dir))

    drawn = collator.batches[:steps]
    if len(drawn) < steps:
        raise RuntimeError(f"the trainer drew {len(drawn)} batches for {steps} steps")
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "step_seconds": result.metrics["train_runtime"],
        "train_call_seconds": train_call_seconds,
        "prepare_seconds": prepare_seconds,
        "speech_s": sum(rows[i]["duration"] for batch in drawn for i in batch),
        "step_times": timer.seconds[:steps],
        "step_speech": [sum(rows[i]["duration"] for i in batch) for batch in drawn],
        "step_sizes": [len(batch) for batch in drawn],
        "clips": sum(len(batch) for batch in drawn),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "model_path": str(out_dir),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-tsv", required=True, type=Path)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default="tiny.en", help="whisperft model name or path, converted to a HF folder")
    p.add_argument("--model-dir", type=Path, default=None, help="a Hugging Face folder (skips conversion)")
    p.add_argument("--out-dir", type=Path, default=None, help="where the model is saved (default: a temp folder)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="whisperft-peer-") as tmp:
        model_dir = args.model_dir or convert_model(args.model, Path(tmp) / "model")
        out_dir = args.out_dir or Path(tmp) / "trained"
        r = run_peer(args.train_tsv, model_dir, out_dir, args.batch_size, args.steps, args.lr, args.seed)
        print(f"{NAME}: {args.steps} steps of batch {args.batch_size} in {r['step_seconds']:.1f} s "
              f"(train() call {r['train_call_seconds']:.1f} s; prepare/map {r['prepare_seconds']:.1f} s "
              f"before it); loss {r['first_loss']:.2f} -> {r['last_loss']:.2f}")
        print(f"{r['speech_s']:.1f} s of speech in {r['clips']} clips -> "
              f"{r['speech_s'] / r['step_seconds']:.2f} s of speech per second of training steps")
        print(f"model saved to {r['model_path']}" + (" (temporary: pass --out-dir to keep it)"
                                                      if args.out_dir is None else ""))


if __name__ == "__main__":
    main()
