"""Stop and resume where users run them: the bundled real models, data workers, several
processes, changed flags, interrupts before training starts and steps with a bad loss."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_reliability import (ENV, EVAL_STEPS, STEPS, TRAIN_FLAGS, check_only_whole_checkpoints, run,
                              same_weights, train_cli, training, wait_until, weights)  # noqa: F401
from test_train import WORDS, make_data
from whisperft import TrainConfig, load_model
from whisperft import fine_tune as train
from whisperft.models import trainable_names
from whisperft.saving import save_ct2, save_hf, save_openai


def state_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["whisperft_train_state"]


# --------------------------------------------------------------------------------------------
# The bundled real models


def test_every_loader_gives_the_same_trainable_parameters(tiny_en, tmp_path):
    """Package, Hugging Face folder, openai .pt and CTranslate2 folder: one model, one set of
    trained tensors (the encoder's fixed sinusoidal positions frozen in each)."""
    pytest.importorskip("ctranslate2")
    expected = trainable_names(tiny_en.model)
    assert "model.encoder.embed_positions.weight" not in expected
    assert "model.decoder.embed_positions.weight" in expected  # learned in Whisper
    save_hf(tiny_en, tmp_path / "hf")
    save_openai(tiny_en, tmp_path / "model.pt", torch.float32)
    save_ct2(tiny_en, tmp_path / "ct2", "float32")
    for source in ("tiny.en", tmp_path / "hf", tmp_path / "model.pt", tmp_path / "ct2"):
        assert trainable_names(load_model(source).model) == expected, source
    # the package's converted copy is cached: the second load goes through the cache
    assert trainable_names(load_model("tiny.en").model) == expected


REAL_FLAGS = ["--batch-size", "1", "--accum-grad-steps", "1", "--eval-steps", "2", "--log-steps", "1",
              "--warmup-steps", "1", "--lr", "1e-5", "--device", "cpu"]


@pytest.mark.slow
def test_resume_on_the_bundled_base_with_more_steps(tmp_path):
    """base: train 4 steps, then the same command with --train-steps 6 --resume: it continues.
    (tiny.en does the same under spawn with data workers: test_platforms.)"""
    from conftest import offline_model_available

    name = "base"
    if not offline_model_available(name):
        pytest.fail(f"{name} is not installed offline; `make test` installs it")
    load_model(name)  # as for a user's second run: the converted model now comes from the cache
    env = {**ENV, "WHISPERFT_CACHE": os.environ["WHISPERFT_CACHE"]}
    data = make_data(tmp_path, 4)
    out = tmp_path / "out"
    cmd = [sys.executable, "run_finetuning.py", "--train-json", str(data), "--model", name, "--save-dir", str(out),
           *REAL_FLAGS]

    def run_here(*extra):
        return subprocess.run([*cmd, *extra], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)

    first = run_here("--train-steps", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert state_of(out / "last_model.pt")["step"] == 4
    second = run_here("--train-steps", "6", "--resume", str(out / "last_model.pt"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    assert "note: --train-steps 4 -> 6 on resume" in second.stderr
    assert state_of(out / "last_model.pt")["step"] == 6
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_stop_and_resume_on_tiny_en_is_bit_for_bit_the_uninterrupted_run(tmp_path):
    """The bundled tiny.en on two threads: 3 steps in one go == 1 step, stop, resume 2, bit for
    bit. So resume restores everything a step reads (weights, optimizer, schedule, data order,
    random state), and the same seed gives the same model: batches of 4 texts of 40-odd tokens
    are where the default kernels' threaded sums (the learned positions' gradient) part two
    runs, by ~1e-7 in most tensors after a step."""
    from whisperft.manifest import read_manifest, write_manifest

    data = make_data(tmp_path, 8)
    records = read_manifest(data)
    for i, r in enumerate(records):
        r.text = "<|0.00|>" + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(30)) + "<|9.00|>"
    write_manifest(data, records)
    flags = dict(train_json=str(data), model="tiny.en", batch_size=4, accum_grad_steps=1, train_steps=3,
                 eval_steps=2, log_steps=1, warmup_steps=1, lr=1e-5, device="cpu", seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(TrainConfig(save_dir=str(tmp_path / "whole"), **flags))
        train(TrainConfig(save_dir=str(tmp_path / "parts"), **flags), stop_after_steps=1)
        assert state_of(tmp_path / "parts" / "last_model.pt")["step"] == 1
        train(TrainConfig(save_dir=str(tmp_path / "parts"), resume=str(tmp_path / "parts" / "last_model.pt"),
                          **flags))
    finally:
        torch.set_num_threads(threads)
    assert same_weights(weights(tmp_path / "whole" / "last_model.pt"), weights(tmp_path / "parts" / "last_model.pt"))
    assert not torch.are_deterministic_algorithms_enabled()  # the run's setting ends with it


# --------------------------------------------------------------------------------------------
# Signals with data workers and with several processes


def test_sigint_to_the_process_group_with_data_workers_saves_and_resumes(training, tmp_path):
    """A terminal's Ctrl-C reaches the trainer and its 2 workers: the step finishes, it saves."""
    root, model, data, uninterrupted = training
    save_dir, log = tmp_path / "run", tmp_path / "run.log"
    with open(log, "w") as fh:  # its own process group, as a terminal's foreground job
        proc = subprocess.Popen([sys.executable, *train_cli(model, data, save_dir, "--num-workers", "2")],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=ENV, start_new_session=True)
    try:
        wait_until(lambda: (save_dir / "metrics.jsonl").exists()
                   and '"step": 1, "loss"' in (save_dir / "metrics.jsonl").read_text(), proc, log)
        assert len(_children(proc.pid)) >= 2, "the data workers should be running"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert "SIGINT: finishing this step, saving, then stopping" in out and "Traceback" not in out
    step = check_only_whole_checkpoints(save_dir)
    assert 1 <= step < STEPS
    resumed = run(train_cli(model, data, save_dir, "--num-workers", "2", "--resume", str(save_dir / "last_model.pt")))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(weights(save_dir / "last_model.pt"), uninterrupted)


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _kill_all(proc: subprocess.Popen) -> None:
    """The run and every process under it (torchrun's workers have sessions of their own)."""
    if proc.poll() is None:
        for pid in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)


def _rank_of(pid: int) -> int | None:
    import psutil

    try:
        rank = psutil.Process(pid).environ().get("RANK")
    except psutil.Error:
        return None
    return None if rank is None else int(rank)


DDP_STEPS = 30


def _torchrun(model: Path, data: Path, save_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "whisperft", "train",
            "--train-json", str(data), "--model", str(model), "--save-dir", str(save_dir), "--batch-size", "1",
            "--accum-grad-steps", "1", "--train-steps", str(DDP_STEPS), "--eval-steps", str(DDP_STEPS),
            "--log-steps", "1", "--lr", "1e-3", "--warmup-steps", "1", "--device", "cpu", *extra]


def test_one_rank_signalled_stops_every_rank_at_the_same_step(training, tmp_path):
    """torchrun, 2 processes (gloo): SIGINT to rank 1 only. Both stop after the same step (no
    rank left waiting in an all-reduce), one checkpoint, and the resumed run is exact."""
    root, model, data, _ = training
    whole = subprocess.run(_torchrun(model, data, tmp_path / "whole"), capture_output=True, text=True,
                           cwd=REPO, env=ENV, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    save_dir, log = tmp_path / "run", tmp_path / "run.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(_torchrun(model, data, save_dir), stdout=fh, stderr=subprocess.STDOUT,
                                cwd=REPO, env=ENV, start_new_session=True)
    try:
        wait_until(lambda: (save_dir / "metrics.jsonl").exists()
                   and '"step": 2, "loss"' in (save_dir / "metrics.jsonl").read_text(), proc, log)
        ranks = {_rank_of(p): p for p in _children(proc.pid)}
        os.kill(ranks[1], signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        _kill_all(proc)
    out = log.read_text()
    assert out.count("SIGINT: finishing this step") == 1 and "Traceback" not in out
    step = state_of(save_dir / "last_model.pt")["step"]
    assert 2 <= step < DDP_STEPS
    assert f"stopped at step {step}" in out
    resumed = subprocess.run(_torchrun(model, data, save_dir, "--resume", str(save_dir / "last_model.pt")),
                             capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(weights(save_dir / "last_model.pt"), weights(tmp_path / "whole" / "last_model.pt"))


# --------------------------------------------------------------------------------------------
# Interrupts before the loop, bad steps


def _cache_cfg(root: Path, model: Path, data: Path) -> TrainConfig:
    return TrainConfig(train_json=str(data), model=str(model), save_dir=str(root / "out"), train_only_decoder=True,
                       **{**TRAIN_FLAGS, "train_steps": 2})


def test_interrupt_while_building_the_encoder_cache_leaves_no_temp_file(training, tmp_path, monkeypatch):
    """Ctrl-C in the middle of encoding the windows: the run ends, and no half cache stays."""
    from whisperft.data import WhisperDataset

    root, model, data, _ = training
    calls = []
    features = WhisperDataset.features

    def interrupted_after_two(self, record):
        calls.append(record)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here
        return features(self, record)

    monkeypatch.setattr(WhisperDataset, "features", interrupted_after_two)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(_cache_cfg(tmp_path, model, data))
    assert len(calls) == 3
    cache = tmp_path / "out" / "encoder_cache"
    assert cache.is_dir() and list(cache.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is handler  # handlers restored


SIGTERM_DURING_CACHE = """
import os, signal, sys
from whisperft.data import WhisperDataset
features, calls = WhisperDataset.features, []
def terminated_after_two(self, record):
    calls.append(record)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return features(self, record)
WhisperDataset.features = terminated_after_two
from whisperft.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_building_the_encoder_cache_leaves_no_temp_file(training, tmp_path):
    root, model, data, _ = training
    save_dir = tmp_path / "out"
    result = run(["-c", SIGTERM_DURING_CACHE, *train_cli(model, data, save_dir, "--train-only-decoder")[2:]])
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert list((save_dir / "encoder_cache").iterdir()) == []


def test_a_stop_on_a_step_with_a_bad_loss_still_stops_and_saves(training, tmp_path, monkeypatch):
    """Step 3's loss is NaN and the stop comes at step 3: the run stops there, resumable."""
    from whisperft.evaluation import TargetLoss

    root, model, data, _ = training
    forward, calls = TargetLoss.forward, []

    def nan_on_third(self, *args, **kwargs):
        calls.append(1)
        loss = forward(self, *args, **kwargs)
        return loss * math.nan if len(calls) == 3 else loss

    monkeypatch.setattr(TargetLoss, "forward", nan_on_third)
    cfg = TrainConfig(train_json=str(data), model=str(model), save_dir=str(tmp_path / "out"), **TRAIN_FLAGS)
    assert train(cfg, stop_after_steps=3) == 0
    assert state_of(tmp_path / "out" / "last_model.pt")["step"] == 3
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if "loss" in e] == [1, 2]  # the skipped step logs no loss


# --------------------------------------------------------------------------------------------
# Changed flags


@pytest.fixture
def stopped_run(training, tmp_path):
    root, model, data, _ = training
    save_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the uninterrupted run and the CLI (OMP_NUM_THREADS=1): same sums
    try:
        train(TrainConfig(train_json=str(data), model=str(model), save_dir=str(save_dir), **TRAIN_FLAGS),
              stop_after_steps=EVAL_STEPS + 1)
    finally:
        torch.set_num_threads(threads)
    return model, data, save_dir


@pytest.mark.parametrize("change, reason", [
    (["--batch-size", "2"], "--batch-size 1 -> 2"),
    (["--seed", "8"], "--seed 7 -> 8"),
    (["--accum-grad-steps", "2"], "(--accum-grad-steps x processes) 1 -> 2"),
    (["--train-json", "OTHER"], "not the manifest(s) of that run"),
])
def test_resume_with_changed_flags_is_refused_in_one_line(stopped_run, tmp_path, change, reason):
    model, data, save_dir = stopped_run
    if change[-1] == "OTHER":
        change = [change[0], str(make_data(tmp_path, 6, seed=3, name="other.json"))]
    before = (save_dir / "last_model.pt").read_bytes()
    result = run([*train_cli(model, data, save_dir, "--resume", str(save_dir / "last_model.pt")), *change])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --resume {save_dir / 'last_model.pt'}: "), lines
    assert reason in lines[0] and "would not continue the run" in lines[0]
    assert (save_dir / "last_model.pt").read_bytes() == before


def test_resume_from_the_same_manifest_elsewhere_is_the_same_data(stopped_run, tmp_path, training):
    """The check is on the manifests' contents, not their path: a copied manifest resumes."""
    model, data, save_dir = stopped_run
    copy = data.with_name(f"copy-{tmp_path.name}.json")  # beside it: manifest paths are relative
    copy.write_bytes(data.read_bytes())
    result = run(train_cli(model, copy, save_dir, "--resume", str(save_dir / "last_model.pt")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert same_weights(weights(save_dir / "last_model.pt"), training[3])


def test_optimizer_state_is_matched_by_name(stopped_run):
    """A checkpoint whose optimizer covers other tensors is refused with one line, before
    anything is trained (not a traceback from inside torch)."""
    from whisperft.errors import UserError

    model, data, save_dir = stopped_run
    ckpt = torch.load(save_dir / "last_model.pt", weights_only=True)
    names = ckpt["whisperft_train_state"]["param_names"]
    ckpt["whisperft_train_state"]["param_names"] = names[:-1] + ["model.encoder.embed_positions.weight"]
    torch.save(ckpt, save_dir / "other.pt")
    with pytest.raises(UserError, match=r"trained tensors differ \(only in the checkpoint: "
                                        r"\['model.encoder.embed_positions.weight'\]"):
        train(TrainConfig(train_json=str(data), model=str(model), save_dir=str(save_dir),
                          resume=str(save_dir / "other.pt"), **TRAIN_FLAGS))


def test_resume_with_dropout_on_cpu_is_exact(tmp_path):
    """LoRA's dropout (0.1 here) draws from the global CPU RNG at every step: a resumed run must
    restore it and start its data loaders without drawing from it."""
    pytest.importorskip("peft")
    from conftest import random_bundle
    from test_train import whole_and_resumed
    from whisperft import saving

    model = tmp_path / "random.pt"
    saving.save_openai(random_bundle(), model, torch.float32)
    out_a, out_b, la, lb = whole_and_resumed(tmp_path, model, lora_rank=4, lora_dropout=0.1, eval_steps=3,
                                             lr=1e-2)
    assert len(la) == 6 and la == lb
    assert same_weights(weights(out_a / "last_model.pt"), weights(out_b / "last_model.pt"))
