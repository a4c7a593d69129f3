"""White-box extraction attacks: read the answer out of hidden states with the logit lens.

Logit lens (nostalgebraist 2020; UnLOK-VQA, Patil et al.): the hidden state a decoder layer writes at
the last prompt position, put through the model's final norm and LM head, is a distribution over the
vocabulary. From each chosen layer's lens the attacks build a candidate set of tokens:

- Head Projection (HP): the top-k tokens of every chosen layer;
- Probability Delta (PD): the top-k and bottom-k tokens of the change in probability between
  consecutive chosen layers (an answer being written in — or being suppressed — moves most);
- Probability Delta² (PD²): the same on the second difference across consecutive triples of layers.

The attack succeeds when the answer is among the candidates; the budget B is the candidate set's size
(reported per question). The prompt is the training question followed by the trained answer up to the
fact ("This person was born in"), so the lens is read where the fact would be said next.

Multi-token answers. HP, PD and PD² check the fact's first token, as the original does. The fourth
attack, ``head_projection_each``, checks every token of the fact, each at the position where it is
predicted (the prompt followed by the fact, teacher-forced): every token must be in that position's
HP candidates; its budget is the sum over positions. Reading all tokens at the first position was
measured far too strict (vanilla tiny default, HP k=5: 0.95 first token vs 0.21 all at one position),
since later tokens are only predicted once the first is said.

The lens itself (methods/lens.py) is shared with the lens defenses, so attack and defense read the
same distribution; it finds the decoder through standard accessors, never by model family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmunlearn.journal import JournalScope, resumed
from mmunlearn.methods.lens import captured_layer_outputs, lens_logprobs, resolve_layers

ATTACKS = ("head_projection", "probability_delta", "probability_delta2")  # candidate sets of one lens
EACH_TOKEN_ATTACK = "head_projection_each"  # every fact token at its own position
WHITEBOX_ATTACKS = (*ATTACKS, EACH_TOKEN_ATTACK)
LAYERS_NEEDED = {"head_projection": 1, "probability_delta": 2, "probability_delta2": 3}


@torch.no_grad()
def logit_lens(model, batch: dict, layers: Sequence[int], last: int | None = None) -> torch.Tensor:
    """Log-probabilities of each chosen layer's state under the final norm and LM head.

    ``last=None``: [batch, len(layers), vocab] at the last position (the prompt's end; prompts must be
    left-padded). ``last=n``: [batch, n, len(layers), vocab] at each of the last n positions.
    """
    with captured_layer_outputs(model, layers, last or 1) as captured:
        model(**batch, logits_to_keep=1, use_cache=False)  # only the captured states are read
    stacked = torch.stack([captured[number] for number in layers], dim=2)  # [batch, positions, layers, hidden]
    lens = lens_logprobs(model, stacked)
    return lens[:, -1] if last is None else lens


def candidates(lens_logprobs: torch.Tensor, attack: str, k: int) -> set[int]:
    """The candidate token ids one attack reads off one question's lens [layers, vocab]."""
    probs = lens_logprobs.exp()
    needed = LAYERS_NEEDED.get(attack, 1)
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


def extracted(lens_logprobs: torch.Tensor, answer_ids: Sequence[int], attack: str, k: int) -> Extraction:
    """Does ``attack`` recover the answer's first token from one position's lens [layers, vocab]?"""
    if not answer_ids:
        raise ValueError("empty answer")
    found = candidates(lens_logprobs, attack, k)
    return Extraction(answer_ids[0] in found, len(found))


def extracted_each(lens_by_position: torch.Tensor, answer_ids: Sequence[int], k: int) -> Extraction:
    """Is every answer token among the HP candidates where it is predicted? ``lens_by_position``:
    [len(answer_ids), layers, vocab], row i read just before answer token i (teacher-forced)."""
    if not answer_ids or len(answer_ids) != lens_by_position.shape[0]:
        raise ValueError(f"need one lens position per answer token, got {lens_by_position.shape[0]} for {len(answer_ids)}")
    found = [candidates(lens_by_position[i], "head_projection", k) for i in range(len(answer_ids))]
    return Extraction(all(token in f for token, f in zip(answer_ids, found)), sum(len(f) for f in found))


@dataclass(frozen=True)
class LensQuery:
    """A fact to read out: the prompt + answer prefix + the fact's tokens but its last (teacher-forced)."""

    encoded: dict
    fact_ids: list[int]


def lens_query(processor, user_text: str, image_png: bytes | None, answer: str, value: str,
               system_prompt: str | None = None) -> LensQuery | None:
    from mmunlearn.models.prompts import encode_prompt, reply_separator, with_tokens
    from mmunlearn.training.data import fact_tokens

    tokens = fact_tokens(processor.tokenizer, answer, value, reply_separator(processor))
    if tokens is None:
        return None
    before, fact = tokens
    encoded = encode_prompt(processor, user_text, image_png, system_prompt)
    return LensQuery(with_tokens(encoded, torch.tensor(before + fact[:-1], dtype=torch.long)), fact)


def whitebox_extractions(model, processor, queries: Sequence[LensQuery], layers: Sequence[int], k: int,
                         batch_size: int = 32, desc: str = "white-box",
                         journal: JournalScope | None = None) -> list[dict[str, Extraction]]:
    """Every white-box attack on every query, batched: {attack: Extraction} per query. An attack that
    needs more layers than chosen (PD: 2, PD²: 3) is left out. ``journal``: batches an interrupted run
    finished are read back, not run again."""
    from tqdm import tqdm

    from mmunlearn.training.data import collate, model_inputs, on_device

    chosen = resolve_layers(model, layers)
    attacks = [attack for attack in ATTACKS if LAYERS_NEEDED[attack] <= len(chosen)]
    device = next(model.parameters()).device
    pad = processor.tokenizer.pad_token_id

    def run_batch(chunk: Sequence[LensQuery]) -> list[dict[str, list]]:
        batch = on_device(model_inputs(model, collate([q.encoded for q in chunk], pad)), device)
        lens = logit_lens(model, batch, chosen, last=max(len(q.fact_ids) for q in chunk)).cpu()
        rows = []
        for row, query in enumerate(chunk):
            by_position = lens[row, lens.shape[1] - len(query.fact_ids):]  # left-padded: the row's last positions
            found = {attack: extracted(by_position[0], query.fact_ids, attack, k) for attack in attacks}
            found[EACH_TOKEN_ATTACK] = extracted_each(by_position, query.fact_ids, k)
            rows.append({attack: [extraction.success, extraction.budget] for attack, extraction in found.items()})
        return rows  # JSON-ready: what the journal keeps

    results: list[dict[str, Extraction]] = []
    starts = range(0, len(queries), batch_size)
    for number, start in enumerate(tqdm(starts, desc=desc, unit="batch", leave=False)):
        rows = resumed(journal, number, lambda: run_batch(queries[start:start + batch_size]))
        results += [{attack: Extraction(*pair) for attack, pair in row.items()} for row in rows]
    return results
