"""Prompts for every task, rendered through the model's own chat template (no model-id special cases).

The task wording follows the official MLLMU-Bench evaluation code (shared/research/mllmu_bench.md).
"""

from __future__ import annotations

import io
import weakref
from collections.abc import Sequence

from PIL import Image

from mmunlearn.data.schema import BLANK, OPTION_LETTERS, QAItem, Task

MCQ_INSTRUCTION = "Just give ONE letter representing the answer directly."
GENERATION_INSTRUCTION = "Answer the question based on your trained knowledge in one sentence accurately in ENGLISH."
CLOZE_BLANK = "[Blank]"
CLOZE_INSTRUCTION = f"Please **ONLY** provide the correct answer that should replace the {CLOZE_BLANK}."


def _option_lines(options: dict[str, str]) -> list[str]:
    return [f"{letter}: {options[letter]}" for letter in OPTION_LETTERS if letter in options]


def mcq_text(question: str, options: dict[str, str]) -> str:
    return "\n".join([question, *_option_lines(options), MCQ_INSTRUCTION])


def generation_text(question: str) -> str:
    return f"{question}\n{GENERATION_INSTRUCTION}"


def cloze_text(question: str) -> str:
    return f"{question.replace(BLANK, CLOZE_BLANK)}\n{CLOZE_INSTRUCTION}"


# The official eval.py's few-shot prompt states each shown question's answer inside the user turn
DEMONSTRATION_ANSWER = "Correct Answer:"


def mcq_demonstration_text(question: str, options: dict[str, str], correct: str) -> str:
    """A multiple-choice question shown with its answer, as eval.py's few-shot prompt writes it."""
    return "\n".join([f"Question: {question}", *_option_lines(options), f"{DEMONSTRATION_ANSWER} {correct}"])


def cloze_demonstration_text(question: str, answer: str) -> str:
    """A fill-in-the-blank question shown with its answer, as eval.py's few-shot prompt writes it."""
    return f"{cloze_text(question)}\n{DEMONSTRATION_ANSWER} {answer}"


def task_text(item: QAItem) -> str:
    """The user turn that asks ``item`` in its task's format."""
    if item.task is Task.MCQ:
        return mcq_text(item.question, item.options or {})
    if item.task is Task.GENERATION:
        return generation_text(item.question)
    return cloze_text(item.question)


def target_text(item: QAItem) -> str:
    """What a correct reply says: the option letter, the full sentence, or the blank's filler."""
    return item.correct or "" if item.task is Task.MCQ else item.ground_truth


def chat_messages(text: str, with_image: bool, system_prompt: str | None = None) -> list[dict]:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    return messages


def render_prompt(processor, text: str, with_image: bool, system_prompt: str | None = None) -> str:
    """The prompt string up to where the assistant's answer starts."""
    return processor.apply_chat_template(chat_messages(text, with_image, system_prompt),
                                         add_generation_prompt=True, tokenize=False)


_SEPARATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # processor → its reply separator


def reply_separator(processor) -> str:
    """What stands between a rendered prompt and the reply: a space after a template that ends on a word
    (LLaVA's "ASSISTANT:"), nothing after one that ends on a line break (Qwen2-VL's "assistant\n"), where
    a leading space would make every reply, and the option letters scored, tokens the model never emits."""
    if processor not in _SEPARATORS:
        _SEPARATORS[processor] = "" if render_prompt(processor, "?", with_image=False)[-1:].isspace() else " "
    return _SEPARATORS[processor]


def decode_image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


# An encoded prompt is a dict: "input_ids" (1-D), and, as the model's processor gives them,
TOKEN_EXTRAS = "token_extras"  # other per-token ids (1-D each, e.g. Qwen2-VL's mm_token_type_ids)
IMAGE_INPUTS = "image_inputs"  # the image tensors of the prompt's faces (pixel_values, image_grid_thw, ...)
_TEXT_KEYS = ("input_ids", "attention_mask")


def encode_prompt(processor, text: str, image_png: bytes | None, system_prompt: str | None = None) -> dict:
    """Token ids of the rendered prompt (image placeholders expanded) and the image inputs when shown a face."""
    return encode_prompts(processor, [(text, image_png)], system_prompt)[0]


def encode_prompts(processor, prompts: Sequence[tuple[str, bytes | None]], system_prompt: str | None = None,
                   chunk_size: int = 64) -> list[dict]:
    """``encode_prompt`` of each (user text, face or None), in order, from one processor call per chunk.

    A processor call costs ~1 ms of argument handling before any work: per prompt that was a quarter of
    a small model's evaluation. Prompts with and without a face go in separate calls; each row keeps
    only its own tokens (the attention mask drops the chunk's padding), so it equals a lone encoding.
    A processor whose image tensors are not one entry per prompt (e.g. every image's patches in one
    flat tensor) is called once per prompt instead.
    """
    encoded: list[dict] = [{} for _ in prompts]
    for with_image in (False, True):
        indices = [i for i, (_, png) in enumerate(prompts) if (png is not None) == with_image]
        for start in range(0, len(indices), chunk_size):
            chunk = indices[start:start + chunk_size]
            texts = [render_prompt(processor, prompts[i][0], with_image, system_prompt) for i in chunk]
            images = [decode_image(prompts[i][1]) for i in chunk] if with_image else None
            rows = _rows(processor(images=images, text=texts, padding=True, return_tensors="pt"))
            if rows is None:
                rows = [_rows(processor(images=[image], text=[text], return_tensors="pt"))[0]
                        for image, text in zip(images, texts)]
            for index, row in zip(chunk, rows):
                encoded[index] = row
    return encoded


def _rows(batch) -> list[dict] | None:
    """Each prompt's encoding from one processor call; None when its image tensors cannot be split by
    prompt (a call over one prompt always can)."""
    shape = batch["input_ids"].shape
    token_keys = [k for k, v in batch.items() if k not in _TEXT_KEYS and getattr(v, "shape", None) == shape]
    image_keys = [k for k in batch if k not in _TEXT_KEYS and k not in token_keys]
    if shape[0] > 1 and any(len(batch[k]) != shape[0] for k in image_keys):
        return None
    keep = batch["attention_mask"].bool()
    rows = []
    for row in range(shape[0]):
        encoded = {"input_ids": batch["input_ids"][row][keep[row]]}
        if token_keys:
            encoded[TOKEN_EXTRAS] = {k: batch[k][row][keep[row]] for k in token_keys}
        if image_keys:
            encoded[IMAGE_INPUTS] = {k: batch[k][row:row + 1] if shape[0] > 1 else batch[k] for k in image_keys}
        rows.append(encoded)
    return rows


def with_tokens(encoded: dict, ids) -> dict:
    """``encoded`` with text tokens appended (a tensor of ids: an answer, a fact's start): other per-token
    ids extend with 0, the value processors give text tokens."""
    import torch

    extended = {**encoded, "input_ids": torch.cat([encoded["input_ids"], ids.to(encoded["input_ids"].dtype)])}
    if TOKEN_EXTRAS in encoded:
        extended[TOKEN_EXTRAS] = {k: torch.cat([v, v.new_zeros(len(ids))]) for k, v in encoded[TOKEN_EXTRAS].items()}
    return extended


def encode_conversation(processor, turns: list[tuple[str, bytes | None, str | None]],
                        system_prompt: str | None = None) -> dict:
    """Token ids and the image inputs of every image shown (in order) of a multi-turn prompt.

    Each turn is (user text, face image or None, the assistant's reply or None for the open last
    turn): e.g. the official protocol's few-shot demonstrations, then the question. A system prompt
    (Prompting) opens it.
    """
    messages, images = [], []
    for index, (text, image_png, reply) in enumerate(turns):
        messages += chat_messages(text, image_png is not None, system_prompt if index == 0 else None)
        if image_png is not None:
            images.append(decode_image(image_png))
        if reply is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return _rows(processor(images=images or None, text=[prompt], return_tensors="pt"))[0]
