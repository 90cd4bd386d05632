"""--preserve-weight (L2-SP): the term is zero where training starts and grows as the trained
weights move; its gradient is the term's; a guarded run moves the weights less than an unguarded
one; a stopped guarded run resumes exactly, full and LoRA; a bad weight is refused early."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_bundle
from test_train import cfg_for, losses, whole_and_resumed
from whisperft import UserError, fine_tune as train, load_model
from whisperft.models import trainable_names
from whisperft.preserve import make_anchor
from whisperft.saving import save_openai


@pytest.fixture
def random_model(tmp_path):
    path = tmp_path / "random.pt"
    save_openai(random_bundle(), path, torch.float32)
    return path


def test_the_term_is_zero_at_the_start_and_grows_as_weights_move():
    model = random_bundle().model
    names = trainable_names(model)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = make_anchor(0.5, params, names, None, "unused", lora=False)
    assert anchor.penalty() == 0.0
    anchor.pull()
    assert all(float(p.grad.abs().max()) == 0.0 for p in params)
    for p in params:
        p.grad = None
    g = torch.Generator().manual_seed(0)
    shifts = [torch.randn(p.shape, generator=g) * 1e-3 for p in params]
    penalties = []
    for scale in (1, 2, 4):
        with torch.no_grad():
            for p, a, s in zip(params, anchor.anchors, shifts):
                p.copy_(a + scale * s)
        penalties.append(anchor.penalty())
    expected = 0.5 * sum(float(s.double().pow(2).sum()) for s in shifts)
    assert penalties[0] > 0 and penalties == pytest.approx([expected, 4 * expected, 16 * expected], rel=1e-4)
    # the gradient added is the term's: 2W(θ − θ₀), on top of what was there
    params[0].grad = torch.ones_like(params[0])
    anchor.pull()
    torch.testing.assert_close(params[0].grad, 1 + 2 * 0.5 * 4 * shifts[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(params[1].grad, 2 * 0.5 * 4 * shifts[1], rtol=1e-4, atol=1e-6)
    assert make_anchor(0.0, params, names, None, "unused", lora=False) is None


def _distance(path, original) -> float:
    tuned = load_model(path).model.state_dict()
    return sum(float((tuned[k] - v).pow(2).sum()) for k, v in original.items())


def test_a_guarded_run_moves_the_weights_less_and_logs_its_term(tmp_path, random_model):
    original = load_model(random_model).model.state_dict()
    dist = {}
    for weight in (0.0, 50.0):
        root = tmp_path / f"w{weight:g}"
        root.mkdir()
        train(cfg_for(root, random_model, preserve_weight=weight, lr=1e-2))
        dist[weight] = _distance(root / "out" / "last_model.pt", original)
        logged = [e for e in losses(root / "out") if "loss" in e]
        if weight:
            terms = [e["preserve_penalty"] for e in logged]
            assert min(terms) > 0  # logged after each step's update
        else:
            assert not any("preserve_penalty" in e for e in logged)
    assert 0 < dist[50.0] < 0.5 * dist[0.0], dist


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_guarded_run_resumes_exactly(tmp_path, random_model, lora):
    kw = dict(preserve_weight=5.0, lr=1e-2, eval_steps=3)
    if lora:
        pytest.importorskip("peft")
        kw.update(lora_rank=4, lora_dropout=0.0)
    out_a, out_b, la, lb = whole_and_resumed(tmp_path, random_model, **kw)
    assert len(la) == 6 and np.allclose(la, lb, atol=1e-6, rtol=0)
    terms = [[e["preserve_penalty"] for e in losses(o) if "loss" in e] for o in (out_a, out_b)]
    assert terms[0][-1] > 0 and np.allclose(terms[0], terms[1], rtol=1e-5, atol=0)
    wa, wb = (torch.load(o / "last_model.pt", weights_only=True)["model_state_dict"] for o in (out_a, out_b))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    state = torch.load(out_b / "last_model.pt", weights_only=True)["whisperft_train_state"]
    # LoRA's anchors are the adapters' first values and travel; a full run's are re-read from
    # the model the run started from, which the state names
    assert ("preserve_anchors" in state) == lora and state["started_from"] == str(random_model)
    assert json.loads(state["config"])["preserve_weight"] == 5.0


def test_a_bad_weight_and_a_changed_weight_on_resume_are_refused(tmp_path, random_model):
    with pytest.raises(UserError, match="--preserve-weight -1.0: must be 0"):
        train(cfg_for(tmp_path, random_model, preserve_weight=-1.0))
    assert not (tmp_path / "out").exists()
    train(cfg_for(tmp_path, random_model, preserve_weight=1.0), stop_after_steps=1)
    with pytest.raises(UserError, match=r"--preserve-weight 1.0 -> 2.0"):
        train(cfg_for(tmp_path, random_model, preserve_weight=2.0,
                      resume=str(tmp_path / "out" / "last_model.pt")))
