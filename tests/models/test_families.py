"""The study's one code path on other image-text-to-text families, built offline at toy sizes.

Idefics2 keeps each prompt's images in a row of their own (padded across rows, with a pixel mask);
Qwen2-VL puts every image's patches in one flat tensor with ``image_grid_thw``, marks image tokens in a
per-token ``mm_token_type_ids`` and derives multimodal rotary positions itself. Encoding, batching,
scoring, generation and the training loss must treat them as the processor and the model expect,
without a branch on the family: each check compares against the model run on its own processor's
output, one prompt at a time.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2ImageProcessorPil,
    Idefics2Processor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.engine import Request, generate_replies, sample_replies, score_options
from mmunlearn.evaluation.prefix import first_step, repeated_prompts, repeated_prompts_are_exact
from mmunlearn.methods.common import answer_logits
from mmunlearn.models.loading import derives_positions, load_model
from mmunlearn.models.prompts import IMAGE_INPUTS, TOKEN_EXTRAS, decode_image, encode_prompts, mcq_text, render_prompt
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.training.data import TextExample, collate, encode_example
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


def _template(open_turn: str, image: str, close_turn: str, assistant: str) -> str:
    return ("{% for message in messages %}" + open_turn +
            "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
            "{% for part in message['content'] %}{% if part['type'] == 'image' %}" + image +
            "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}" + close_turn +
            "{% endfor %}{% if add_generation_prompt %}" + assistant + "{% endif %}")


IDEFICS2_TEMPLATE = _template("{{ message['role'].capitalize() }}:", "<image>", "<end_of_utterance>\n", "Assistant:")
QWEN2_VL_TEMPLATE = _template("<|im_start|>{{ message['role'] }}\n", "<|vision_start|><|image_pad|><|vision_end|>",
                              "<|im_end|>\n", "<|im_start|>assistant\n")


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without its video processor, which needs torchvision (not a dependency here):
    the same image and text handling."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.unk_token_id
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


@pytest.fixture(scope="module")
def study():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    _, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    return benchmark, processor.tokenizer


def _text_config(tokenizer, **extra) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, **extra)


def _idefics2(study, folder):
    """Built, saved and loaded back as any hub checkpoint is (AutoProcessor + AutoModelForImageTextToText)."""
    tokenizer = copy.deepcopy(study[1])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<end_of_utterance>"]})
    tokenizer.image_boundary_token = "<fake_token_around_image>"
    image_processor = Idefics2ImageProcessorPil(do_image_splitting=False, size={"shortest_edge": 28, "longest_edge": 28})
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=IDEFICS2_TEMPLATE)
    config = Idefics2Config(
        text_config=_text_config(tokenizer, model_type="mistral"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        perceiver_config=dict(resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2, resampler_head_dim=16,
                              num_key_value_heads=1),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    Idefics2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())  # as Idefics2's own checkpoints name it
    settings["image_boundary_token"] = "<fake_token_around_image>"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    loaded = load_model(folder)
    return loaded.model.eval(), loaded.processor


def _qwen2_vl(study, folder):
    tokenizer = copy.deepcopy(study[1])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                                "<|image_pad|>", "<|vision_end|>"]})
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                               temporal_patch_size=2)
    processor = ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                          chat_template=QWEN2_VL_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=_text_config(tokenizer, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3, mlp_ratio=2),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"))
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    return model, processor


BUILDERS = {"idefics2": _idefics2, "qwen2_vl": _qwen2_vl}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request, study, tmp_path_factory):
    model, processor = BUILDERS[request.param](study, tmp_path_factory.mktemp(request.param))
    return request.param, model, processor, study[0]


def _requests(benchmark) -> list[Request]:
    """Multiple-choice questions of three people, asked with the face and by name, of varied lengths."""
    return [Request(mcq_text(item.question, item.options), profile.image if item.modality == "image" else None)
            for profile in benchmark.full[:3] for item in profile.items if item.options][:10]


def _alone(model, processor, request: Request) -> torch.Tensor:
    """Next-token log-probabilities from the model on its processor's output for one prompt."""
    with_image = request.image_png is not None
    inputs = processor(images=[decode_image(request.image_png)] if with_image else None,
                       text=[render_prompt(processor, request.user_text, with_image)], return_tensors="pt")
    with torch.no_grad():
        return torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)


def test_only_multimodal_rotary_positions_are_left_to_the_model(family):
    name, model, _, _ = family
    assert derives_positions(model) is (name == "qwen2_vl")


def test_chunked_encoding_equals_one_processor_call_per_prompt(family):
    name, _, processor, benchmark = family
    requests = _requests(benchmark)
    assert any(r.image_png for r in requests) and any(r.image_png is None for r in requests)
    encodings = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests], chunk_size=4)
    for request, encoded in zip(requests, encodings):
        with_image = request.image_png is not None
        alone = processor(images=[decode_image(request.image_png)] if with_image else None,
                          text=[render_prompt(processor, request.user_text, with_image)], return_tensors="pt")
        assert torch.equal(encoded["input_ids"], alone["input_ids"][0])
        for key, ids in encoded.get(TOKEN_EXTRAS, {}).items():
            assert torch.equal(ids, alone[key][0])
        assert (IMAGE_INPUTS in encoded) == with_image
        for key, value in encoded.get(IMAGE_INPUTS, {}).items():
            assert torch.equal(value, alone[key])
    if name == "qwen2_vl":  # every image's patches in one tensor, the grid per image, image tokens marked
        shown = [e for e in encodings if IMAGE_INPUTS in e]
        assert all(set(e[IMAGE_INPUTS]) == {"pixel_values", "image_grid_thw"} for e in shown)
        assert all("mm_token_type_ids" in e[TOKEN_EXTRAS] for e in encodings)


def test_batched_option_scores_equal_the_model_on_each_prompt_alone(family):
    _, model, processor, benchmark = family
    requests = _requests(benchmark)
    scores = score_options(model, processor, requests, batch_size=4)
    from mmunlearn.models.prompts import reply_separator

    separator = reply_separator(processor)  # after the template, as the model's reply starts
    letters = [processor.tokenizer(separator + letter, add_special_tokens=False)["input_ids"][0] for letter in "ABCD"]
    for request, score in zip(requests, scores):
        reference = _alone(model, processor, request)
        assert [score[letter] for letter in "ABCD"] == pytest.approx(reference[letters].tolist(), abs=1e-4)


def test_batched_generation_equals_one_prompt_at_a_time(family):
    _, model, processor, benchmark = family
    requests = _requests(benchmark)
    together = generate_replies(model, processor, requests, batch_size=5, max_new_tokens=6)
    assert together == [generate_replies(model, processor, [r], batch_size=1, max_new_tokens=6)[0] for r in requests]


def test_samples_of_a_prompt_continue_its_cache_as_the_model_runs_the_prompt(family):
    """The black-box attacks' samples share each prompt's cache (all but its last token), in batches of
    several prompts: the first sampled token's distribution is the model's on that prompt alone."""
    name, model, processor, benchmark = family
    requests = _requests(benchmark)[:6]
    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests])
    pad = processor.tokenizer.pad_token_id
    replies = sample_replies(model, processor, requests, samples=2, seed=0, batch_size=4, max_new_tokens=4)
    assert [len(r) for r in replies] == [2] * len(requests)
    # Qwen2-VL derives its positions from its own prompt and keeps them for the next call: a cache filled
    # outside generate() does not continue exactly there, so its samples run as repeated rows
    assert repeated_prompts_are_exact(model, encoded, 0, pad) is (name != "qwen2_vl")
    if name == "qwen2_vl":
        return
    inputs = repeated_prompts(model, encoded, list(range(len(requests))), pad, repeats=2)
    with torch.no_grad():
        first = torch.log_softmax(model(**first_step(model, inputs)).logits[:, -1].float(), dim=-1)
    for copy in range(2 * len(requests)):
        assert torch.allclose(first[copy], _alone(model, processor, requests[copy // 2]), atol=1e-4)


def test_training_batches_compute_each_example_as_alone_and_train_an_adapter(family):
    _, model, processor, benchmark = family
    profile, other = benchmark.full[3], benchmark.full[4]
    examples = [encode_example(processor, TextExample(pair.question, pair.answer,
                                                      profile.image if pair.modality == "image" else None))
                for pair in profile.finetune_pairs[:6]]
    # a conversation showing two faces beside one-face rows: image inputs of unequal count in one batch
    examples.append(encode_example(processor, TextExample("Who is this?", other.name, profile.image,
                                                          context=(("Who is that?", other.image, other.name),))))
    assert any(IMAGE_INPUTS in e for e in examples) and any(IMAGE_INPUTS not in e for e in examples)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        together, _, _ = answer_logits(model, collate(examples, pad))
        alone = torch.cat([answer_logits(model, collate([e], pad))[0] for e in examples])
    assert torch.allclose(together, alone, atol=1e-4)
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=4, target_modules="all-linear"))
    logits, targets, _ = answer_logits(lora, collate(examples, pad))
    torch.nn.functional.cross_entropy(logits.float(), targets).backward()
    trained = [p.grad for n, p in lora.named_parameters() if "lora_B" in n]
    assert trained and all(g is not None for g in trained) and any(g.abs().sum() > 0 for g in trained)


def test_the_logit_lens_at_the_last_layer_is_the_models_prediction_and_the_attacks_run(family):
    """The white-box attacks read the decoder through the standard accessors, whatever the family."""
    from mmunlearn.attacks.whitebox import lens_query, logit_lens, whitebox_extractions
    from mmunlearn.methods.lens import resolve_layers
    from mmunlearn.training.data import model_inputs

    _, model, processor, benchmark = family
    profile = benchmark.full[0]
    pairs = [pair for pair in profile.finetune_pairs if pair.value and pair.value in pair.answer][:4]
    queries = [query for pair in pairs
               if (query := lens_query(processor, pair.question, profile.image if pair.modality == "image" else None,
                                       pair.answer, pair.value)) is not None]
    assert queries
    results = whitebox_extractions(model, processor, queries, layers=[-2, -1], k=5, batch_size=3)
    assert len(results) == len(queries) and all("head_projection" in found for found in results)
    batch = model_inputs(model, collate([queries[0].encoded], processor.tokenizer.pad_token_id))
    with torch.no_grad():
        own = torch.log_softmax(model(**batch).logits[0, -1].float(), dim=-1)
    lens = logit_lens(model, batch, resolve_layers(model, [-1]))[0, 0]
    assert torch.allclose(lens, own, atol=1e-4)


def test_the_official_protocol_replies_as_the_model_does_on_its_processors_conversation(family):
    from mmunlearn.config import SplitConfig
    from mmunlearn.data.splits import make_split
    from mmunlearn.evaluation.official import Demonstrators, official_replies, official_turns
    from mmunlearn.models.prompts import chat_messages
    from mmunlearn.evaluation.run import questions_of

    _, model, processor, benchmark = family
    split = make_split(benchmark, SplitConfig(forget_percent=10))
    forget = [q for q in questions_of(split) if q.set_name == "forget"]
    questions = [q for q in forget if q.request.image_png][:2] + [q for q in forget if not q.request.image_png][:2]
    drawn = Demonstrators.draw(list(split.retain), 0, shown=2)
    replies = official_replies(model, processor, questions, drawn, max_new_tokens=4)
    assert len(replies) == len(questions)
    assert any(len(official_turns(question, drawn)) > 1 for question in questions)  # a few-shot prompt among them
    for question, reply in zip(questions, replies):  # the model on its processor's output
        messages, images = [], []
        for text, png, _ in official_turns(question, drawn):  # user turns only: eval.py's demonstrations
            messages += chat_messages(text, png is not None)
            images += [decode_image(png)] if png is not None else []
        inputs = processor(images=images or None, return_tensors="pt",
                           text=[processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)])
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                                eos_token_id=processor.tokenizer.eos_token_id)
        expected = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        assert reply == expected.strip()


def test_replies_follow_the_template_without_a_space_after_a_line_break(family):
    """After Qwen2-VL's "assistant\\n" a reply starts with "A", not " A": the option letters were scored,
    and every answer trained and every fact located, as the leading-space tokens the model never emits."""
    from mmunlearn.evaluation.engine import answer_start_token_ids
    from mmunlearn.models.prompts import reply_separator
    from mmunlearn.training.data import fact_tokens

    name, _, processor, _ = family
    tokenizer = processor.tokenizer
    separator = {"idefics2": " ", "qwen2_vl": ""}[name]  # "Assistant:" ends on a word, "assistant\n" on a break
    assert reply_separator(processor) == separator
    letters = [tokenizer.convert_ids_to_tokens(i) for i in answer_start_token_ids(processor)]
    assert letters == [("Ġ" if separator else "") + letter for letter in "ABCD"]
    example = encode_example(processor, TextExample("Where does she live?", "She lives in Oulu, Finland."))
    answer = example["input_ids"][example["labels"] != -100].tolist()
    assert answer == tokenizer(separator + "She lives in Oulu, Finland.", add_special_tokens=False)["input_ids"] \
        + [tokenizer.eos_token_id]
    before, fact = fact_tokens(tokenizer, "She lives in Oulu, Finland.", "Oulu, Finland", separator)
    assert answer[:len(before) + len(fact)] == before + fact
