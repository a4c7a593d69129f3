"""Logit-lens attacks on models whose hidden states and LM head are set by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmunlearn.attacks.whitebox import (
    Extraction,
    candidates,
    extracted,
    extracted_each,
    logit_lens,
    resolve_layers,
)

VOCAB = 8


class PlantedLayer(nn.Module):
    """A decoder layer that writes a planted vector at every position."""

    def __init__(self, vector: list[float]):
        super().__init__()
        self.register_buffer("vector", torch.tensor(vector))

    def forward(self, hidden):
        return (hidden * 0 + self.vector,)  # tuple, as HF decoder layers may return


class PlantedDecoder(nn.Module):
    def __init__(self, vectors: list[list[float]]):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, VOCAB)
        self.layers = nn.ModuleList(PlantedLayer(v) for v in vectors)
        self.norm = nn.Identity()

    def forward(self, input_ids):
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden)[0]
        return self.norm(hidden)


class PlantedModel(nn.Module):
    """Hidden state of layer i = vectors[i]; LM head = identity, so logits = the planted vector."""

    def __init__(self, vectors: list[list[float]]):
        super().__init__()
        self.decoder = PlantedDecoder(vectors)
        self.head = nn.Linear(VOCAB, VOCAB, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(VOCAB))

    def get_decoder(self):
        return self.decoder

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, use_cache=None):  # as HF models take them
        return self.head(self.decoder(input_ids))


def one_hot(token: int, strength: float = 8.0, base: list[float] | None = None) -> list[float]:
    vector = list(base or [0.1 * i for i in range(VOCAB)])  # a tie-free background
    vector[token] += strength
    return vector


ANSWER = 5
# layer 1: background (token 7 on top), layer 2: the answer planted, layer 3: token 2 planted over it
MODEL = PlantedModel([one_hot(7, 0.0), one_hot(ANSWER), one_hot(2, 20.0, one_hot(ANSWER))])
BATCH = {"input_ids": torch.tensor([[1, 2, 3]])}


def test_lens_is_the_hand_computed_softmax_of_each_layers_state():
    lens = logit_lens(MODEL, BATCH, [1, 2, 3])[0]
    vector = torch.tensor(one_hot(ANSWER))
    expected = vector - torch.logsumexp(vector, dim=0)
    assert torch.allclose(lens[1], expected, atol=1e-6)
    assert lens[1].argmax().item() == ANSWER and lens[2].argmax().item() == 2 and lens[0].argmax().item() == 7
    assert math.isclose(lens[1].exp().sum().item(), 1.0, rel_tol=1e-6)


def test_head_projection_finds_the_planted_answer_at_its_layer_only():
    assert extracted(logit_lens(MODEL, BATCH, [2])[0], [ANSWER], "head_projection", k=1).success
    assert not extracted(logit_lens(MODEL, BATCH, [1])[0], [ANSWER], "head_projection", k=1).success
    # layer 3 still carries the answer second: top-1 misses it, top-2 finds it
    lens3 = logit_lens(MODEL, BATCH, [3])[0]
    assert not extracted(lens3, [ANSWER], "head_projection", k=1).success
    assert extracted(lens3, [ANSWER], "head_projection", k=2).success
    result = extracted(logit_lens(MODEL, BATCH, [1, 2, 3])[0], [ANSWER], "head_projection", k=1)
    assert result.success and result.budget == 3  # {7, 5, 2}


def test_probability_delta_sees_the_answer_written_in_and_pushed_out():
    lens = logit_lens(MODEL, BATCH, [1, 2])[0]
    assert candidates(lens, "probability_delta", k=1) == {ANSWER, 7}  # 5 rises most, 7 falls most
    # between layers 2 and 3 the answer is suppressed: it is the bottom of the delta
    assert ANSWER in candidates(logit_lens(MODEL, BATCH, [2, 3])[0], "probability_delta", k=1)
    # nothing changes between two identical layers' worth of background: the answer is not there
    flat = PlantedModel([one_hot(7, 0.0), one_hot(7, 0.5)])
    assert ANSWER not in candidates(logit_lens(flat, BATCH, [1, 2])[0], "probability_delta", k=1)


def test_second_difference_and_layer_count_checks():
    lens = logit_lens(MODEL, BATCH, [1, 2, 3])[0]
    found = candidates(lens, "probability_delta2", k=1)
    assert ANSWER in found and len(found) == 2  # the answer's rise-then-fall is the largest curvature
    with pytest.raises(ValueError, match="at least 3"):
        candidates(lens[:2], "probability_delta2", k=1)
    with pytest.raises(ValueError, match="layers 1..3"):
        logit_lens(MODEL, BATCH, [4])


def test_first_token_attacks_and_the_each_token_attack():
    lens = logit_lens(MODEL, BATCH, [2])[0]  # top-2 of layer 2: {5, 7}
    assert extracted(lens, [ANSWER, 3], "head_projection", k=2).success
    assert not extracted(lens, [3, ANSWER], "head_projection", k=2).success
    # each token at its own position: position 0 plants 5 on top, position 1 plants 3
    by_position = torch.stack([torch.log_softmax(torch.tensor([one_hot(ANSWER)]), -1),
                               torch.log_softmax(torch.tensor([one_hot(3)]), -1)])
    assert extracted_each(by_position, [ANSWER, 3], k=1) == Extraction(True, 2)
    assert not extracted_each(by_position, [3, ANSWER], k=1).success
    assert not extracted_each(by_position, [ANSWER, 6], k=1).success
    with pytest.raises(ValueError, match="one lens position per answer token"):
        extracted_each(by_position, [ANSWER], k=1)


def test_lens_at_the_last_positions_and_layers_counted_from_the_top():
    lens = logit_lens(MODEL, BATCH, resolve_layers(MODEL, [-2, -1]), last=2)
    assert lens.shape == (1, 2, 2, VOCAB)
    assert torch.allclose(lens[0, 1], logit_lens(MODEL, BATCH, [2, 3])[0])  # last position = the default read
    with pytest.raises(ValueError, match="layers 1..3"):
        resolve_layers(MODEL, [-4])


def test_on_a_real_llama_the_last_layers_lens_is_the_models_own_prediction():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    batch = {"input_ids": torch.tensor([[1, 5, 9, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    lens = logit_lens(model, batch, [1, 3])[0]
    with torch.no_grad():
        final = torch.log_softmax(model(**batch).logits[0, -1].float(), dim=-1)
    assert torch.allclose(lens[1], final, atol=1e-5)
    assert not torch.allclose(lens[0], final, atol=1e-3)  # an earlier layer reads differently
