"""A Hub-ready model out of a real run: the bundled tiny.en fine-tuned on spoken clips, the
transcribe command the run prints at its end, calculate_metric.py --json beside the model, then
`export --format hf` and `--format ct2`: the folder's model card carries the evaluation's
numbers, the base model and the training settings, loads with huggingface_hub, and
transformers' own ASR pipeline transcribes speech from the folder."""

from __future__ import annotations

import json
import shlex

import pytest

from conftest import speak


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, trained_tiny_en):
    """The shared two-step fine-tune of tiny.en on four spoken clips (SRT references), its
    best_model.pt transcribed by the command the run printed and evaluated against the base
    model; the run's folder copied, so the evaluation written beside the model stays here."""
    import shutil

    from whisperft import cli
    from whisperft.metrics import EvaluateOptions, evaluate

    run = trained_tiny_en
    root = tmp_path_factory.mktemp("card")
    save_dir = root / "run"
    shutil.copytree(run.save_dir, save_dir, ignore=shutil.ignore_patterns("last_model.pt"))
    lines = run.printed
    command = lines[lines.index("transcribe with the best model:") + 1].strip()
    assert command.startswith("whisperft transcribe ") and f"--audio-dir {run.audio}" in command
    command = command.replace(str(run.save_dir), str(save_dir))
    assert cli.main([*shlex.split(command)[1:], "--beam-size", "1"]) == 0  # greedy: quicker, same files
    cli.main(["transcribe", "--model", "tiny.en", "--audio-dir", str(run.audio), "--beam-size", "1",
              "--save-dir", str(root / "before")])
    assert evaluate(EvaluateOptions(recognized_dir=str(save_dir / "transcripts"), transcript_dir=str(run.refs),
                                    compare=str(root / "before"), json=str(save_dir / "evaluation.json"))) == 0
    return root, save_dir, json.loads((save_dir / "evaluation.json").read_text())


def _card(folder):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


@pytest.mark.slow
def test_exported_folder_has_a_card_with_the_runs_numbers(evaluated_run, tmp_path):
    from whisperft.exporting import ExportOptions, export
    from whisperft.report import format_value

    root, save_dir, results = evaluated_run
    out = tmp_path / "my-tiny-en"
    assert export(ExportOptions(model=str(save_dir / "best_model.pt"), format="hf", out=str(out),
                                dataset="me/spoken-clips")) == 0
    card = _card(out)
    data = card.data
    assert data.base_model == "openai/whisper-tiny.en"
    assert data.language == ["en"] and data.license == "apache-2.0" and data.datasets == ["me/spoken-clips"]
    assert data.pipeline_tag == "automatic-speech-recognition" and data.library_name == "transformers"
    after, before = (results["runs"][k]["summary"] for k in ("after", "before"))
    (result,) = data.eval_results
    assert result.metric_type == "wer" and result.metric_value == round(after["wer_weighted"] * 100, 2)
    assert result.dataset_name == "refs" and result.dataset_type == "me/spoken-clips"
    row = next(line for line in card.text.splitlines() if line.startswith("| WER, weighted |"))
    assert row.split(" | ")[1:3] == [format_value(before["wer_weighted"], "rate"),
                                     format_value(after["wer_weighted"], "rate")]
    start_row = next(line for line in card.text.splitlines() if line.startswith("| segment start error, median |"))
    assert format_value(after["start_error"]["median"], "seconds") in start_row
    args = json.loads((save_dir / "args.json").read_text())
    assert f"| `lr` | `{args['lr']}` |" in card.text and f"| `train_steps` | `{args['train_steps']}` |" in card.text
    assert "4 windows" in card.text  # the training manifest, counted

    ct2 = tmp_path / "my-tiny-en-ct2"
    pytest.importorskip("ctranslate2")
    assert export(ExportOptions(model=str(save_dir / "best_model.pt"), format="ct2", out=str(ct2),
                                quantization="float32")) == 0
    ct2_card = _card(ct2)
    assert ct2_card.data.library_name == "ctranslate2" and ct2_card.data.base_model == "openai/whisper-tiny.en"
    assert ct2_card.data.eval_results[0].metric_value == result.metric_value
    assert (ct2 / "model.bin").is_file()


@pytest.mark.slow
def test_transformers_pipeline_transcribes_with_the_exported_folder(evaluated_run, tmp_path):
    from transformers import pipeline

    from whisperft.audio import SAMPLE_RATE, load_audio
    from whisperft.exporting import ExportOptions, export
    from whisperft.metrics import score

    _, save_dir, _ = evaluated_run
    out = tmp_path / "hf"
    export(ExportOptions(model=str(save_dir / "best_model.pt"), format="hf", out=str(out)))
    text = "We will meet again next Tuesday at three o'clock."
    wav = speak(text, tmp_path / "new.wav", voice="en-gb")
    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    heard = asr({"raw": load_audio(wav), "sampling_rate": SAMPLE_RATE})["text"]
    assert score([("new", text, heard)]).weighted_average() <= 0.2, heard


def test_an_evaluation_named_but_missing_is_refused_before_loading(tmp_path, monkeypatch):
    from whisperft import exporting
    from whisperft.errors import UserError
    from whisperft.exporting import ExportOptions, export

    monkeypatch.setattr(exporting, "load_model", lambda *a, **k: pytest.fail("loaded the model first"))
    missing = tmp_path / "nope.json"
    with pytest.raises(UserError, match=f"^{missing}: no such evaluation report$"):
        export(ExportOptions(model="tiny.en", out=str(tmp_path / "out"), evaluation=str(missing)))
    bad = tmp_path / "bad.json"
    bad.write_text('{"metric": "WER"}')
    with pytest.raises(UserError, match="not an evaluation report of calculate_metric.py --json"):
        export(ExportOptions(model="tiny.en", out=str(tmp_path / "out"), evaluation=str(bad)))
