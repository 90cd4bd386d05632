"""Full fine-tuning sharded with FSDP2, launched as a user would (`accelerate launch --config_file
examples/fsdp_cpu_test.yaml run_finetuning.py ...`), on 2 CPU processes over gloo with a random
2-layer Whisper: the same losses and weights as one unsharded process, whole checkpoints that
transcribe takes, and exact resume (from a sharded checkpoint, sharded or not)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, random_bundle, speak
from test_train import losses, make_data
from whisperft import TranscribeOptions, load_model, saving, transcribe_file

CONFIG = REPO / "examples" / "fsdp_cpu_test.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
STEPS = 4
FAST = ["--beam-size", "1", "--temperature-increment", "0"]  # a random model's gibberish would fall back 5 times


def accelerate_launch(config, *args) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    result = subprocess.run([*launcher, "run_finetuning.py", *args], capture_output=True, text=True, cwd=REPO,
                            env=ENV, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def one_process(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "run_finetuning.py", *args], capture_output=True, text=True,
                            cwd=REPO, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A random model on disk, training and validation manifests, and the flags every run shares
    (the warm-up outlasts the run: a shorter --train-steps keeps the same learning rates)."""
    root = tmp_path_factory.mktemp("fsdp")
    model = root / "random.pt"
    saving.save_openai(random_bundle(), model, torch.float32)
    flags = ["--train-json", str(make_data(root, 8)), "--dev-json", str(make_data(root, 4, seed=1, name="dev.json")),
             "--model", str(model), "--batch-size", "2", "--eval-steps", "2", "--log-steps", "1",
             "--lr", "3e-3", "--warmup-steps", "8", "--device", "cpu", "--no-timestamps-rate", "0.3"]
    return root, flags


@pytest.fixture(scope="module")
def sharded_run(setting):
    """4 steps under FSDP on 2 processes, 2 micro-batches each per step, with gradient checkpointing."""
    root, flags = setting
    out = root / "sharded"
    result = accelerate_launch(CONFIG, *flags, "--train-steps", str(STEPS), "--accum-grad-steps", "2",
                               "--gradient-checkpointing", "--save-dir", str(out))
    return out, result


def weights(path) -> dict:
    return torch.load(path, weights_only=True)["model_state_dict"]


def train_losses(out) -> list[float]:
    return [e["loss"] for e in losses(out) if "loss" in e]


def dev_losses(out) -> list[float]:
    return [e["dev_loss"] for e in losses(out) if "dev_loss" in e]


def test_sharded_run_matches_one_process(setting, sharded_run):
    """FSDP on 2 processes == 1 unsharded process with the same global batch (4 micro-batches)."""
    root, flags = setting
    out, result = sharded_run
    assert "device cpu:0 x 2, sharded with FSDP2" in result.stdout, result.stdout[-2000:]
    one = root / "one"
    one_process(*flags, "--train-steps", str(STEPS), "--accum-grad-steps", "4", "--save-dir", str(one))
    assert len(train_losses(out)) == len(train_losses(one)) == STEPS
    assert np.allclose(train_losses(out), train_losses(one), atol=1e-4, rtol=0)
    assert len(dev_losses(out)) == 3 and np.allclose(dev_losses(out), dev_losses(one), atol=1e-4, rtol=0)
    assert train_losses(out)[-1] < train_losses(out)[0]
    for name, tol in (("last_model.pt", 1e-5), ("best_model.pt", 1e-3)):  # best_model.pt is float16
        w_sharded, w_one = weights(out / name), weights(one / name)
        assert w_sharded.keys() == w_one.keys()
        assert max((w_sharded[k].float() - w_one[k].float()).abs().max().item() for k in w_one) < tol, name
    # whole tensors, trained: not one process's shard, not the starting weights
    start = weights(root / "random.pt")
    assert all(w.shape == start[k].shape for k, w in weights(out / "last_model.pt").items())
    assert any(not torch.equal(w, start[k]) for k, w in weights(out / "last_model.pt").items())
    # the optimizer state is saved whole, in the unsharded layout
    state = torch.load(out / "last_model.pt", weights_only=True)["whisperft_train_state"]
    adam = state["optimizer"]["state"]
    assert len(adam) == len(state["param_names"])
    embed = state["param_names"].index("model.decoder.embed_tokens.weight")
    assert adam[embed]["exp_avg"].shape == start["decoder.token_embedding.weight"].shape


def test_sharded_checkpoints_transcribe(sharded_run, tmp_path):
    """transcribe.py takes best_model.pt, the loader and transcribe_file take last_model.pt."""
    out, _ = sharded_run
    clip = speak("Please call Stella.", tmp_path / "audio" / "clip.wav")
    result = subprocess.run([sys.executable, "transcribe.py", "--model", str(out / "best_model.pt"),
                             "--audio-dir", str(clip.parent), "--save-dir", str(tmp_path / "srt"),
                             *FAST, "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "srt" / "clip.srt").is_file()
    bundle = load_model(out / "last_model.pt")
    assert bundle.model.config.encoder_layers == 2
    assert torch.equal(bundle.model.model.encoder.conv1.weight.detach(),
                       weights(out / "last_model.pt")["encoder.conv1.weight"])
    transcribe_file(bundle, clip, TranscribeOptions(beam_size=1, temperature_increment=0.0))


def test_sharded_resume_is_exact(setting, sharded_run):
    """2 steps, then --resume for 2 more, both under FSDP == the 4 steps in one go: same losses,
    same weights; the half-way checkpoint also resumes in one unsharded process."""
    root, flags = setting
    out, _ = sharded_run
    half = root / "half"
    common = [*flags, "--accum-grad-steps", "2", "--gradient-checkpointing", "--save-dir", str(half)]
    accelerate_launch(CONFIG, *common, "--train-steps", str(STEPS // 2))
    state = torch.load(half / "last_model.pt", weights_only=True)["whisperft_train_state"]
    assert state["step"] == STEPS // 2 and state["world"] == 2
    unsharded = root / "unsharded"
    unsharded.mkdir()
    (unsharded / "last_model.pt").write_bytes((half / "last_model.pt").read_bytes())
    accelerate_launch(CONFIG, *common, "--train-steps", str(STEPS), "--resume", str(half / "last_model.pt"))
    assert train_losses(half) == train_losses(out) and dev_losses(half) == dev_losses(out)
    w_straight, w_resumed = weights(out / "last_model.pt"), weights(half / "last_model.pt")
    assert all(torch.equal(w_straight[k], w_resumed[k]) for k in w_straight)  # bit for bit

    # the same checkpoint, resumed without FSDP (4 micro-batches a step in one process)
    one_process(*flags, "--accum-grad-steps", "4", "--gradient-checkpointing", "--save-dir", str(unsharded),
                "--train-steps", str(STEPS), "--resume", str(unsharded / "last_model.pt"))
    assert np.allclose(train_losses(unsharded)[STEPS // 2:], train_losses(out)[STEPS // 2:], atol=1e-4, rtol=0)
    w_unsharded = weights(unsharded / "last_model.pt")
    assert max((w_straight[k] - w_unsharded[k]).abs().max().item() for k in w_straight) < 1e-5


def test_what_a_sharded_run_cannot_do_is_refused_before_the_model_loads(setting, tmp_path):
    root, flags = setting
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG)]
    result = subprocess.run([*launcher, "run_finetuning.py", *flags, "--train-steps", "1", "--lora-rank", "4",
                             "--save-dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, env=ENV,
                            timeout=600)
    assert result.returncode != 0
    assert "--lora-rank 4 under FSDP: LoRA fits one device" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr.split("--lora-rank 4 under FSDP")[0]
    assert not (tmp_path / "out").exists()
