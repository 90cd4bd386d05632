"""The model card (README.md) an exported folder carries, so that uploading the folder
(`huggingface-cli upload`) gives a complete Hub model page: the metadata the Hub reads (base
model, languages, datasets, license, pipeline, the test error rate as model-index), then the
evaluation before and after fine-tuning, the training data and settings, and how to use it.

What the card knows comes from the folder of the run that made the exported checkpoint (the
checkpoint's own folder): args.json and metrics.jsonl (train.py writes them) and the evaluation
report evaluation.json (calculate_metric.py --json; the demo writes it there). Each is optional:
a card says only what it found. The YAML header is huggingface_hub's (ModelCardData).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .report import SUMMARY_ROWS, format_delta, format_value
EVALUATION_FILE = "evaluation.json"  # where export looks for the evaluation report by default
ARGS_FILE = "args.json"
METRICS_FILE = "metrics.jsonl"
WHISPER_LICENSE = "apache-2.0"  # the license of OpenAI's Whisper weights
TASK = "automatic-speech-recognition"
# what each export format is loaded with, for the Hub's library tag and the usage snippet
LIBRARIES = {"hf": "transformers", "ct2": "ctranslate2"}


@dataclass
class RunFacts:
    """What the run folder of an exported model says about it (each part None when absent)."""

    folder: Path | None = None
    args: dict | None = None  # args.json: the TrainConfig of the run
    evaluation: dict | None = None  # calculate_metric.py --json
    evaluation_path: Path | None = None
    best_dev_loss: tuple[int, float] | None = None  # (step, loss) from metrics.jsonl
    manifests: list[tuple[str, int, float, list[str]]] = field(default_factory=list)  # name, windows, s, langs


def run_folder(model: str) -> Path | None:
    """The folder of the training run `model` (a checkpoint file or a folder) came from."""
    path = Path(model).expanduser()
    if path.is_file():
        return path.parent
    return path if (path / ARGS_FILE).is_file() else None


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the {what} ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a {what} (holds a {type(data).__name__}, not an object)")
    return data


def read_evaluation(path: Path) -> dict:
    """An evaluation report (calculate_metric.py --json), checked to hold a run's summary."""
    data = _read_json(path, "evaluation report")
    if not isinstance((data.get("runs") or {}).get("after", {}).get("summary"), dict):
        raise UserError(f"{path}: not an evaluation report of calculate_metric.py --json (no runs.after.summary)")
    return data


def _best_dev_loss(path: Path) -> tuple[int, float] | None:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else ():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: the others still count
        if isinstance(entry, dict) and isinstance(entry.get("dev_loss"), (int, float)):
            entries.append((entry["dev_loss"], entry.get("step", 0)))
    if not entries:
        return None
    loss, step = min(entries)
    return step, loss


def _manifest_facts(train_json: str) -> list[tuple[str, int, float, list[str]]]:
    """(name, windows, seconds of audio, languages) of each training manifest still readable."""
    from .manifest import read_manifest

    facts = []
    for name in (p.strip() for p in (train_json or "").split(",") if p.strip()):
        try:
            records = read_manifest(name)
        except UserError:
            continue  # moved since training: the card names it without counts
        facts.append((name, len(records), sum(r.duration or 0.0 for r in records),
                      sorted({r.language for r in records})))
    return facts


def read_run_facts(model: str, evaluation: str | None = None) -> RunFacts:
    """What the card can say about `model`: its run folder's files, and the evaluation report
    `evaluation` (default: evaluation.json in that folder, when there)."""
    folder = run_folder(model)
    facts = RunFacts(folder=folder)
    eval_path = Path(evaluation) if evaluation else (folder / EVALUATION_FILE if folder else None)
    if eval_path is not None and (evaluation or eval_path.is_file()):
        facts.evaluation, facts.evaluation_path = read_evaluation(eval_path), eval_path
    if folder is not None and (folder / ARGS_FILE).is_file():
        facts.args = _read_json(folder / ARGS_FILE, "training settings file")
        facts.best_dev_loss = _best_dev_loss(folder / METRICS_FILE)
        facts.manifests = _manifest_facts(str(facts.args.get("train_json") or ""))
    return facts


def hub_id(model: str | None, depth: int = 0) -> str | None:
    """The Hub repo a model name stands for: an OpenAI name's openai/whisper-*, a repo id as it
    is, a local checkpoint's own base model (from its run's args.json); None if unknown."""
    from .models import NONEXISTENT_NAMES, OPENAI_MODELS, looks_like_repo_id

    if not model:
        return None
    name = NONEXISTENT_NAMES.get(model, model)
    if name in OPENAI_MODELS:
        return OPENAI_MODELS[name]
    if Path(model).expanduser().exists():
        folder = run_folder(model)
        if folder is None or depth > 8 or not (folder / ARGS_FILE).is_file():
            return None
        return hub_id(_read_json(folder / ARGS_FILE, "training settings file").get("model"), depth + 1)
    return model if looks_like_repo_id(model) else None


def _languages(facts: RunFacts, multilingual: bool) -> list[str]:
    found = sorted({lang for *_, langs in facts.manifests for lang in langs})
    if not found and facts.evaluation and facts.evaluation.get("language"):
        found = [facts.evaluation["language"]]
    return found or ([] if multilingual else ["en"])


def _summary(facts: RunFacts, run: str) -> dict | None:
    return ((facts.evaluation or {}).get("runs") or {}).get(run, {}).get("summary")


def _value(summary: dict | None, path: tuple[str, ...]):
    for key in path:
        summary = summary.get(key) if isinstance(summary, dict) else None
    return summary


def card_data(facts: RunFacts, name: str, fmt: str, multilingual: bool, datasets: list[str],
              license_id: str):
    """The YAML header: what the Hub indexes and shows beside the page."""
    from huggingface_hub import EvalResult, ModelCardData

    base = hub_id((facts.args or {}).get("model"))
    results = None
    after = _summary(facts, "after")
    metric = str((facts.evaluation or {}).get("metric") or "WER")
    if after is not None and after.get("wer_weighted") is not None:
        test_set = Path(str(facts.evaluation.get("transcript_dir") or "test")).name
        results = [EvalResult(task_type=TASK, task_name="Speech Recognition",
                              dataset_type=datasets[0] if datasets else "custom", dataset_name=test_set,
                              metric_type=metric.lower(), metric_name=f"{metric} (%)",
                              metric_value=round(after["wer_weighted"] * 100, 2))]
    tags = ["whisper", "whisperft", "audio"] + (["faster-whisper"] if fmt == "ct2" else [])
    return ModelCardData(language=_languages(facts, multilingual) or None, license=license_id,
                         library_name=LIBRARIES[fmt], pipeline_tag=TASK, tags=tags,
                         base_model=base, datasets=datasets or None, model_name=name,
                         eval_results=results)


def _evaluation_section(facts: RunFacts) -> list[str]:
    after, before = _summary(facts, "after"), _summary(facts, "before")
    if after is None:
        return ["## Evaluation", "", "No evaluation report was found beside the model "
                f"(`{EVALUATION_FILE}`, written by `calculate_metric.py --json`).", ""]
    metric = str(facts.evaluation.get("metric") or "WER")
    where = facts.evaluation.get("transcript_dir") or "the test set"
    compared = (f": before = `{facts.evaluation.get('compare_dir')}` (e.g. the base model's transcripts), "
                f"after = `{facts.evaluation.get('recognized_dir')}`." if before else ":")
    lines = ["## Evaluation", "",
             f"On `{where}` ({facts.evaluation.get('num_files', '?')} files), "
             f"normaliser `{facts.evaluation.get('normalizer', '?')}`{compared}", ""]
    head = "| measure | before | after | change |" if before else "| measure | value |"
    lines += [head, "|---|" + "---:|" * (3 if before else 1)]
    for label, path, kind, _, _ in SUMMARY_ROWS:
        a, b = _value(after, path), _value(before, path)
        if a is None and b is None:
            continue
        cells = ([format_value(b, kind), format_value(a, kind), format_delta(b, a, kind)]
                 if before else [format_value(a, kind)])
        lines.append(f"| {label.format(metric=metric)} | " + " | ".join(cells) + " |")
    return lines + ["", f"From `{facts.evaluation_path.name}` (`calculate_metric.py --json`).", ""]


def _training_section(facts: RunFacts) -> list[str]:
    if facts.args is None:
        return []
    lines = ["## Training", ""]
    for name, windows, seconds, langs in facts.manifests:
        lines.append(f"- `{name}`: {windows} windows, {seconds / 3600:.2f} h of audio ({', '.join(langs)})")
    if facts.best_dev_loss is not None:
        step, loss = facts.best_dev_loss
        lines.append(f"- best validation loss {loss:.4f} at step {step}")
    rows = [f"| `{key}` | `{value}` |" for key, value in facts.args.items() if value is not None]
    return lines + ["", "Settings (`args.json`):", "", "| setting | value |", "|---|---|", *rows, ""]


def _usage_section(name: str, fmt: str) -> list[str]:
    repo = f"YOUR_NAME/{name}"
    if fmt == "ct2":
        code = ["```python", "from faster_whisper import WhisperModel", "",
                f'model = WhisperModel("{repo}")',
                'segments, info = model.transcribe("audio.wav")',
                'for s in segments:', '    print(f"{s.start:.2f} {s.end:.2f} {s.text}")', "```"]
    else:
        code = ["```python", "from transformers import pipeline", "",
                f'asr = pipeline("{TASK}", model="{repo}")',
                'print(asr("audio.wav", return_timestamps=True))', "```"]
    return ["## Use", "", *code, "", "or with whisperft (SRT/VTT with timestamps):", "", "```bash",
            f"whisperft transcribe --model {name} --audio-dir AUDIO_DIR --save-dir transcripts", "```", ""]


def build_card(facts: RunFacts, name: str, fmt: str, multilingual: bool, datasets: list[str] | None = None,
               license_id: str = WHISPER_LICENSE) -> str:
    """The README.md of an exported folder called `name` in format `fmt` (hf or ct2)."""
    datasets = datasets or []
    data = card_data(facts, name, fmt, multilingual, datasets, license_id)
    base = data.base_model
    intro = (f"A fine-tune of [{base}](https://huggingface.co/{base})" if base else "A Whisper model") + \
        (" in CTranslate2 format (faster-whisper)" if fmt == "ct2" else "") + \
        ", fine-tuned with whisperft on time-aligned transcripts."
    lines = [f"# {name}", "", intro, "",
             *_evaluation_section(facts), *_training_section(facts), *_usage_section(name, fmt)]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)
