"""White-box extraction attacks: read the answer out of hidden states with the logit lens.

Logit lens (nostalgebraist 2020; UnLOK-VQA, Patil et al.): the hidden state a decoder layer writes at
the last prompt position, put through the model's final norm and LM head, is a distribution over the
vocabulary. From each chosen layer's lens the attacks build a candidate set of tokens:

- Head Projection (HP): the top-k tokens of every chosen layer;
- Probability Delta (PD): the top-k and bottom-k tokens of the change in probability between
  consecutive chosen layers (an answer being written in — or being suppressed — moves most);
- Probability Delta² (PD²): the same on the second difference across consecutive triples of layers.

The attack succeeds when the answer is among the candidates; the budget B is the candidate set's size
(reported per question). Multi-token answers: ``first`` (default, as the original) checks the answer's
first token; ``all`` needs every answer token in the one position's candidate set — measured far too
strict for a lens read at a single position (vanilla tiny default, forget facts, HP k=5: 0.95 first vs
0.21 all, since later tokens are only predicted after the first); the planned multi-token test reads
each token's lens at its own teacher-forced position.

Model-agnostic: the decoder's layers, final norm and output embedding are found through the standard
``get_decoder()`` / ``get_output_embeddings()`` accessors, never by model family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

ATTACKS = ("head_projection", "probability_delta", "probability_delta2")


def _decoder_parts(model):
    decoder = model.get_decoder()
    norm = getattr(decoder, "norm", None) or getattr(decoder, "final_layernorm", None)
    if norm is None or not hasattr(decoder, "layers"):
        raise ValueError(f"{type(decoder).__name__}: no decoder layers / final norm to read a logit lens from")
    return decoder.layers, norm, model.get_output_embeddings()


@contextlib.contextmanager
def _captured_layer_outputs(layers, chosen: Sequence[int]):
    """Forward hooks that keep the last-position output of each chosen layer (1-based layer numbers)."""
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for number in chosen:
        if not 1 <= number <= len(layers):
            raise ValueError(f"layer {number}: the model has layers 1..{len(layers)}")

        def keep(_module, _inputs, output, number=number):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[number] = hidden[:, -1, :].detach()

        hooks.append(layers[number - 1].register_forward_hook(keep))
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def logit_lens(model, batch: dict, layers: Sequence[int]) -> torch.Tensor:
    """Log-probabilities [batch, len(layers), vocab] of each chosen layer's last-position state under
    the final norm and LM head. Prompts must be left-padded (the last position is the prompt's end)."""
    decoder_layers, norm, head = _decoder_parts(model)
    with _captured_layer_outputs(decoder_layers, layers) as captured:
        model(**batch)
    stacked = torch.stack([captured[number] for number in layers], dim=1)
    return torch.log_softmax(head(norm(stacked)).float(), dim=-1)


def candidates(lens_logprobs: torch.Tensor, attack: str, k: int) -> set[int]:
    """The candidate token ids one attack reads off one question's lens [layers, vocab]."""
    probs = lens_logprobs.exp()
    needed = {"head_projection": 1, "probability_delta": 2, "probability_delta2": 3}.get(attack, 1)
    if probs.shape[0] < needed:
        raise ValueError(f"{attack} needs at least {needed} chosen layers, got {probs.shape[0]}")
    if attack == "head_projection":
        rows = [probs]
    elif attack == "probability_delta":
        rows = [probs[1:] - probs[:-1]]
    elif attack == "probability_delta2":
        rows = [probs[2:] - 2 * probs[1:-1] + probs[:-2]]
    else:
        raise ValueError(f"unknown attack {attack!r} (have {ATTACKS})")
    found: set[int] = set()
    for row in rows[0]:
        found.update(row.topk(k).indices.tolist())
        if attack != "head_projection":  # a delta also shows an answer pushed down
            found.update((-row).topk(k).indices.tolist())
    return found


@dataclass(frozen=True)
class Extraction:
    success: bool
    budget: int  # candidate set size B


def extracted(lens_logprobs: torch.Tensor, answer_ids: Sequence[int], attack: str, k: int,
              answer_tokens: str = "first") -> Extraction:
    """Does ``attack`` recover the answer (its ``first`` token, or ``all`` its tokens) within its candidates?"""
    if not answer_ids:
        raise ValueError("empty answer")
    if answer_tokens not in ("first", "all"):
        raise ValueError(f"answer_tokens {answer_tokens!r}: expected 'first' or 'all'")
    found = candidates(lens_logprobs, attack, k)
    wanted = answer_ids[:1] if answer_tokens == "first" else answer_ids
    return Extraction(all(token in found for token in wanted), len(found))
