"""The official eval.py protocol: first-letter parsing, eval.py's few-shot prompts (retain-set people), one loop."""

from __future__ import annotations

import pytest

from mmunlearn.config import DataConfig, SplitConfig
from mmunlearn.data.schema import Modality, Task
from mmunlearn.data.splits import make_split
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.official import Demonstrators, first_letter, official_turns
from mmunlearn.evaluation.run import EvaluationSettings, evaluate, questions_of
from mmunlearn.models.prompts import IMAGE_INPUTS, cloze_text, encode_conversation, encode_prompt
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


def test_demonstrators_are_retain_set_people_in_a_seeded_order(split):
    drawn = Demonstrators.draw(list(split.retain), seed=3, shown=2)
    assert sorted(p.id for p in drawn.order) == sorted(p.id for p in split.retain)
    assert drawn == Demonstrators.draw(list(split.retain), seed=3, shown=2)
    assert drawn.order != Demonstrators.draw(list(split.retain), seed=4, shown=2).order


def _question(split, set_name, task, modality):
    return next(q for q in questions_of(split) if q.set_name == set_name and q.item.task is task
                and q.item.modality is modality)


def test_more_people_to_show_than_the_retain_set_has_is_named(split):
    """It was capped without a word at the retain set's size."""
    from mmunlearn.errors import DataError

    with pytest.raises(DataError, match=rf"evaluation.demo_people: 1000 people to show, but the retain set has "
                                        rf"{len(split.retain)}; at most {len(split.retain) - 1}"):
        Demonstrators.draw(list(split.retain), seed=0, shown=1000)
    assert len(Demonstrators.draw(list(split.retain), seed=0, shown=len(split.retain) - 1).order) == len(split.retain)


def test_multiple_choice_follows_every_question_of_two_people_each_stating_its_answer(split, tiny):
    _, processor = tiny
    drawn = Demonstrators.draw(list(split.retain), seed=0, shown=2)
    question = _question(split, "forget", Task.MCQ, Modality.IMAGE)
    turns = official_turns(question, drawn)
    first, second = drawn.order[:2]
    demos = [*first.items_of(Task.MCQ, Modality.IMAGE), *second.items_of(Task.MCQ, Modality.IMAGE)]
    assert len(turns) == len(demos) + 1 and all(reply is None for _, _, reply in turns)  # no assistant turn
    for (text, image, _), demo in zip(turns, demos):
        assert text.startswith(f"Question: {demo.question}\n") and text.endswith(f"\nCorrect Answer: {demo.correct}")
        assert all(f"{letter}: {option}" in text for letter, option in demo.options.items())
    assert [image for _, image, _ in turns[:4]] == [first.image] * 4 and turns[4][1] == second.image
    assert turns[-1] == (question.request.user_text, question.request.image_png, None)
    encoded = encode_conversation(processor, turns)
    assert encoded[IMAGE_INPUTS]["pixel_values"].shape[0] == len(demos) + 1  # every face shown, then the question's
    single = encode_prompt(processor, question.request.user_text, question.request.image_png)
    text = processor.tokenizer.decode(encoded["input_ids"])
    assert text.count("ASSISTANT:") == 1 and text.rstrip().endswith("ASSISTANT:")  # one reply, after the question
    assert text.index(demos[-1].question) < text.index(question.item.question)
    assert encoded["input_ids"][-len(single["input_ids"]) + 2:].tolist() == single["input_ids"][2:].tolist()


def test_which_questions_eval_py_asks_with_a_few_shot_prompt(split):
    drawn = Demonstrators.draw(list(split.retain), seed=0, shown=1)
    text_mcq = official_turns(_question(split, "test", Task.MCQ, Modality.TEXT), drawn)
    assert [image for _, image, _ in text_mcq] == [None] * len(text_mcq)  # by name: no face anywhere
    assert len(text_mcq) == len(drawn.order[0].items_of(Task.MCQ, Modality.TEXT)) + 1
    cloze = official_turns(_question(split, "celebrity", Task.CLOZE, Modality.IMAGE), drawn)
    demo = drawn.order[0].items_of(Task.CLOZE, Modality.IMAGE)[0]
    assert cloze[0] == (f"{cloze_text(demo.question)}\nCorrect Answer: {demo.ground_truth}", drawn.order[0].image, None)
    assert len(official_turns(_question(split, "celebrity", Task.MCQ, Modality.IMAGE), drawn)) == 1  # zero-shot
    assert len(official_turns(_question(split, "retain", Task.GENERATION, Modality.TEXT), drawn)) == 1
    shown = next(q for q in questions_of(split) if q.profile.id == drawn.order[0].id and q.item.task is Task.MCQ)
    # never a person's own answers before their question: the next person drawn instead
    assert drawn.for_question(shown.set_name, shown.profile.id, shown.item) == \
        [(drawn.order[1], demo) for demo in drawn.order[1].items_of(shown.item.task, shown.item.modality)]
    no_one = Demonstrators(drawn.order, shown=0)
    assert official_turns(shown, no_one) == [(shown.request.user_text, shown.request.image_png, None)]


def test_the_official_protocol_fills_every_cell_through_the_same_loop(split, tiny):
    model, processor = tiny
    results, records = evaluate(model, processor, split, EvaluationSettings(protocol="official", demo_people=1))
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
    summary, disagreements = compare_protocols(model, processor, split, EvaluationSettings(demo_people=1))
    mcq = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    cells = [c for name, by_modality in summary.items() if name != "overall" for c in by_modality.values()]
    assert sum(c["n"] for c in cells) == summary["overall"]["n"] == len(mcq)
    disagreeing = sum(round(c["n"] * (1 - c["agreement"])) for c in cells)
    assert disagreeing == len(disagreements)
    bare = sum(c["n"] * c["zero_shot_agreement"] for c in cells) / summary["overall"]["n"]
    assert summary["overall"]["zero_shot_agreement"] == pytest.approx(bare)
    for modality, cell in summary["celebrity"].items():  # asked zero-shot either way, as eval.py asks them
        assert cell["official_zero_shot_acc"] == cell["official_acc"], modality
        assert cell["zero_shot_agreement"] == cell["agreement"], modality
    for d in disagreements:  # exactly one of the two protocols is right
        assert (d["fast"] == d["truth"]) != (d["official"] == d["truth"])
    report = agreement_markdown("tiny", summary, disagreements)
    assert f"## Disagreements ({len(disagreements)})" in report and report.count("\n| ") >= len(cells) + len(disagreements)
