from __future__ import annotations

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.models.prompts import render_prompt
from mmunlearn.models.tiny import TinyArchitecture, build_tiny_model, save_model, tokenizer_corpus
from mmunlearn.models.prompts import decode_image
from tests.conftest import SMALL_DATA

SMALL_ARCH = TinyArchitecture(vocab_size=512, vision_hidden=32, text_hidden=64, text_layers=2, text_intermediate=128)


@pytest.fixture(scope="module")
def benchmark():
    return generate_benchmark(DataConfig(**SMALL_DATA))


@pytest.fixture(scope="module")
def saved_model(benchmark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full + benchmark.celebrity), SMALL_ARCH)
    save_model(model, processor, folder)
    return folder, model


def test_tiny_model_loads_like_a_hub_checkpoint(saved_model, benchmark):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, original = saved_model
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name

    prompt = render_prompt(processor, "Where was this person born?", with_image=True)
    assert prompt.startswith("USER: <image>\n") and prompt.endswith("ASSISTANT:")
    inputs = processor(images=[decode_image(benchmark.full[0].image)], text=[prompt], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_index).sum())
    assert image_tokens == model.config.image_seq_length == 16
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_tokenizer_keeps_the_chat_scaffold_and_option_letters_whole(saved_model):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(saved_model[0]).tokenizer
    for letter in "ABCD":
        assert len(tokenizer(" " + letter, add_special_tokens=False)["input_ids"]) == 1
    assert len(tokenizer("USER:", add_special_tokens=False)["input_ids"]) <= 2
    assert tokenizer.decode(tokenizer("Ada Novak lives in Tartu, Estonia.")["input_ids"],
                            skip_special_tokens=True) == "Ada Novak lives in Tartu, Estonia."


def test_building_is_deterministic(benchmark):
    corpus = tokenizer_corpus(benchmark.celebrity)
    first, _ = build_tiny_model(corpus, SMALL_ARCH)
    second, _ = build_tiny_model(corpus, SMALL_ARCH)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_modules_to_save_trains_the_head_saves_it_with_the_adapter_and_switches_off_with_it(saved_model, tmp_path):
    from mmunlearn.config import LoraSettings
    from mmunlearn.models.loading import add_lora, load_model, merge_adapter, save_adapter

    folder, _ = saved_model
    loaded = load_model(folder)
    ids = loaded.tokenizer("Ada Novak lives in", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = loaded.model(input_ids=ids).logits
    model = add_lora(loaded.model, LoraSettings(r=2, alpha=2, modules_to_save=("lm_head",)))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("lm_head" in name for name in trainable) and any("lora_A" in name for name in trainable)
    with torch.no_grad():  # a trained head: every row moved
        for name, p in model.named_parameters():
            if "lm_head" in name and p.requires_grad:
                p.add_(0.5)
        tuned_logits = model(input_ids=ids).logits
    assert not torch.allclose(tuned_logits, base_logits)
    save_adapter(model, tmp_path / "adapter")

    reloaded = load_model(folder, tmp_path / "adapter").model
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, tuned_logits, atol=1e-5)
        with reloaded.disable_adapter():  # "adapter off" is still the model it was trained from
            assert torch.allclose(reloaded(input_ids=ids).logits, base_logits, atol=1e-5)
        merged = merge_adapter(reloaded)  # how unlearned models stack on the vanilla weights
        assert torch.allclose(merged(input_ids=ids).logits, tuned_logits, atol=1e-5)
