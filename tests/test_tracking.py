"""What --eval-wer measures besides WER (timestamp error, marks of hallucination), --best-by wer,
--report-to (TensorBoard) and the loss curve's second panel, on a random 2-layer Whisper and
synthetic windows."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from test_train import cfg_for, losses, make_data, tiny_model  # noqa: F401
from whisperft.errors import UserError
from whisperft.loss_curve import plot_loss_curve
from whisperft.train import train

NEW_KEYS = ("dev_start_error_median", "dev_start_error_p90", "dev_insertion_rate", "dev_repeated_5gram_rate",
            "dev_longest_repeated_run")
RUN = dict(eval_wer=2, best_by="wer", report_to="tensorboard", save_all_checkpoints=True, train_steps=4,
           eval_steps=2, lr=1e-2)  # evaluations at steps 0, 2 and 4


def require_tensorboard():
    """tensorboard: `make setup` installs it (the tensorboard extra); CI must have it."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("tensorboard is not installed; `make setup` installs it")
        pytest.skip("tensorboard not installed")


@pytest.fixture(scope="module")
def decoded_run(tmp_path_factory, tiny_model):  # noqa: F811
    """A 4-step run with --eval-wer 2 --best-by wer --report-to tensorboard --save-all-checkpoints:
    (its data folder, its output folder)."""
    require_tensorboard()
    root = tmp_path_factory.mktemp("decoded")
    threads = torch.get_num_threads()
    # greedy decoding of a tiny model is many small steps: one thread runs them fastest
    torch.set_num_threads(1)
    try:
        assert train(cfg_for(root, tiny_model, **RUN)) == 0
    finally:
        torch.set_num_threads(threads)
    return root, root / "out"


def evaluations(out) -> list[dict]:
    return [e for e in losses(out) if "dev_loss" in e]


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_eval_wer_logs_timestamp_error_and_hallucination_marks(decoded_run):
    _, out = decoded_run
    evals = evaluations(out)
    assert [e["step"] for e in evals] == [0, 2, 4]
    for e in evals:
        assert set(NEW_KEYS) <= set(e) and e["dev_wer"] >= 0
        assert isinstance(e["dev_longest_repeated_run"], int) and e["dev_longest_repeated_run"] >= 0
        assert 0 <= e["dev_repeated_5gram_rate"] <= 1
        assert e["dev_insertion_rate"] is None or e["dev_insertion_rate"] >= 0
        median, p90 = e["dev_start_error_median"], e["dev_start_error_p90"]
        assert (median is None) == (p90 is None)
        assert median is None or 0 <= median <= p90


def test_best_by_wer_keeps_the_weights_of_the_lowest_dev_wer(decoded_run, tiny_model):  # noqa: F811
    _, out = decoded_run
    evals = evaluations(out)
    best = min(evals, key=lambda e: (e["dev_wer"], e["step"]))  # a tie keeps the earlier one
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)["model_state_dict"]  # noqa: E731
    chosen = load(out / "best_model.pt")
    if best["step"] == 0:  # the model trained from, saved in float16 as best_model.pt is
        expected = {k: v.half() for k, v in load(tiny_model).items()}
    else:
        expected = load(out / f"step{best['step']}.pt")
    assert chosen.keys() == expected.keys()
    assert all(torch.equal(chosen[k], expected[k]) for k in chosen)
    others = [e["step"] for e in evals if e["step"] not in (0, best["step"])]
    assert any(not all(torch.equal(chosen[k], v) for k, v in load(out / f"step{s}.pt").items()) for s in others)
    state = torch.load(out / "last_model.pt", weights_only=True)["whisperft_train_state"]
    assert state["best_wer"] == best["dev_wer"]
    assert state["best_loss"] == min(e["dev_loss"] for e in evals)


def test_tensorboard_events_hold_the_metrics(decoded_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = decoded_run
    events = EventAccumulator(str(out / "runs" / "whisperft"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "dev_loss", "dev_wer", *NEW_KEYS} <= tags
    log = losses(out)
    for tag in ("loss", "lr", "dev_loss", "dev_wer", "dev_longest_repeated_run"):
        logged = [e for e in log if e.get(tag) is not None]
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [e["step"] for e in logged], tag
        assert [s.value for s in scalars] == pytest.approx([e[tag] for e in logged], rel=1e-6), tag
    assert [s.step for s in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [s.step for s in events.Scalars("dev_wer")] == [0, 2, 4]


def test_loss_curve_gets_a_decoding_panel_with_eval_wer(decoded_run, tmp_path):
    _, out = decoded_run
    with_wer = png_size(out / "loss_curve.png")
    history = [{k: v for k, v in e.items() if k == "step" or not k.startswith("dev_") or k == "dev_loss"}
               for e in losses(out)]
    plot_loss_curve(history, tmp_path / "loss_only.png")
    loss_only = png_size(tmp_path / "loss_only.png")
    assert with_wer[0] == loss_only[0] and with_wer[1] > 1.5 * loss_only[1]


def test_resume_keeps_best_by_and_reads_checkpoints_without_it(decoded_run, tmp_path, tiny_model):  # noqa: F811
    root, out = decoded_run
    last = out / "last_model.pt"
    resume = dict(RUN, train_steps=5, save_dir=str(tmp_path / "resumed"), resume=str(last))
    with pytest.raises(UserError, match=r"--best-by wer -> loss: that would not continue the run"):
        train(cfg_for(root, tiny_model, **dict(resume, best_by="loss")))
    with pytest.raises(UserError, match=r"--eval-wer 2 -> 3"):  # the best WER is over 2 windows
        train(cfg_for(root, tiny_model, **dict(resume, eval_wer=3)))
    assert not (tmp_path / "resumed").exists()
    # a checkpoint from before --best-by (no best_by flag, no best WER) resumes as --best-by loss
    ckpt = torch.load(last, weights_only=True)
    state = ckpt["whisperft_train_state"]
    config = json.loads(state["config"])
    del config["best_by"], config["report_to"], state["best_wer"]
    state["config"] = json.dumps(config)
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(UserError, match=r"--best-by loss -> wer"):
        train(cfg_for(root, tiny_model, **dict(resume, resume=str(tmp_path / "old.pt"))))
    assert train(cfg_for(root, tiny_model, **dict(resume, resume=str(tmp_path / "old.pt"), best_by="loss",
                                                  eval_wer=0, report_to="none"))) == 0
    assert [e["step"] for e in losses(tmp_path / "resumed") if "loss" in e] == [1, 2, 3, 4, 5]


def test_best_by_wer_without_eval_wer_is_refused_in_one_line(tmp_path, tiny_model):  # noqa: F811
    data = make_data(tmp_path, 4)
    result = subprocess.run([sys.executable, "-m", "whisperft", "train", "--train-json", str(data), "--dev-json",
                             str(data), "--model", str(tiny_model), "--best-by", "wer",
                             "--save-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: --best-by wer needs --eval-wer N (N > 0) and --dev-json: WER is measured on "
                     "validation data"], lines
    assert not (tmp_path / "out").exists()  # refused before the run's folder or model
    with pytest.raises(UserError, match="--best-by wer needs"):  # a WER needs validation data
        train(cfg_for(tmp_path, tiny_model, eval_wer=2, best_by="wer", dev_json=None))


def test_report_to_a_missing_package_names_the_install(tmp_path, tiny_model, monkeypatch):  # noqa: F811
    from whisperft import tracking

    if tracking.importlib.util.find_spec("wandb") is None:
        with pytest.raises(UserError, match=r"^--report-to wandb needs the wandb package: "
                                             r"pip install 'whisperft\[wandb\]'$"):
            train(cfg_for(tmp_path, tiny_model, report_to="wandb"))
    monkeypatch.setitem(tracking._PACKAGES, "tensorboard", ("whisperft_no_such_package",))
    with pytest.raises(UserError, match=r"^--report-to tensorboard needs the tensorboard package: "
                                         r"pip install 'whisperft\[tensorboard\]'$"):
        train(cfg_for(tmp_path, tiny_model, report_to="tensorboard"))
    assert not (tmp_path / "out").exists()


def test_reference_segments_are_the_text_between_two_timestamps():
    from whisperft.tokens import timed_segments

    text = "<|0.00|> one<|1.00|><|1.20|> two<|2.00|><|2.40|>"  # the last cue runs past the window
    assert timed_segments(text) == [(0.0, 1.0, " one"), (1.2, 2.0, " two")]
    assert timed_segments(" plain text") == [] and timed_segments("") == []
