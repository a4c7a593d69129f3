"""UnLOK-VQA defense objectives against hand-computed values, and the examples they train on."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mmunlearn.config import MethodConfig
from mmunlearn.methods import FORGET_OBJECTIVES, compose
from mmunlearn.methods.common import model_inputs, sequence_logprobs
from mmunlearn.methods.lens_defenses import (
    answer_lens,
    head_projection_hinge,
    lens_entropy,
)
from mmunlearn.training.data import IGNORE_INDEX, TextExample, collate, encode_example
from mmunlearn.training.examples import with_prompt_prefixes, wrong_fact_examples
from tests.methods.conftest import perturb_adapter, reset_adapter

LENS = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))  # one position, one layer, a vocabulary of 4


@pytest.mark.parametrize(("target", "expected"), [(0, 0.5 - 0.3), (1, 0.0), (2, 0.0), (3, 0.15 - 0.05)])
def test_head_projection_hinge_by_hand(target, expected):
    # k = 2: the 2nd largest probability is 0.3, the 2nd smallest 0.15. Token 0 is in the top-2 (pushed
    # down to the 2nd), token 3 in the bottom-2 (pushed up), tokens 1 and 2 sit on the edges: no loss
    loss = head_projection_hinge(LENS, torch.tensor([target]), k=2)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_lens_entropy_by_hand():
    assert lens_entropy(LENS).item() == pytest.approx(-sum(p * math.log(p) for p in (0.5, 0.3, 0.15, 0.05)), rel=1e-5)
    assert lens_entropy(torch.log(torch.full((2, 3, 8), 1 / 8))).item() == pytest.approx(math.log(8), rel=1e-6)


def test_fact_erasure_is_the_mean_answer_probability(tiny):
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    batch = {"labels": torch.tensor([[IGNORE_INDEX, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, 0]])}

    def fixed(logits_to_keep, **_):  # the kept rows of fixed logits, as the LM head would give them
        return SimpleNamespace(logits=torch.cat([logits, logits])[logits_to_keep])

    loss = compose(MethodConfig(forget="fact_erasure"))(fixed, {"forget": batch})
    assert loss.item() == pytest.approx((0.25 * 0.1 + 0.1) / 2, rel=1e-5)  # p(row 0) = 0.25·0.1, p(row 1) = 0.1
    model, _, real = tiny
    expected = sequence_logprobs(model, real)[0].exp().mean()
    assert compose(MethodConfig(forget="fact_erasure"))(model, {"forget": real}).item() == pytest.approx(expected.item())


def test_lens_at_the_last_layer_is_the_models_own_prediction(tiny):
    """The defense reads the same lens the attack does: at the last layer it is the model's output."""
    model, _, batch = tiny
    perturb_adapter(model, 0.1)
    lens, targets = answer_lens(model, batch, [-1])
    logits = model(**model_inputs(model, batch)).logits[:, :-1]
    predicts = batch["labels"][:, 1:] != IGNORE_INDEX
    assert torch.allclose(lens[:, 0], torch.log_softmax(logits[predicts].float(), -1), atol=1e-4)
    assert torch.equal(targets, batch["labels"][:, 1:][predicts])
    reset_adapter(model)


@pytest.mark.parametrize("name", ["head_projection_defense", "max_entropy_defense"])
def test_a_few_steps_of_a_lens_defense_lower_its_loss(tiny, name):
    model, _, batch = tiny
    method = MethodConfig(forget=name, lens_layers=(-2, -1), lens_k=50)
    loss_fn = compose(method)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(trained, lr=0.5)
    losses = []
    for _ in range(4):
        optimiser.zero_grad()
        loss = loss_fn(model, {"forget": batch})
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    reset_adapter(model)
    assert losses[-1] < losses[0]


def test_defenses_are_registered_with_what_they_need():
    assert FORGET_OBJECTIVES["empty_response"].alternative == "idk"
    assert FORGET_OBJECTIVES["error_injection"].alternative == "wrong"
    assert {"fact_erasure", "head_projection_defense", "max_entropy_defense"} <= set(FORGET_OBJECTIVES)


def test_fact_labels_cover_only_the_facts_tokens(tiny):
    _, processor, _ = tiny
    example = TextExample("Where was Ada born?", "Ada was born in Turku, Finland.", fact="Turku, Finland")
    whole = encode_example(processor, example)
    fact_only = encode_example(processor, example, labels_on="fact")
    assert torch.equal(whole["input_ids"], fact_only["input_ids"])
    kept = fact_only["labels"][fact_only["labels"] != IGNORE_INDEX]
    assert processor.tokenizer.decode(kept).strip() == "Turku, Finland"
    assert (whole["labels"] != IGNORE_INDEX).sum() > len(kept)
    no_fact = encode_example(processor, TextExample("Q?", "I don't know."), labels_on="fact")
    assert (no_fact["labels"] != IGNORE_INDEX).sum() > 0  # nothing named: the whole answer
    assert collate([whole, fact_only], processor.tokenizer.pad_token_id)["labels"].shape[0] == 2


def test_error_injection_states_another_persons_fact_and_prefixes_copy_every_prompt():
    examples = [TextExample("Where was Ada born?", "Ada was born in Turku.", fact="Turku"),
                TextExample("Q?", "No fact here.")]
    pools = {"birthplace": ["Lima", "Oslo", "Turku"]}
    wrong = wrong_fact_examples(examples, seed=3, pools=pools)
    assert wrong == wrong_fact_examples(examples, seed=3, pools=pools)
    assert wrong[0].fact in {"Lima", "Oslo"} and wrong[0].answer == f"Ada was born in {wrong[0].fact}."
    assert wrong[1] == examples[1]
    copies = with_prompt_prefixes(examples, ("A new study suggests. ", "The following is a. "))
    assert len(copies) == 6 and copies[:2] == examples
    assert copies[2].user_text == "A new study suggests. Where was Ada born?" and copies[2].fact == "Turku"


def test_alternative_answers_and_prefixed_copies_keep_a_demonstration():
    from mmunlearn.training.examples import refusal_examples

    demonstration = (("Where was Bo born?", None, "Bo was born in Lima."),)
    example = TextExample("Where was Ada born?", "Ada was born in Turku.", fact="Turku", context=demonstration)
    pools = {"birthplace": ["Lima", "Oslo", "Turku"]}
    for alternative in (refusal_examples([example]), wrong_fact_examples([example], pools=pools),
                        with_prompt_prefixes([example], ("A new study suggests. ",))):
        assert all(e.context == demonstration for e in alternative)
