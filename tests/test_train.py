"""Training invariants on a random 2-layer Whisper and synthetic windows (seconds on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, random_bundle
from whisperft import models, saving
from whisperft.data import BucketBatchSampler
from whisperft.manifest import Record, write_manifest
from whisperft.tokens import IGNORE_INDEX, TokenLayout
from whisperft.train import TrainConfig, get_lr, train

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def make_data(root, n: int = 12, n_mels: int = 80, seed: int = 0, name: str = "train.json"):
    """n windows with random (fixed) log-mels and short timestamped texts."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        feats = rng.standard_normal((n_mels, 3000)).astype(np.float16) * 0.3
        fp = root / f"feat{seed}_{i}.npy"
        np.save(fp, feats)
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 4))
        end = 0.5 + 0.2 * (i % 5)
        text = f"<|0.00|> {words}<|{end:.2f}|>" if i % 6 else ""
        prompt = f"<|0.00|> {WORDS[i % 10]}<|0.40|>" if i % 3 == 0 else ""
        records.append(Record(audio_path=str(fp), text=text, prompt=prompt, duration=30.0,
                              features_path=str(fp), n_mels=n_mels))
    write_manifest(root / name, records)
    return root / name


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "random.pt"
    saving.save_openai(random_bundle(), path, torch.float32)
    return path


def cfg_for(tmp_path, model, **kw) -> TrainConfig:
    base = dict(train_json=str(make_data(tmp_path)), dev_json=str(make_data(tmp_path, 4, seed=1, name="dev.json")),
                model=str(model), save_dir=str(tmp_path / "out"), batch_size=2, dev_batch_size=4,
                accum_grad_steps=2, lr=3e-3, warmup_steps=2, train_steps=6, eval_steps=3, log_steps=1,
                device="cpu", prompt_use_rate=0.5, no_timestamps_rate=0.3)
    base.update(kw)
    return TrainConfig(**base)


def losses(save_dir):
    return [json.loads(l) for l in open(save_dir / "metrics.jsonl")]


def test_layout_masks_prompt_and_sot():
    b = random_bundle()
    layout = TokenLayout(b.tokenizer, multilingual=False)
    ex = layout.example("<|0.00|> hi<|1.00|>", "en", prompt="<|0.00|> before<|0.50|>")
    prompt_len = len(layout.prompt_ids("<|0.00|> before<|0.50|>"))
    sot_at = ex.decoder_input_ids.index(layout.sot)
    assert sot_at == prompt_len and ex.decoder_input_ids[0] == layout.sot_prev
    assert ex.labels[:sot_at + 0] == [IGNORE_INDEX] * sot_at
    # position i predicts token i+1 of the input; the last label is end of text
    assert ex.labels[sot_at:-1] == ex.decoder_input_ids[sot_at + 1:]
    assert ex.labels[-1] == layout.eot
    assert ex.decoder_input_ids[sot_at + 1] == b.tokenizer.convert_tokens_to_ids("<|0.00|>")
    # no timestamps: timestamp ids vanish and a trailing partial cue trims the audio
    ex2 = layout.example("<|0.00|> hi<|1.00|><|2.00|> cut", "en", no_timestamps=True)
    assert ex2.trim_at is None
    ex3 = layout.example("<|0.00|> hi<|1.00|><|2.40|>", "en", no_timestamps=True)
    assert ex3.trim_at == 2.4
    assert not any(layout.is_timestamp(t) for t in ex3.decoder_input_ids)
    assert layout.no_timestamps in ex3.decoder_input_ids
    empty = layout.example("", "en")
    assert empty.decoder_input_ids == [layout.sot, layout.no_speech]
    assert empty.labels == [layout.no_speech, layout.eot]
    from whisperft.errors import UserError
    with pytest.raises(UserError, match="English-only"):
        layout.example("<|0.00|> hola<|1.00|>", "es")


def test_target_loss_equals_transformers_loss_and_gradients():
    """The loss that projects only target positions is transformers' loss, value and gradients."""
    from whisperft.evaluation import TargetLoss

    b = random_bundle()
    layout = TokenLayout(b.tokenizer, multilingual=False)
    examples = [layout.example("<|0.00|> the patient<|1.00|>", "en", prompt="<|0.00|> earlier text<|0.50|>"),
                layout.example("<|0.00|> a much longer sentence about apixaban<|2.00|>", "en"),
                layout.example("", "en")]
    ids = [torch.tensor(e.decoder_input_ids) for e in examples]
    labels = [torch.tensor(e.labels) for e in examples]
    n = max(len(i) for i in ids)
    pad = lambda xs, v: torch.stack([torch.cat([x, torch.full((n - len(x),), v)]) for x in xs])
    batch = dict(input_features=torch.randn(3, 80, 3000), decoder_input_ids=pad(ids, layout.eot),
                 decoder_attention_mask=pad([torch.ones_like(i) for i in ids], 0), labels=pad(labels, IGNORE_INDEX))
    assert (batch["labels"] == IGNORE_INDEX).sum() > 5  # prompt and padding positions are present
    model = b.model.train()
    ref = model(**batch).loss
    ref.backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert len(ref_grads) > 20
    model.zero_grad()
    ours = TargetLoss(model)(**batch)
    ours.backward()
    assert torch.allclose(ours, ref, atol=1e-6)
    assert {k for k, p in model.named_parameters() if p.grad is not None} == set(ref_grads)
    for k, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, ref_grads[k], atol=1e-6), k


def test_multilingual_prefix_from_tokenizer():
    b = random_bundle(multilingual=True)
    layout = TokenLayout(b.tokenizer, multilingual=True)
    ids = b.tokenizer.convert_tokens_to_ids
    assert layout.prefix("es", False) == [ids("<|startoftranscript|>"), ids("<|es|>"), ids("<|transcribe|>")]


def test_bucket_sampler_covers_every_index_once():
    lengths = [int(x) for x in np.random.default_rng(0).integers(1, 200, 103)]
    s = BucketBatchSampler(lengths, 8, seed=3, pool_batches=4)
    for epoch in range(3):
        batches = s.batches(epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(103))  # Invariant: each index once per epoch
    assert s.batches(1) == s.batches(1) and s.batches(1) != s.batches(2)
    # bucketing keeps lengths inside a batch close: far less spread than random batches
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in s.batches(0)])
    assert spread < 60


def test_lr_schedule():
    cfg = TrainConfig(train_json="x", lr=1.0, warmup_steps=4, train_steps=12)
    assert [round(get_lr(s, cfg), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert get_lr(8, cfg) == pytest.approx(0.5) and get_lr(12, cfg) == 0


def test_loss_falls_and_outputs_written(tmp_path, tiny_model):
    cfg = cfg_for(tmp_path, tiny_model, train_steps=8, eval_steps=4, lr=1e-2)
    assert train(cfg) == 0
    out = tmp_path / "out"
    for name in ("best_model.pt", "last_model.pt", "args.json", "metrics.jsonl", "loss_curve.png"):
        assert (out / name).is_file(), name
    log = losses(out)
    dev = [e["dev_loss"] for e in log if "dev_loss" in e]
    train_losses = [e["loss"] for e in log if "loss" in e]
    assert dev[-1] < dev[0] - 1.0 and train_losses[-1] < train_losses[0]
    assert all(0 <= e["padding"] < 1 for e in log if "padding" in e)
    # the checkpoints load back as models (and the best one is what evaluation picked)
    best = models.load_model(out / "best_model.pt")
    assert best.model.config.encoder_layers == 2
    assert torch.load(out / "best_model.pt", weights_only=True)["model_state_dict"][
        "decoder.token_embedding.weight"].dtype == torch.float16


def test_resume_is_exact(tmp_path, tiny_model):
    """train 6 steps == train 4, stop (as Ctrl-C does), --resume, train 2: same losses, weights."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train(cfg_for(tmp_path / "a", tiny_model, eval_steps=3))
    train(cfg_for(tmp_path / "b", tiny_model, eval_steps=3), stop_after_steps=4)
    out_b = tmp_path / "b" / "out"
    stopped = torch.load(out_b / "last_model.pt", weights_only=True)["whisperft_train_state"]
    assert stopped["step"] == 4
    train(cfg_for(tmp_path / "b", tiny_model, eval_steps=3, resume=str(out_b / "last_model.pt")))
    la = [e["loss"] for e in losses(tmp_path / "a" / "out") if "loss" in e]
    lb = [e["loss"] for e in losses(out_b) if "loss" in e]
    assert len(la) == 6 and len(lb) == 6
    assert np.allclose(la, lb, atol=1e-6, rtol=0)
    wa = torch.load(tmp_path / "a" / "out" / "last_model.pt", weights_only=True)["model_state_dict"]
    wb = torch.load(out_b / "last_model.pt", weights_only=True)["model_state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_only_decoder_freezes_encoder(tmp_path, tiny_model):
    cfg = cfg_for(tmp_path, tiny_model, train_only_decoder=True, train_steps=3, eval_steps=3)
    train(cfg)
    before = torch.load(tiny_model, weights_only=True)["model_state_dict"]
    ckpt = torch.load(tmp_path / "out" / "last_model.pt", weights_only=True)
    after = ckpt["model_state_dict"]
    enc = [k for k in before if k.startswith("encoder.")]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    # no optimizer state for the encoder: only decoder parameters are in the optimizer
    n_dec = sum(1 for k in before if k.startswith("decoder."))
    assert len(ckpt["whisperft_train_state"]["optimizer"]["state"]) <= n_dec


def printed_command(stdout: str, heading: str) -> list[str]:
    """The command a run printed under `heading`, as argv for this Python (`whisperft` -> `-m whisperft`)."""
    import shlex

    lines = stdout.splitlines()
    words = shlex.split(lines[lines.index(heading) + 1])
    assert words[0] == "whisperft", words
    return [sys.executable, "-m", "whisperft", *words[1:]]


@pytest.mark.slow
def test_cli_quick_run(tmp_path, tiny_model):
    """run_finetuning.py as a user types it, with the original guide's quick-test flags (no
    --accum-grad-steps: one micro-batch per step by default); at its end the run names its
    outputs and the commands to go on, and the printed train-further command continues it."""
    train_json = make_data(tmp_path)
    save_dir = tmp_path / "first_model"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "run_finetuning.py", "--train-json", str(train_json), "--dev-json", str(train_json),
         "--model", str(tiny_model), "--batch-size", "4", "--train-steps", "3", "--save-dir", str(save_dir)],
        capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Step 3: loss=" in run.stdout and "Validation loss:" in run.stdout
    assert "effective batch 4" in run.stdout
    assert (save_dir / "best_model.pt").is_file()
    assert f"outputs in {save_dir}:" in run.stdout
    for name in ("best_model.pt", "last_model.pt", "loss_curve.png", "metrics.jsonl", "args.json"):
        assert any(line.split()[:1] == [name] for line in run.stdout.splitlines()), name
    best = save_dir / "best_model.pt"
    assert (f"whisperft transcribe --model {best} --audio-dir AUDIO_DIR --language en "
            f"--save-dir {save_dir / 'transcripts'}") in run.stdout  # the windows' audio is no folder of recordings
    assert f"whisperft export {best} --format hf --out {save_dir / 'hf'}" in run.stdout

    further = printed_command(run.stdout, "train further (from step 3):")
    assert further[-4:] == ["--resume", str(save_dir / "last_model.pt"), "--train-steps", "6"]
    again = subprocess.run(further, capture_output=True, text=True, cwd=REPO, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    state = torch.load(save_dir / "last_model.pt", weights_only=True)["whisperft_train_state"]
    assert state["step"] == 6 and [e["step"] for e in losses(save_dir)][-1] == 6
    assert "train further (from step 6):" in again.stdout


MISSING_INPUTS = {
    "--train-json": (lambda tmp, data: dict(train_json=str(tmp / "missing.json")),
                     lambda tmp: f"{tmp / 'missing.json'}: no such manifest (make one with create_data.py)"),
    "--dev-json": (lambda tmp, data: dict(train_json=str(data), dev_json=str(tmp / "nodev.json")),
                   lambda tmp: f"{tmp / 'nodev.json'}: no such manifest (make one with create_data.py)"),
    "--resume": (lambda tmp, data: dict(train_json=str(data), resume=str(tmp / "gone.pt")),
                 lambda tmp: f"--resume {tmp / 'gone.pt'}: no such checkpoint"),
    "audio of a manifest": (lambda tmp, data: dict(train_json=str(data)),
                            lambda tmp: f"{tmp / 'train.json'}: 1 of 12 records name audio that is not there "
                                        f"(first: {tmp / 'feat0_5.npy'}); moved or deleted since create_data.py?"),
}


@pytest.mark.parametrize("what", MISSING_INPUTS)
def test_a_missing_input_is_named_before_the_model_loads(what, tmp_path, monkeypatch):
    """A Hub name (`tiny`, no network here) with a missing file: the file is reported, and no
    model is loaded and no Hub is tried first."""
    from whisperft import train as train_module
    from whisperft.errors import UserError

    data = make_data(tmp_path)
    if what == "audio of a manifest":
        (tmp_path / "feat0_5.npy").unlink()
    calls = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: calls.append(a) or pytest.fail("model loaded"))
    monkeypatch.setattr(models, "_load_hf", lambda *a, **k: calls.append(a) or pytest.fail("Hub tried"))
    monkeypatch.setattr(train_module, "make_accelerator", lambda *a: calls.append(a) or pytest.fail("device set up"))
    flags, message = MISSING_INPUTS[what]
    with pytest.raises(UserError) as err:
        train(TrainConfig(model="tiny", save_dir=str(tmp_path / "out"), **flags(tmp_path, data)))
    assert str(err.value) == message(tmp_path) and calls == []
    assert not (tmp_path / "out").exists()


def test_cli_missing_manifest_is_one_line(tmp_path):
    """The original report: `run_finetuning.py --train-json missing.json --model tiny` names the file."""
    run = subprocess.run([sys.executable, "run_finetuning.py", "--train-json", "missing.json", "--model", "tiny",
                          "--save-dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "0"})
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: missing.json: no such manifest (make one with create_data.py)"]



@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_model):
    """torchrun with 2 CPU processes (gloo) == 1 process with the same global batch."""
    train_json = make_data(tmp_path, 8)
    common = ["--train-json", str(train_json), "--model", str(tiny_model), "--batch-size", "2",
              "--train-steps", "3", "--eval-steps", "3", "--log-steps", "1", "--device", "cpu",
              "--lr", "3e-3", "--warmup-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "-m", "whisperft", "train", *common, "--accum-grad-steps", "1",
                          "--save-dir", str(tmp_path / "two")], capture_output=True, text=True, cwd=REPO, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "whisperft", "train", *common, "--accum-grad-steps", "2",
                          "--save-dir", str(tmp_path / "one")], capture_output=True, text=True, cwd=REPO, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    l1 = [e["loss"] for e in losses(tmp_path / "one")]
    l2 = [e["loss"] for e in losses(tmp_path / "two")]
    assert len(l1) == len(l2) == 3
    assert np.allclose(l1, l2, atol=1e-4, rtol=0)
    w1 = torch.load(tmp_path / "one" / "last_model.pt", weights_only=True)["model_state_dict"]
    w2 = torch.load(tmp_path / "two" / "last_model.pt", weights_only=True)["model_state_dict"]
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


def test_encoder_cache_gives_the_same_losses(tmp_path, tiny_model):
    """Decoder-only training from cached (fp16) encoder outputs follows the uncached run."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kw = dict(train_only_decoder=True, train_steps=4, eval_steps=4, no_timestamps_rate=0.5)
    train(cfg_for(tmp_path / "a", tiny_model, cache_encoder_outputs=False, **kw))
    train(cfg_for(tmp_path / "b", tiny_model, cache_encoder_outputs=True, **kw))
    cache_files = list((tmp_path / "b" / "out" / "encoder_cache").glob("encoder-*.npy"))
    assert len(cache_files) == 1
    assert not (tmp_path / "a" / "out" / "encoder_cache").exists()
    la = [e["loss"] for e in losses(tmp_path / "a" / "out") if "loss" in e]
    lb = [e["loss"] for e in losses(tmp_path / "b" / "out") if "loss" in e]
    assert np.allclose(la, lb, rtol=2e-3, atol=2e-3), (la, lb)
    # Invariant: the cache is keyed by the encoder weights: another model gets another file
    from whisperft.data import read_manifests
    from whisperft.encoder_cache import cache_key
    b1, b2 = random_bundle(seed=1), random_bundle(seed=2)
    records = read_manifests(str(tmp_path / "b" / "train.json"))
    assert cache_key(b1.model.model.encoder, records, 80) != cache_key(b2.model.model.encoder, records, 80)


def whole_and_resumed(tmp_path, model, **kw):
    """The 6-step run of `kw` in one go (in a/) and stopped after 4 steps, then resumed (in b/):
    (output folders, their logged training losses)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train(cfg_for(tmp_path / "a", model, **kw))
    train(cfg_for(tmp_path / "b", model, **kw), stop_after_steps=4)
    out_a, out_b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    train(cfg_for(tmp_path / "b", model, resume=str(out_b / "last_model.pt"), **kw))
    la = [e["loss"] for e in losses(out_a) if "loss" in e]
    lb = [e["loss"] for e in losses(out_b) if "loss" in e]
    return out_a, out_b, la, lb


def test_lora_trains_few_parameters_saves_merged_and_resumes(tmp_path, tiny_model):
    pytest.importorskip("peft")
    out_a, out_b, la, lb = whole_and_resumed(tmp_path, tiny_model, lora_rank=4, lora_dropout=0.0, eval_steps=3,
                                             lr=1e-2)
    assert len(la) == 6 and np.allclose(la, lb, atol=1e-6, rtol=0)
    ckpt = torch.load(out_a / "last_model.pt", weights_only=True)
    adapter = ckpt["whisperft_train_state"]["adapter"]
    n_adapter = sum(v.numel() for v in adapter.values())
    n_model = sum(v.numel() for v in ckpt["model_state_dict"].values())
    assert 0 < n_adapter < 0.05 * n_model
    assert (out_a / "lora_adapter" / "adapter_config.json").is_file()
    # best/last are plain merged weights: openai names only, loadable anywhere, and changed
    merged = ckpt["model_state_dict"]
    assert not any("lora" in k for k in merged)
    base = torch.load(tiny_model, weights_only=True)["model_state_dict"]
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.endswith("weight") for k in changed)
    assert all(any(t in k for t in ("query", "key", "value", "out", "mlp")) for k in changed)
    models.load_model(out_a / "best_model.pt")


def test_memory_options_run_on_cpu(tmp_path, tiny_model, capsys):
    """8-bit Adam (bitsandbytes), AMP and gradient checkpointing degrade/run on CPU, no crash."""
    pytest.importorskip("bitsandbytes")
    cfg = cfg_for(tmp_path, tiny_model, train_steps=2, eval_steps=2, use_adam_8bit=True, use_amp=True,
                  gradient_checkpointing=True)
    assert train(cfg) == 0
    err = capsys.readouterr().err
    assert "--use-amp ignored on CPU" in err and "8-bit Adam on CPU" in err
    assert (tmp_path / "out" / "best_model.pt").is_file()


def test_bad_settings_are_clear_errors(tmp_path, tiny_model):
    from whisperft.errors import UserError
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            train(cfg_for(tmp_path, tiny_model, device="cuda"))
    with pytest.raises(UserError, match="prompt-use-rate"):
        train(cfg_for(tmp_path, tiny_model, prompt_use_rate=1.5))
    with pytest.raises(UserError, match="no such manifest"):
        train(cfg_for(tmp_path, tiny_model, train_json=str(tmp_path / "nope.json")))


def test_plain_text_records_always_train_without_timestamps(tmp_path):
    from whisperft.data import DataOptions, WhisperDataset
    b = random_bundle()
    layout = TokenLayout(b.tokenizer, multilingual=False)
    fp = tmp_path / "f.npy"
    np.save(fp, np.zeros((80, 3000), np.float16))
    recs = [Record(audio_path=str(fp), text=" plain clip text", features_path=str(fp), n_mels=80),
            Record(audio_path=str(fp), text="<|0.00|> timed<|1.00|>", features_path=str(fp), n_mels=80)]
    ds = WhisperDataset(recs, layout, 80, DataOptions(prompt_use_rate=0.0, no_timestamps_rate=0.0))
    assert layout.no_timestamps in ds[0]["decoder_input_ids"]
    assert layout.no_timestamps not in ds[1]["decoder_input_ids"]
