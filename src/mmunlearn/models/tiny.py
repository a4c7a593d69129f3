"""The embedded default: a tiny LLaVA-architecture model built offline.

CLIP-style vision tower + Llama-style language model + a ByteLevel BPE tokenizer trained locally on
the benchmark's own text, wrapped in a ``LlavaProcessor`` with a LLaVA-1.5-style chat template. Saved
with ``save_pretrained`` (safetensors), it loads through ``AutoProcessor`` /
``AutoModelForImageTextToText`` exactly as ``llava-hf/llava-1.5-7b-hf`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
# LLaVA-1.5's conversation shape: "USER: <image>\n{question} ASSISTANT: {answer}</s>"
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'][0]['text'] if messages[0]['content'] is not string "
    "else messages[0]['content'] }}\n{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %} {% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@dataclass(frozen=True)
class TinyArchitecture:
    """Sizes of the tiny model (params.yaml ``model.tiny``)."""

    vocab_size: int = 4096
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 512
    text_init_std: float = 0.02
    max_positions: int = 256
    seed: int = 0


def tokenizer_corpus(profiles) -> list[str]:
    """The text the tiny tokenizer is fitted to: every question and answer as the chat template wraps it."""
    from mmunlearn.models.prompts import target_text, task_text

    turns = [(task_text(item), target_text(item)) for profile in profiles for item in profile.items]
    turns += [(pair.question, pair.answer) for profile in profiles for pair in profile.finetune_pairs]
    return [f"USER: {IMAGE_TOKEN}\n{question} ASSISTANT: {answer}" for question, answer in turns]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A ByteLevel BPE tokenizer fitted to the benchmark text (any word remains spellable from bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN}, padding_side="left", model_max_length=512,
    )


def build_tiny_model(texts: Iterable[str], arch: TinyArchitecture):
    """Return (model, processor) with freshly initialised weights; deterministic in ``arch.seed``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = train_tokenizer(texts, arch.vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = CLIPImageProcessor(size={"shortest_edge": arch.image_size},
                                         crop_size={"height": arch.image_size, "width": arch.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=arch.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=arch.vision_hidden, intermediate_size=arch.vision_hidden * 4,
                              num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads,
                              image_size=arch.image_size, patch_size=arch.patch_size)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=arch.text_hidden,
                       intermediate_size=arch.text_intermediate, num_hidden_layers=arch.text_layers,
                       num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_heads,
                       max_position_embeddings=arch.max_positions, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       tie_word_embeddings=False, initializer_range=arch.text_init_std)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(arch.image_size // arch.patch_size) ** 2)
    torch.manual_seed(arch.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def save_model(model, processor, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
