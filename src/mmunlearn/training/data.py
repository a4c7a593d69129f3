"""Examples for training: the prompt is context, only the answer is learned (labels -100 elsewhere).

Answer-only masking is what the paper's loss asks for and what made the tiny model learn the profiles
(shared/research/tiny_model_learning.md); the official code trains on the prompt too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image

from mmunlearn.models.prompts import render_prompt

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TextExample:
    """One (prompt, answer) pair, with the face image when the question shows it."""

    user_text: str
    answer: str
    image_png: bytes | None = None


def decode_image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def encode_example(processor, example: TextExample, system_prompt: str | None = None) -> dict[str, torch.Tensor]:
    """Token ids of prompt + answer + EOS, labels masked to the answer (+ EOS), pixel values if any."""
    with_image = example.image_png is not None
    prompt = render_prompt(processor, example.user_text, with_image, system_prompt)
    images = [decode_image(example.image_png)] if with_image else None
    prompt_enc = processor(images=images, text=[prompt], return_tensors="pt")
    tokenizer = processor.tokenizer
    answer_ids = tokenizer(" " + example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt_ids = prompt_enc["input_ids"][0]
    input_ids = torch.cat([prompt_ids, torch.tensor(answer_ids, dtype=prompt_ids.dtype)])
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), torch.tensor(answer_ids, dtype=prompt_ids.dtype)])
    encoded = {"input_ids": input_ids, "labels": labels}
    if with_image:
        encoded["pixel_values"] = prompt_enc["pixel_values"][0]
    return encoded


def collate(examples: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a batch (as generation does); images are stacked for the examples that have one."""
    length = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), length), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), length), dtype=torch.long),
        "labels": torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long),
    }
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        batch["input_ids"][row, length - n:] = example["input_ids"]
        batch["attention_mask"][row, length - n:] = 1
        batch["labels"][row, length - n:] = example["labels"]
    pixels = [e["pixel_values"] for e in examples if "pixel_values" in e]
    if pixels:
        batch["pixel_values"] = torch.stack(pixels)
    return batch
