"""Each objective against a hand-computed value on a fixed batch, and the limits that define it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mmunlearn.config import MethodConfig
from mmunlearn.methods import FORGET_OBJECTIVES, RETAIN_REGULARISERS, compose
from mmunlearn.methods.common import answer_nll, model_inputs, sequence_logprobs
from mmunlearn.methods.idkpo import preference_loss
from mmunlearn.methods.kl import answer_kl, retain_kl, retain_nll_kl
from mmunlearn.methods.npo import npo_loss
from mmunlearn.methods.rmu import control_vector, keep_retain_representations, masked_mse, misdirect_forget
from mmunlearn.methods.simnpo import simnpo_loss
from mmunlearn.training.data import IGNORE_INDEX
from tests.methods.conftest import perturb_adapter, reset_adapter


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_answer_logprobs_sum_only_the_answer_tokens():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    batch = {"labels": torch.tensor([[IGNORE_INDEX, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, 0]])}
    seen = {}

    def model(logits_to_keep, **_):  # returns the kept rows of fixed logits, as the LM head would
        seen["kept"] = logits_to_keep
        return SimpleNamespace(logits=torch.cat([logits, logits])[logits_to_keep])

    total, count = sequence_logprobs(model, batch)
    assert seen["kept"].tolist() == [[True, True, False], [False, True, False]]  # only answer-predicting positions
    assert count.tolist() == [2, 1]
    assert total[0].item() == pytest.approx(math.log(0.25) + math.log(0.1), abs=1e-6)
    assert total[1].item() == pytest.approx(math.log(0.1), abs=1e-6)


def test_answer_nll_equals_the_full_sequence_loss(tiny):
    """Projecting only the answer positions changes nothing but the cost."""
    model, _, batch = tiny
    perturb_adapter(model, 0.1)
    full = model(**model_inputs(model, batch), labels=batch["labels"]).loss
    assert answer_nll(model, batch).item() == pytest.approx(full.item(), rel=1e-5)
    logits = model(**model_inputs(model, batch)).logits
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    picked = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["labels"][:, 1:].clamp(min=0)[..., None])[..., 0]
    assert torch.allclose(sequence_logprobs(model, batch)[0], (picked * mask).sum(-1), atol=1e-4)
    reset_adapter(model)


def test_npo_matches_its_formula():
    logprobs, reference = torch.tensor([-2.0, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    expected = -(2 / beta) * (_logsigmoid(-beta * 1.0) + _logsigmoid(-beta * -1.0)) / 2
    assert npo_loss(logprobs, reference, beta).item() == pytest.approx(expected, rel=1e-6)
    # at log π_θ = log π_ref the loss is (2/β)·log 2
    assert npo_loss(reference, reference, beta).item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)


def test_npo_gradient_becomes_gradient_ascent_as_beta_vanishes(tiny):
    """∇L_NPO → ∇ mean_i log π_θ(y_i|x_i) as β → 0: descending it is GA on the summed answer likelihood."""
    model, _, batch = tiny
    perturb_adapter(model, 0.1)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def gradients(loss):  # the vision tower's adapter is unused by a text-only batch
        return [g for g in torch.autograd.grad(loss, trainable, allow_unused=True) if g is not None]

    reference = sequence_logprobs(model, batch)[0].detach() + 0.7  # any fixed reference
    npo = gradients(npo_loss(sequence_logprobs(model, batch)[0], reference, beta=1e-4))
    ga = gradients(sequence_logprobs(model, batch)[0].mean())
    assert len(npo) == len(ga) > 0
    for mine, theirs in zip(npo, ga):
        assert torch.allclose(mine, theirs, rtol=1e-3, atol=1e-6)
    reset_adapter(model)


def test_simnpo_is_length_normalised():
    logprobs, lengths = torch.tensor([-6.0, -2.0]), torch.tensor([3, 1])
    beta, gamma = 2.0, 0.5
    expected = -(2 / beta) * (_logsigmoid(-beta * -2.0 - gamma) + _logsigmoid(-beta * -2.0 - gamma)) / 2
    assert simnpo_loss(logprobs, lengths, beta, gamma).item() == pytest.approx(expected, rel=1e-6)


def test_idk_preference_matches_dpo():
    chosen, chosen_ref = torch.tensor([-1.0]), torch.tensor([-3.0])
    rejected, rejected_ref = torch.tensor([-2.0]), torch.tensor([-1.0])
    beta = 0.1
    margin = (-1.0 - -3.0) - (-2.0 - -1.0)  # = 3
    assert preference_loss(chosen, chosen_ref, rejected, rejected_ref, beta).item() == pytest.approx(
        -_logsigmoid(beta * margin), rel=1e-6)


def test_kl_is_zero_when_current_equals_reference_and_positive_otherwise(tiny):
    model, _, batch = tiny
    reset_adapter(model)  # a fresh adapter: the model is its reference
    assert retain_kl(model, batch, MethodConfig()).item() == pytest.approx(0.0, abs=1e-6)
    perturb_adapter(model)
    assert retain_kl(model, batch, MethodConfig()).item() > 1e-3
    reset_adapter(model)


def test_mllmu_benchs_kl_regulariser_is_the_retain_nll_plus_the_kl(tiny):
    """KL_Minimization.py descends on ``outputs_current.loss + kl_div`` over the retain set."""
    model, _, batch = tiny
    reset_adapter(model)
    assert retain_nll_kl(model, batch, MethodConfig()).item() == pytest.approx(answer_nll(model, batch).item(), rel=1e-5)
    perturb_adapter(model)
    both = answer_nll(model, batch).item() + retain_kl(model, batch, MethodConfig()).item()
    assert retain_nll_kl(model, batch, MethodConfig()).item() == pytest.approx(both, rel=1e-5)
    reset_adapter(model)


def test_answer_kl_hand_computed():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = float((p * (p.log() - q.log())).sum())
    reference_logits = torch.log(torch.stack([p, p]))
    logits = torch.log(torch.stack([q, p]))  # the second position matches its reference: KL 0
    assert answer_kl(logits, reference_logits).item() == pytest.approx(expected / 2, rel=1e-6)


def test_rmu_terms(tiny):
    model, _, batch = tiny
    method = MethodConfig(forget="rmu", retain="rmu", steering_coeff=3.0, layer=1)
    hidden = torch.zeros(1, 2, 4)
    target = control_vector(4, 3.0, seed=0, like=hidden)
    assert target.norm().item() == pytest.approx(3.0, rel=1e-6)
    mask = torch.tensor([[0, 1]])
    assert masked_mse(hidden, target.expand_as(hidden), mask).item() == pytest.approx(9.0 / 4, rel=1e-6)

    reset_adapter(model)
    assert keep_retain_representations(model, batch, method).item() == pytest.approx(0.0, abs=1e-8)
    assert misdirect_forget(model, {"forget": batch}, method).item() > 0
    with pytest.raises(ValueError, match="layer 9"):
        misdirect_forget(model, {"forget": batch}, MethodConfig(layer=9))


def test_composition_weights_and_unknown_names(tiny):
    model, _, batch = tiny
    reset_adapter(model)
    grad_diff = compose(MethodConfig(forget="ga", retain="nll", forget_weight=2.0, retain_weight=0.5))
    nll = answer_nll(model, batch).item()
    assert grad_diff(model, {"forget": batch, "retain": batch}).item() == pytest.approx(-2.0 * nll + 0.5 * nll, rel=1e-5)
    assert grad_diff.needs_retain and not compose(MethodConfig(forget="ga")).needs_retain
    assert compose(MethodConfig(forget="npo")).reference_logprobs
    assert compose(MethodConfig(forget="idkpo")).alternative == "idk"
    with pytest.raises(KeyError, match="unknown forget objective"):
        compose(MethodConfig(forget="nope"))
    with pytest.raises(KeyError, match="unknown retain regulariser"):
        compose(MethodConfig(forget="ga", retain="nope"))
    assert {"ga", "npo", "simnpo", "idkpo", "rmu"} <= set(FORGET_OBJECTIVES)
    assert {"nll", "kl", "nll_kl", "rmu"} <= set(RETAIN_REGULARISERS)
