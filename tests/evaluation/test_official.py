"""The official eval.py protocol: first-letter parsing, few-shot prompts from the retain set, one loop."""

from __future__ import annotations

import pytest

from mmunlearn.config import DataConfig, SplitConfig
from mmunlearn.data.schema import Modality, Task
from mmunlearn.data.splits import make_split
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.official import _turns, draw_demonstrations, first_letter
from mmunlearn.evaluation.run import EvaluationSettings, evaluate, questions_of
from mmunlearn.models.prompts import IMAGE_INPUTS, encode_conversation, encode_prompt
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


@pytest.mark.parametrize("reply, letter", [("B", "B"), (" c) Porto", "C"), ("D: 1962", "D"), ("a", "A"),
                                           ("The answer is B", None), ("", None), ("E", None), ("1962", None)])
def test_a_reply_counts_by_its_first_character_as_eval_py_reads_it(reply, letter):
    assert first_letter(reply) == letter


@pytest.fixture(scope="module")
def split():
    benchmark = generate_benchmark(DataConfig(**{**SMALL_DATA, "num_profiles": 10, "num_celebrities": 2}))
    return make_split(benchmark, SplitConfig(forget_percent=10))


@pytest.fixture(scope="module")
def tiny(split):
    return build_tiny_model(tokenizer_corpus(split.retain), SMALL_ARCH)


def test_demonstrations_come_from_the_retain_set_in_a_seeded_order(split):
    demos = draw_demonstrations(list(split.retain), seed=3)
    retain_ids = {p.id for p in split.retain}
    assert all(profile.id in retain_ids for pool in demos.values() for profile, _ in pool)
    assert {key for key in demos} == {(t, m) for t in Task for m in Modality}
    again = draw_demonstrations(list(split.retain), seed=3)
    assert [i.question for _, i in again[(Task.MCQ, Modality.IMAGE)]] == \
        [i.question for _, i in demos[(Task.MCQ, Modality.IMAGE)]]


def test_multiple_choice_is_asked_after_a_demonstration_with_its_face(split, tiny):
    _, processor = tiny
    demos = draw_demonstrations(list(split.retain), seed=0)
    question = next(q for q in questions_of(split) if q.set_name == "forget" and q.item.task is Task.MCQ
                    and q.item.modality is Modality.IMAGE)
    turns = _turns(question.request.user_text, question.request.image_png, question.item, demos, 0)
    (demo_text, demo_image, demo_answer), last = turns
    demo_profile, demo_item = demos[(Task.MCQ, Modality.IMAGE)][0]
    assert demo_image == demo_profile.image and demo_answer == demo_item.correct and last[2] is None
    encoded = encode_conversation(processor, turns)
    single = encode_prompt(processor, question.request.user_text, question.request.image_png)
    assert encoded[IMAGE_INPUTS]["pixel_values"].shape[0] == 2  # the demonstration's face and the question's
    assert encoded["input_ids"][-len(single["input_ids"]) + 2:].tolist() == single["input_ids"][2:].tolist()
    text = processor.tokenizer.decode(encoded["input_ids"])
    assert demo_item.question in text and text.index(demo_item.question) < text.index(question.item.question)
    generation = next(q for q in questions_of(split) if q.item.task is Task.GENERATION)
    assert len(_turns(generation.request.user_text, None, generation.item, demos, 0)) == 1  # zero-shot


def test_the_official_protocol_fills_every_cell_through_the_same_loop(split, tiny):
    model, processor = tiny
    results, records = evaluate(model, processor, split, EvaluationSettings(protocol="official"))
    fast, _ = evaluate(model, processor, split, EvaluationSettings(max_new_tokens=50))
    assert set(results) == set(fast)
    for set_name, cells in results.items():
        for modality, cell in cells.items():
            assert {k: cell[k] for k in cell if k.startswith("n_")} == \
                {k: fast[set_name][modality][k] for k in fast[set_name][modality] if k.startswith("n_")}
    choices = [r["output"] for r in records if r["metric"] == "mcq_acc"]
    assert all(c is None or c in "ABCD" for c in choices)


def test_protocol_agreement_counts_every_question_and_lists_each_disagreement(split, tiny):
    from mmunlearn.evaluation.agreement import agreement_markdown, compare_protocols

    model, processor = tiny
    summary, disagreements = compare_protocols(model, processor, split, EvaluationSettings())
    mcq = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    cells = [c for name, by_modality in summary.items() if name != "overall" for c in by_modality.values()]
    assert sum(c["n"] for c in cells) == summary["overall"]["n"] == len(mcq)
    disagreeing = sum(round(c["n"] * (1 - c["agreement"])) for c in cells)
    assert disagreeing == len(disagreements)
    for d in disagreements:  # exactly one of the two protocols is right
        assert (d["fast"] == d["truth"]) != (d["official"] == d["truth"])
    report = agreement_markdown("tiny", summary, disagreements)
    assert f"## Disagreements ({len(disagreements)})" in report and report.count("\n| ") >= len(cells) + len(disagreements)
