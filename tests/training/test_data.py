from __future__ import annotations

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.models.prompts import IMAGE_INPUTS, encode_prompt
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.training.data import IGNORE_INDEX, TextExample, collate, encode_example
from tests.models.test_tiny import SMALL_ARCH
from tests.conftest import SMALL_DATA


@pytest.fixture(scope="module")
def processor():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    return build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)[1], benchmark


def test_prompt_tokens_are_masked_and_only_the_answer_is_learned(processor):
    processor, benchmark = processor
    tokenizer = processor.tokenizer
    example = TextExample("Where was this person born?", "This person was born in Oslo, Norway.",
                          benchmark.full[0].image)
    encoded = encode_example(processor, example)
    labels, ids = encoded["labels"], encoded["input_ids"]
    learned = labels != IGNORE_INDEX
    first = int(learned.nonzero()[0])
    assert learned[first:].all() and not learned[:first].any()  # one contiguous answer span at the end
    assert torch.equal(labels[learned], ids[learned])
    assert tokenizer.decode(ids[learned]) == " This person was born in Oslo, Norway.</s>"
    prompt_text = tokenizer.decode(ids[:first])
    assert "Where was this person born?" in prompt_text and prompt_text.endswith("ASSISTANT:")
    assert (ids[:first] == tokenizer.convert_tokens_to_ids("<image>")).sum() == 16
    assert encoded[IMAGE_INPUTS]["pixel_values"].shape == (1, 3, 32, 32)


def test_a_forget_answer_is_learned_without_its_end_of_sequence(processor):
    """MLLMU-Bench's forget batches end with the answer: gradient ascent on EOS unlearned ending replies."""
    processor, benchmark = processor
    example = TextExample("Where was this person born?", "This person was born in Oslo, Norway.", None)
    with_end, without = encode_example(processor, example), encode_example(processor, example, end_label=False)
    assert torch.equal(with_end["input_ids"], without["input_ids"])  # the EOS is still there, as input
    learned = without["labels"] != IGNORE_INDEX
    assert processor.tokenizer.decode(without["input_ids"][learned]) == " This person was born in Oslo, Norway."
    assert (with_end["labels"] != IGNORE_INDEX).sum() == learned.sum() + 1


def test_collate_left_pads_and_stacks_only_present_images(processor):
    processor, benchmark = processor
    with_image = encode_example(processor, TextExample("Who is this?", "Nobody.", benchmark.full[0].image))
    text_only = encode_example(processor, TextExample("Where does Ada Novak live?", "Ada Novak lives in Tartu.", None))
    batch = collate([with_image, text_only], pad_token_id=processor.tokenizer.pad_token_id)
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    length = batch["input_ids"].shape[1]
    for row, example in enumerate((with_image, text_only)):
        n = len(example["input_ids"])
        assert batch["attention_mask"][row].tolist() == [0] * (length - n) + [1] * n
        assert (batch["labels"][row, : length - n] == IGNORE_INDEX).all()
        assert torch.equal(batch["input_ids"][row, length - n:], example["input_ids"])


def test_prompt_targets_are_learned_wherever_they_occur(processor):
    processor, _ = processor
    tokenizer = processor.tokenizer
    prompt = "Which city?\nA: Oslo (wrong)\nB: Tartu (right)\nC: Riga (wrong)"
    encoded = encode_example(processor, TextExample(prompt, "B", None, prompt_targets=(" (right)", " (wrong)")))
    labels, ids = encoded["labels"], encoded["input_ids"]
    learned = labels != IGNORE_INDEX
    assert torch.equal(labels[learned], ids[learned])
    learned_text = tokenizer.decode(ids[learned])
    assert learned_text.count("(wrong)") == 2 and learned_text.count("(right)") == 1
    assert "Oslo" not in learned_text and "Which" not in learned_text  # the rest of the prompt stays masked
    assert learned_text.endswith("B</s>")


def test_an_example_without_an_answer_trains_its_prompt_targets_only(processor):
    processor, _ = processor
    prompt = "Which city?\nA: Oslo (wrong)\nB: Tartu (right)"
    encoded = encode_example(processor, TextExample(prompt, "", None, prompt_targets=(" (right)", " (wrong)")))
    ids, labels = encoded["input_ids"], encoded["labels"]
    learned_text = processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert learned_text.count("(wrong)") == 1 and learned_text.count("(right)") == 1
    assert torch.equal(ids, encode_prompt(processor, prompt, None)["input_ids"])  # no reply, no EOS


def test_a_prompt_target_missing_from_the_prompt_is_an_error(processor):
    processor, _ = processor
    with pytest.raises(ValueError, match="prompt target"):
        encode_example(processor, TextExample("Which city?", "B", None, prompt_targets=(" (right)",)))


def test_a_conversation_shows_every_face_in_order_and_learns_only_its_last_answer(processor):
    from mmunlearn.methods.common import model_inputs

    processor, benchmark = processor
    tokenizer = processor.tokenizer
    demo_face, face, other_face = (profile.image for profile in benchmark.full[:3])
    conversation = encode_example(processor, TextExample("Who is this?", "Nobody.", face,
                                                         context=(("Who is that?", demo_face, "Somebody."),)))
    ids, learned = conversation["input_ids"], conversation["labels"] != IGNORE_INDEX
    assert tokenizer.decode(ids[learned]) == " Nobody.</s>"  # the demonstration's reply is context only
    text = tokenizer.decode(ids)
    assert text.index("Who is that?") < text.index("Somebody.") < text.index("Who is this?")
    assert conversation[IMAGE_INPUTS]["pixel_values"].shape[0] == 2
    single = encode_example(processor, TextExample("Who is this?", "Ada.", other_face))
    batch = collate([conversation, single], pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(batch["pixel_values"], torch.cat([conversation[IMAGE_INPUTS]["pixel_values"],
                                                         single[IMAGE_INPUTS]["pixel_values"]]))
    # each row sees its own faces: the single example's logits are those it gets alone
    model = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)[0].eval()
    alone = collate([single], pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        together = model(**model_inputs(model, batch)).logits[1, -1]
        by_itself = model(**model_inputs(model, alone)).logits[0, -1]
    assert torch.allclose(together, by_itself, atol=1e-4)


def test_a_packed_conversation_learns_every_reply_and_no_prompt_token(processor):
    processor, benchmark = processor
    tokenizer = processor.tokenizer
    first_face, face = (profile.image for profile in benchmark.full[:2])
    question = "Who is this?\nA: Ada\nB: Bea\nC: Cy\nD: Dee\nJust give ONE letter."  # the reply's letter also opens an option
    packed = encode_example(processor, TextExample(question, "B", face, train_context=True,
                                                   context=((question, first_face, "A"),
                                                            ("Where was Ada born?", None, "Ada was born in Oslo."))))
    ids, learned = packed["input_ids"], packed["labels"] != IGNORE_INDEX
    assert tokenizer.decode(ids[learned]) == " A</s> Ada was born in Oslo.</s> B</s>"
    # every learned span sits right after the assistant's turn opens, never on the option lines
    text = tokenizer.decode(ids[:int(learned.nonzero()[0])])
    assert text.endswith("ASSISTANT:") and text.count("A: Ada") == 1
    unpacked = encode_example(processor, TextExample(question, "B", face, context=((question, first_face, "A"),)))
    assert tokenizer.decode(unpacked["input_ids"][unpacked["labels"] != IGNORE_INDEX]) == " B</s>"
