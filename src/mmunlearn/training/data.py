"""Examples for training: the prompt is context, only the answer is learned (labels -100 elsewhere).

Answer-only masking is what the paper's loss asks for and what made the tiny model learn the profiles
(shared/research/tiny_model_learning.md); the official code trains on the prompt too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmunlearn.models.prompts import (
    IMAGE_INPUTS,
    TOKEN_EXTRAS,
    encode_conversation,
    encode_prompt,
    reply_separator,
    with_tokens,
)

IGNORE_INDEX = -100
CONVERSATION = "conversation"  # marks an encoded multi-turn example (its image inputs hold each face it shows)
NOT_MODEL_INPUTS = ("labels", "reference_logprob")  # batch entries the objectives read, not the forward pass


@dataclass(frozen=True)
class TextExample:
    """One (prompt, answer) pair, with the face image when the question shows it.

    ``prompt_targets``: phrases inside the prompt that are trained on too (every occurrence), e.g. the
    "(right)"/"(wrong)" marks of a checked multiple-choice drill. ``fact``: the private fact the answer
    states ("Turku, Finland" in "This person was born in Turku, Finland."), for objectives that act on
    the fact's tokens alone. ``context``: earlier turns of the conversation, (user text, face or None,
    reply or None) each, shown before the prompt: not trained on (a few-shot prompt), or, with
    ``train_context``, their replies trained as the answer is (examples packed into one conversation).
    """

    user_text: str
    answer: str
    image_png: bytes | None = None
    prompt_targets: tuple[str, ...] = ()
    fact: str = ""
    context: tuple[tuple[str, bytes | None, str | None], ...] = ()
    train_context: bool = False


def _occurrences(sequence: list[int], phrase: list[int]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(sequence) - n + 1) if sequence[i:i + n] == phrase]


def fact_tokens(tokenizer, answer: str, fact: str, separator: str = " ") -> tuple[list[int], list[int]] | None:
    """(answer tokens before the fact, the fact's tokens), tokenised as an answer is for training.

    Found by tokenising the answer cut before and after the fact and checking each is a prefix of the
    whole, so it holds for any tokenizer; None when a token straddles the fact's edge.
    """
    def ids(text: str) -> list[int]:
        return tokenizer(separator + text, add_special_tokens=False)["input_ids"] if text else []

    start = answer.index(fact)
    whole, before, through = ids(answer), ids(answer[:start].rstrip()), ids(answer[:start + len(fact)])
    if whole[:len(before)] != before or whole[:len(through)] != through or len(through) <= len(before):
        return None
    return before, through[len(before):]


def encode_example(processor, example: TextExample, system_prompt: str | None = None,
                   labels_on: str = "answer", prompt: dict | None = None,
                   end_label: bool = True) -> dict[str, torch.Tensor]:
    """Token ids of prompt + answer + EOS, labels masked to the answer (+ EOS, + prompt targets), pixels if any.

    ``labels_on="fact"``: labels on the fact's tokens only (the rest of the answer is context), for an
    example that names its fact; otherwise on the whole answer. ``end_label=False``: the EOS after the
    answer is input, not a label. ``prompt``: the example's prompt already encoded (``encode_prompts``,
    many at once).
    """
    if prompt is not None:
        encoded = prompt  # not changed here: with_tokens below returns a new dict
    elif example.context:  # image inputs of every face shown, in order
        encoded = encode_conversation(processor, [*example.context, (example.user_text, example.image_png, None)],
                                      system_prompt)
        encoded[CONVERSATION] = True
    else:
        encoded = encode_prompt(processor, example.user_text, example.image_png, system_prompt)
    tokenizer = processor.tokenizer
    prompt_ids = encoded["input_ids"]
    # An example without an answer (a checked drill's marks alone) trains its prompt targets only.
    separator = reply_separator(processor)
    answer_ids = torch.tensor(tokenizer(separator + example.answer, add_special_tokens=False)["input_ids"]
                              + [tokenizer.eos_token_id] if example.answer else [], dtype=prompt_ids.dtype)
    answer_labels = answer_ids.clone()
    if not end_label and example.answer:
        answer_labels[-1] = IGNORE_INDEX
    span = fact_tokens(tokenizer, example.answer, example.fact, separator) if labels_on == "fact" and example.fact in example.answer and example.fact else None
    if span is not None:
        before, fact = span
        answer_labels[:] = IGNORE_INDEX
        answer_labels[len(before):len(before) + len(fact)] = answer_ids[len(before):len(before) + len(fact)]
    prompt_labels = torch.full_like(prompt_ids, IGNORE_INDEX)
    ids = prompt_ids.tolist()
    for phrase in example.prompt_targets:
        phrase_ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
        starts = _occurrences(ids, phrase_ids)
        if not starts:
            raise ValueError(f"prompt target {phrase!r} does not tokenize the same inside the prompt")
        for start in starts:
            prompt_labels[start:start + len(phrase_ids)] = prompt_ids[start:start + len(phrase_ids)]
    if example.train_context:
        for start, reply_ids in _context_replies(processor, example, system_prompt, ids):
            prompt_labels[start:start + len(reply_ids)] = torch.tensor(reply_ids, dtype=prompt_ids.dtype)
    encoded = with_tokens(encoded, answer_ids)
    encoded["labels"] = torch.cat([prompt_labels, answer_labels])
    return encoded


def _context_replies(processor, example: TextExample, system_prompt: str | None,
                     ids: list[int]) -> list[tuple[int, list[int]]]:
    """(position, token ids) of each context reply (+ the end-of-sequence token the chat template puts
    after it) inside the conversation's ``ids``. A reply starts where the conversation cut open at its
    turn ends; its tokens are read off the whole conversation and checked against the reply tokenised
    alone (with or without a leading space, as templates differ), so any chat template either labels
    exactly the reply or fails here."""
    tokenizer = processor.tokenizer
    spans = []
    for turn, (text, image_png, reply) in enumerate(example.context):
        opened = encode_conversation(processor, [*example.context[:turn], (text, image_png, None)], system_prompt)
        start = len(opened["input_ids"])
        if ids[:start] != opened["input_ids"].tolist():
            raise ValueError(f"context turn {turn}: the chat template renders an open turn differently "
                             "from the same turn answered, so its reply cannot be located")
        for candidate in (" " + reply, reply):
            reply_ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
            if ids[start:start + len(reply_ids)] == reply_ids:
                break
        else:
            raise ValueError(f"context turn {turn}: reply {reply!r} does not tokenize the same inside the conversation")
        end = start + len(reply_ids)
        if end < len(ids) and ids[end] == tokenizer.eos_token_id:
            reply_ids = reply_ids + [tokenizer.eos_token_id]
        spans.append((start, reply_ids))
    return spans


def collate(examples: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a batch (as generation does); the image inputs of the examples that show any, in order.

    Position ids count real tokens only, so a padded row is computed exactly as it would be alone.
    Other per-token ids (``TOKEN_EXTRAS``) pad with 0; each image input is joined along its first axis
    (images, or a flat run of patches), zero-padded where faces differ in count (e.g. one prompt's two).
    """
    length = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), length), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), length), dtype=torch.long),
    }
    if "labels" in examples[0]:
        batch["labels"] = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    extras = sorted({key for e in examples for key in e.get(TOKEN_EXTRAS, {})})
    for key in extras:
        batch[key] = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        batch["input_ids"][row, length - n:] = example["input_ids"]
        batch["attention_mask"][row, length - n:] = 1
        if "labels" in batch:
            batch["labels"][row, length - n:] = example["labels"]
        for key, ids in example.get(TOKEN_EXTRAS, {}).items():
            batch[key][row, length - n:] = ids
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    batch.update(_collate_images(examples))
    if "reference_logprob" in examples[0]:  # precomputed by methods that compare with a reference model
        batch["reference_logprob"] = torch.stack([e["reference_logprob"] for e in examples])
    return batch


def _collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """The image inputs of ``examples`` (those that show a face), joined in order."""
    shown = [e[IMAGE_INPUTS] for e in examples if IMAGE_INPUTS in e]
    return {key: _joined([inputs[key] for inputs in shown]) for key in (shown[0] if shown else {})}


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    widest = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors))]
    if any(list(t.shape[1:]) != widest for t in tensors):
        tensors = [torch.nn.functional.pad(t, [p for size, full in zip(reversed(t.shape[1:]), reversed(widest))
                                               for p in (0, full - size)]) for t in tensors]
    return torch.cat(tensors)


def on_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """``batch`` with every tensor moved to ``device`` (the model's: evaluation may run on a GPU)."""
    return {key: value.to(device) for key, value in batch.items()}


def model_inputs(model, batch: dict, positions: bool = True) -> dict:
    """The entries of ``batch`` the model's forward pass takes. ``positions=False`` leaves out the token
    counts (generate() and an unpadded prefix count them themselves); so does a model that derives
    positions from its inputs (multimodal rotary positions: ``derives_positions``)."""
    from mmunlearn.models.loading import derives_positions

    positions = positions and not derives_positions(model)
    return {key: value for key, value in batch.items()
            if key not in NOT_MODEL_INPUTS and (positions or key != "position_ids")}
