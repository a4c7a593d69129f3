"""Batched inference: option-letter scoring in one forward pass, greedy and sampled generation.

The engine knows prompts and tensors, never which method made the model. Questions about the same
face share its prompt prefix (`evaluation/prefix.py`); the rest go in length-bucketed batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tqdm import tqdm

from mmunlearn.data.schema import OPTION_LETTERS
from mmunlearn.evaluation.prefix import (
    PrefixBatch,
    image_token_id,
    last_tokens_are_text,
    plan_prefix_batches,
    prefill,
    prefix_sharing_is_exact,
    repeated_prompts,
    repeated_prompts_are_exact,
)
from mmunlearn.journal import JournalScope, resumed
from mmunlearn.models.prompts import encode_prompts, render_prompt, reply_separator
from mmunlearn.training.data import collate, model_inputs, on_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One question to put to the model: the user turn and the face image if it is shown."""

    user_text: str
    image_png: bytes | None = None


def answer_start_token_ids(processor, answers: tuple[str, ...] = OPTION_LETTERS) -> list[int]:
    """The first token the model emits when its reply starts with each answer, read off the tokenizer.

    Found by tokenising a prompt with and without the answer appended (after the template's
    `reply_separator`), so it holds for any tokenizer and template (a leading-space BPE token here, a
    SentencePiece "▁A" in LLaVA, a bare "A" after Qwen2-VL's line break) without naming model families.
    """
    prompt = render_prompt(processor, "?", with_image=False)
    tokenizer = processor.tokenizer
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    separator = reply_separator(processor)
    ids = []
    for answer in answers:
        full = tokenizer(prompt + separator + answer, add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base or len(full) == len(base):
            raise ValueError(f"cannot isolate the token that starts the answer {answer!r}")
        ids.append(full[len(base)])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answers {answers} share a first token {ids}")
    return ids


def _batches(encoded: list[dict], batch_size: int):
    """Length-bucketed batches (similar lengths together: less padding), in original-index order out."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _work(model, requests: list[Request], encoded: list[dict], batch_size: int, pad_token_id: int,
          share_faces: bool = True, for_generate: bool = False) -> list[PrefixBatch | list[int]]:
    """The batches to run: shared-prefix batches for the questions about one face (when the model computes
    them exactly as whole prompts), then length-bucketed batches of whole prompts for the rest."""
    shared, alone = [], list(range(len(encoded)))
    if share_faces:
        shared, alone = plan_prefix_batches(encoded, [r.image_png for r in requests], image_token_id(model),
                                            batch_size, by_length=for_generate)
        if shared and not prefix_sharing_is_exact(model, encoded, shared[0], pad_token_id):
            shared, alone = [], list(range(len(encoded)))
    whole = [[alone[i] for i in batch] for batch in _batches([encoded[i] for i in alone], batch_size)]
    return [*shared, *whole]


def _inputs(model, encoded: list[dict], work: PrefixBatch | list[int], pad_token_id: int,
            for_generate: bool = False, repeats: int = 1) -> tuple[list[int], dict]:
    """(the batch's encoded indices in row order, model inputs for the rows' last-token logits).

    ``for_generate``: as generate() takes them — every prompt token's id (a shared prefix's keys and
    values come cached) and the positions left to the attention mask. ``repeats``: each whole prompt's
    row that many times in a row (several samples per prompt).
    """
    if isinstance(work, PrefixBatch):
        inputs, prefix_ids = prefill(model, encoded, work, pad_token_id)
        if for_generate:
            inputs = {"input_ids": torch.cat([prefix_ids, inputs["input_ids"]], dim=1),
                      "attention_mask": inputs["attention_mask"], "past_key_values": inputs["past_key_values"]}
        return work.rows, inputs
    if repeats > 1 and for_generate and last_tokens_are_text(model, [encoded[i] for i in work]) \
            and repeated_prompts_are_exact(model, encoded, work[0], pad_token_id):
        return work, repeated_prompts(model, encoded, work, pad_token_id, repeats)
    device = _model_device(model)
    batch = collate([encoded[i] for i in work for _ in range(repeats)], pad_token_id)
    return work, on_device(model_inputs(model, batch, positions=not for_generate), device)


@torch.no_grad()
def score_options(model, processor, requests: list[Request], batch_size: int = 32,
                  system_prompt: str | None = None, desc: str = "scoring options",
                  letters: tuple[str, ...] = OPTION_LETTERS, journal: JournalScope | None = None) -> list[dict[str, float]]:
    """Log-probability of each option letter as the reply's first token, one forward pass per batch.
    ``journal``: batches an interrupted run finished are read back, not run again."""
    letter_ids = answer_start_token_ids(processor, letters)
    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests], system_prompt)
    scores: list[dict[str, float] | None] = [None] * len(requests)
    model.eval()
    pad_token_id = processor.tokenizer.pad_token_id

    def run(work) -> list:
        indices, inputs = _inputs(model, encoded, work, pad_token_id)
        # no cache of the batch's keys and values: nothing continues from it (~14% of scoring on 2 cores)
        logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :].float()
        letter_logprobs = torch.log_softmax(logits, dim=-1)[:, letter_ids].cpu()
        return [[index, dict(zip(letters, letter_logprobs[row].tolist()))] for row, index in enumerate(indices)]

    work_list = _work(model, requests, encoded, batch_size, pad_token_id)
    for number, work in enumerate(tqdm(work_list, desc=desc, unit="batch", leave=False)):
        for index, score in resumed(journal, number, lambda: run(work)):
            scores[index] = score
    return scores  # type: ignore[return-value]


@dataclass(frozen=True)
class Sampling:
    seed: int
    temperature: float = 1.0
    top_k: int = 50

    def processor(self, batch_key: int, device: torch.device):
        """A sampler seeded from (seed, the batch's first request): a request's samples do not depend on
        how many batches ran before it."""
        from mmunlearn.evaluation.sampling import TopKSampling  # transformers' generation costs 3 s to import

        generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + batch_key)
        return TopKSampling(self.temperature, self.top_k, generator)


@torch.no_grad()
def _generate(model, processor, requests: list[Request], batch_size: int, system_prompt: str | None, desc: str,
              samples: int = 1, sampling: Sampling | None = None, journal: JournalScope | None = None,
              **generate_kwargs) -> list[list[str]]:
    """``samples`` replies per request, batched by prompt length with left padding; stop at end-of-sequence.

    Greedy without ``sampling`` (questions about one face share its prefix); with it, each request's
    row is repeated ``samples`` times and drawn by ``TopKSampling``, in whole-prompt batches whose first
    request seeds the draw. ``journal``: batches an interrupted run finished are read back (a batch's draw
    is seeded by its own first request, so skipping batches changes no other batch's samples).
    """
    from transformers import LogitsProcessorList  # only generation needs it (3 s import for report-only commands)

    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests], system_prompt)
    replies: list[list[str]] = [[] for _ in requests]
    tokenizer = processor.tokenizer
    model.eval()
    device = _model_device(model)
    work_list = _work(model, requests, encoded, batch_size, tokenizer.pad_token_id, share_faces=sampling is None and samples == 1,
                      for_generate=True)

    def run(work) -> list:
        indices, batch = _inputs(model, encoded, work, tokenizer.pad_token_id, for_generate=True, repeats=samples)
        processors = LogitsProcessorList([sampling.processor(indices[0], device)] if sampling else [])
        output = model.generate(**batch, do_sample=False, logits_processor=processors,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                **generate_kwargs)
        texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [[index, [text.strip() for text in texts[row * samples:(row + 1) * samples]]]
                for row, index in enumerate(indices)]

    for number, work in enumerate(tqdm(work_list, desc=desc, unit="batch", leave=False)):
        for index, texts in resumed(journal, number, lambda: run(work)):
            replies[index] = texts
    return replies


def generate_replies(model, processor, requests: list[Request], batch_size: int = 32, max_new_tokens: int = 48,
                     system_prompt: str | None = None, desc: str = "generating",
                     journal: JournalScope | None = None) -> list[str]:
    """Greedy replies, batched by prompt length with left padding; stops at end-of-sequence."""
    replies = _generate(model, processor, requests, batch_size, system_prompt, desc, journal=journal,
                        max_new_tokens=max_new_tokens)
    return [only for (only,) in replies]


def sample_replies(model, processor, requests: list[Request], samples: int, seed: int, batch_size: int = 32,
                   max_new_tokens: int = 48, temperature: float = 1.0, top_k: int = 50,
                   system_prompt: str | None = None, desc: str = "sampling",
                   journal: JournalScope | None = None) -> list[list[str]]:
    """``samples`` sampled replies per request (temperature / top-k), reproducible from ``seed``."""
    return _generate(model, processor, requests, batch_size, system_prompt, desc, samples=samples,
                     sampling=Sampling(seed, temperature, top_k), journal=journal, max_new_tokens=max_new_tokens)
