"""Shared prompt prefixes: the questions about one face run the face once.

Every question asked with the same face starts with the same tokens: the chat template's opening and
the image placeholders. That prefix — the vision tower and the image tokens' keys and values — is
computed once per face and batch, and its KV cache is repeated for each of the face's questions; only
the rest of each prompt (the question) runs per row. On LLaVA-1.5 the 576 image tokens are most of a
prompt's ~650; on the tiny default a face is 16 tokens of a 47–64-token prompt.

The plan is read off the token ids (the longest common prefix of the face's prompts, which must hold
every image token), never off the model family. A model whose positions are not plain token counts
(e.g. Qwen2-VL's multimodal rotary positions) would compute a shared row differently from a lone one,
so `prefix_sharing_is_exact` compares one prompt both ways before a model's questions are shared and
the engine falls back to whole prompts when they differ.

Several samples of one prompt (a black-box attack draws its ``attack.budget`` replies over few prompts) share
all of it but its last token: `repeated_prompts` runs that part once per prompt and repeats its cache,
where repeating the rows ran it once per sample (two thirds of a sampled attack's prefill, at 3 samples).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch

from mmunlearn.models.prompts import IMAGE_INPUTS, TOKEN_EXTRAS
from mmunlearn.training.data import collate, model_inputs, on_device

log = logging.getLogger(__name__)

# Largest |log p| difference (any of the reference's 10 likeliest next tokens) still counted as the
# same computation: float32 reorderings give ~1e-5, bfloat16 ~1e-2; wrong positions give units.
EXACTNESS_TOLERANCE = 0.1


@dataclass(frozen=True)
class PrefixBatch:
    """Rows that share prefixes: ``prefix_of_row[r]`` indexes ``prefixes``; each row's own tokens are
    ``encoded[rows[r]]["input_ids"][prefix_length:]``."""

    rows: list[int]
    prefixes: list[int]  # for each prefix, one encoded prompt that carries it (and its image)
    prefix_of_row: list[int]
    prefix_length: int


def _common_prefix_length(sequences: list[torch.Tensor]) -> int:
    shortest = min(len(s) for s in sequences)
    stacked = torch.stack([s[:shortest] for s in sequences])
    differs = (stacked != stacked[0]).any(dim=0).nonzero()
    return int(differs[0]) if len(differs) else shortest


def image_token_id(model) -> int | None:
    """The placeholder id the model's config names for image tokens (None: a text-only model)."""
    config = model.config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def plan_prefix_batches(encoded: list[dict], faces: list[bytes | None], image_token: int | None,
                        batch_size: int, by_length: bool = False) -> tuple[list[PrefixBatch], list[int]]:
    """(batches of rows that share a face's prefix, indices to run as whole prompts).

    A face's prompts share when there are at least two of them and their common prefix holds every
    image token of each; each row keeps at least one token of its own (its last-token logits).
    Rows keep each face's prompts together (each prefix runs once), or with ``by_length`` go in order
    of length, as whole prompts are bucketed: for generation, where a batch runs until its longest
    reply ends and similar prompts tend to get similar replies; a face split across batches then runs
    once in each.
    """
    by_face: dict[bytes, list[int]] = {}
    for index, face in enumerate(faces):
        if face is not None:
            by_face.setdefault(face, []).append(index)
    alone = [i for i, face in enumerate(faces) if face is None]
    shareable: dict[int, list[int]] = {}  # prefix length → prompts
    for indices in by_face.values():
        sequences = [encoded[i]["input_ids"] for i in indices]
        length = min(_common_prefix_length(sequences), min(len(s) for s in sequences) - 1)
        holds_image = image_token is not None and all(not (s[length:] == image_token).any() for s in sequences)
        if len(indices) < 2 or length < 1 or not holds_image:
            alone += indices
        else:
            shareable.setdefault(length, []).extend(indices)
    batches = []
    for length, indices in sorted(shareable.items()):
        if by_length:
            indices.sort(key=lambda i: (len(encoded[i]["input_ids"]), i))
        for start in range(0, len(indices), batch_size):
            rows = indices[start:start + batch_size]
            carrier: dict[bytes, int] = {}  # face → its first row, which carries the prefix
            for index in rows:
                carrier.setdefault(faces[index], index)
            slot = {face: number for number, face in enumerate(carrier)}
            batches.append(PrefixBatch(rows, list(carrier.values()), [slot[faces[i]] for i in rows], length))
    return batches, sorted(alone)


def prefill(model, encoded: list[dict], batch: PrefixBatch, pad_token_id: int) -> tuple[dict, torch.Tensor]:
    """Run each prefix once. Returns the model inputs for the rows' own tokens (left-padded) on top of
    the repeated prefix cache — input_ids, attention_mask (prefix + own tokens), position_ids,
    cache_position, past_key_values — and each row's prefix ids (generation wants the whole prompt)."""
    device = next(model.parameters()).device
    length = batch.prefix_length
    prefixes = collate([_cut(encoded[i], None, length) for i in batch.prefixes], pad_token_id)
    prefix_ids = prefixes["input_ids"].to(device)
    prefix_inputs = on_device(model_inputs(model, prefixes, positions=False), device)
    cache = model(**prefix_inputs, use_cache=True, logits_to_keep=1).past_key_values
    row_prefix = torch.tensor(batch.prefix_of_row, device=device)
    cache.batch_select_indices(row_prefix)
    own = collate([_cut(encoded[i], length, None) for i in batch.rows], pad_token_id)
    rows, width = own["input_ids"].shape
    attention_mask = torch.cat([torch.ones((rows, length), dtype=torch.long), own["attention_mask"]], dim=1)
    inputs = {**on_device(model_inputs(model, own), device),
              "attention_mask": attention_mask.to(device), "cache_position": torch.arange(length, length + width, device=device),
              "past_key_values": cache}
    if "position_ids" in inputs:
        inputs["position_ids"] = length + inputs["position_ids"]
    return inputs, prefix_ids[row_prefix]


def _cut(encoded: dict, start: int | None, stop: int | None) -> dict:
    """The tokens [start:stop] of an encoded prompt (with their per-token ids); the prefix keeps the images."""
    cut = {"input_ids": encoded["input_ids"][start:stop]}
    if TOKEN_EXTRAS in encoded:
        cut[TOKEN_EXTRAS] = {k: v[start:stop] for k, v in encoded[TOKEN_EXTRAS].items()}
    if start is None and IMAGE_INPUTS in encoded:
        cut[IMAGE_INPUTS] = encoded[IMAGE_INPUTS]
    return cut


def repeated_prompts(model, encoded: list[dict], rows: list[int], pad_token_id: int, repeats: int) -> dict:
    """generate() inputs for each of ``rows``'s whole prompts ``repeats`` times in a row: every prompt but
    its last token is run once (left-padded, positions counting real tokens) and its cache repeated."""
    device = next(model.parameters()).device
    batch = on_device(model_inputs(model, collate([encoded[i] for i in rows], pad_token_id)), device)
    per_token = {"input_ids", "attention_mask", "position_ids",
                 *(key for i in rows for key in encoded[i].get(TOKEN_EXTRAS, {}))}
    head = {k: v[:, :-1] if k in per_token else v for k, v in batch.items()}
    cache = model(**head, use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(repeats)
    return {"input_ids": batch["input_ids"].repeat_interleave(repeats, dim=0),
            "attention_mask": batch["attention_mask"].repeat_interleave(repeats, dim=0), "past_key_values": cache}


def first_step(model, inputs: dict) -> dict:
    """The model inputs of generate()'s first step on ``repeated_prompts``'s output: each row's last token
    on its cache, at the position that counts the row's real tokens."""
    mask = inputs["attention_mask"]
    step = {"input_ids": inputs["input_ids"][:, -1:], "attention_mask": mask,
            "position_ids": mask.cumsum(-1)[:, -1:] - 1, "past_key_values": inputs["past_key_values"]}
    return model_inputs(model, step)


def last_tokens_are_text(model, encoded: list[dict]) -> bool:
    """Whether every prompt ends on a text token (a prompt's repeated part must hold all its image tokens)."""
    image_token = image_token_id(model)
    return image_token is None or all(int(e["input_ids"][-1]) != image_token for e in encoded)


_EXACTNESS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {way of sharing: exact?}


@torch.no_grad()
def prefix_sharing_is_exact(model, encoded: list[dict], batch: PrefixBatch, pad_token_id: int) -> bool:
    """Whether a shared row's next-token log-probabilities equal the whole prompt's (checked once per model)."""
    probe = PrefixBatch(batch.rows[:1], [batch.prefixes[batch.prefix_of_row[0]]], [0], batch.prefix_length)

    def shared():
        inputs, _ = prefill(model, encoded, probe, pad_token_id)
        return model(**inputs, logits_to_keep=1).logits[0, -1]

    return _same_as_whole(model, "shared image prefixes", shared, encoded[probe.rows[0]], pad_token_id)


@torch.no_grad()
def repeated_prompts_are_exact(model, encoded: list[dict], row: int, pad_token_id: int) -> bool:
    """Whether a prompt continued from its own repeated cache gives the whole prompt's next-token
    log-probabilities (checked once per model)."""
    def continued():  # the second copy's last token on top of the repeated cache, as generate() runs it
        inputs = repeated_prompts(model, encoded, [row], pad_token_id, repeats=2)
        return model(**first_step(model, inputs), logits_to_keep=1).logits[1, -1]

    return _same_as_whole(model, "repeated prompt caches", continued, encoded[row], pad_token_id)


def _same_as_whole(model, way: str, next_token_logits, whole_prompt: dict, pad_token_id: int) -> bool:
    verdicts = _EXACTNESS.setdefault(model, {})
    if way in verdicts:
        return verdicts[way]
    device = next(model.parameters()).device
    try:
        shared = torch.log_softmax(next_token_logits().float(), dim=-1)
    except (AttributeError, TypeError, ValueError, RuntimeError) as error:  # no cache, or one it cannot extend
        log.warning("this model does not take %s (%s): running whole prompts", way, error)
        verdicts[way] = False
        return False
    whole_inputs = on_device(model_inputs(model, collate([whole_prompt], pad_token_id)), device)
    whole = torch.log_softmax(model(**whole_inputs, logits_to_keep=1).logits[0, -1].float(), dim=-1)
    likeliest = whole.topk(min(10, whole.numel())).indices
    difference = float((shared[likeliest] - whole[likeliest]).abs().max())
    verdicts[way] = difference <= EXACTNESS_TOLERANCE
    if not verdicts[way]:
        log.warning("%s change this model's outputs (log-prob difference %.3g): running whole prompts", way, difference)
    return verdicts[way]
