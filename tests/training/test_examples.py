from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from mmunlearn.config import DataConfig
from mmunlearn.data.schema import OPTION_LETTERS, Modality
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.models.prompts import GENERATION_INSTRUCTION, MCQ_INSTRUCTION
from mmunlearn.training.examples import build_examples, value_pools
from tests.conftest import SMALL_DATA


@pytest.fixture(scope="module")
def benchmark():
    return generate_benchmark(DataConfig(**SMALL_DATA))


def test_every_pair_in_every_format(benchmark):
    profiles = benchmark.full[:3]
    pairs = sum(len(p.finetune_pairs) for p in profiles)
    pools = value_pools(benchmark.full)  # three people alone offer too few distractors
    examples = build_examples(profiles, ("qa", "generation", "mcq"), mcq_drills=2, seed=1, pools=pools)
    assert len(examples) == pairs * 4
    drills = [e for e in examples if e.user_text.endswith(MCQ_INSTRUCTION)]
    assert len(drills) == 2 * pairs
    assert sum(e.user_text.endswith(GENERATION_INSTRUCTION) for e in examples) == pairs
    assert all(e.image_png is not None for e in examples if "this person" in e.user_text)
    assert build_examples(profiles[:1], ("mcq",)) == []  # too few distractors: no drill rather than a bad one


def test_drills_put_the_true_value_behind_the_answer_letter(benchmark):
    profiles = benchmark.full
    drills = build_examples(profiles, ("mcq",), mcq_drills=3, seed=2)
    values = {(p.question, p.value) for prof in profiles for p in prof.finetune_pairs}
    letters = Counter()
    for drill in drills:
        question, *option_lines, _ = drill.user_text.split("\n")
        options = dict(line.split(": ", 1) for line in option_lines)
        assert sorted(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
        assert (question, options[drill.answer]) in values
        letters[drill.answer] += 1
    assert min(letters.values()) > 0.15 * len(drills)  # letters are balanced, not a constant


def test_drills_never_reuse_evaluation_items(benchmark):
    drill_texts = {e.user_text for e in build_examples(benchmark.full, ("mcq",), mcq_drills=2)}
    from mmunlearn.models.prompts import task_text

    assert not drill_texts & {task_text(item) for p in benchmark.full for item in p.items}


def test_cloze_drills_blank_the_value_of_the_training_sentence(benchmark):
    from mmunlearn.models.prompts import CLOZE_BLANK, CLOZE_INSTRUCTION, task_text

    profiles = benchmark.full[:4]
    drills = build_examples(profiles, ("cloze",))
    answers = {(p.answer, p.value) for prof in profiles for p in prof.finetune_pairs}
    assert len(drills) > len(profiles)
    for drill in drills:
        statement = drill.user_text.removesuffix("\n" + CLOZE_INSTRUCTION)
        assert drill.answer not in statement
        assert (statement.replace(CLOZE_BLANK, drill.answer), drill.answer) in answers
    shown = {(task_text(i), p.image if i.modality is Modality.IMAGE else None) for p in profiles for i in p.items}
    assert not {(d.user_text, d.image_png) for d in drills} & shown  # no evaluation item is trained on
    # the sentences that coincide with an evaluation statement were the ones skipped
    blanked = {p.answer.replace(p.value, "__", 1) for prof in profiles for p in prof.finetune_pairs if p.value}
    assert any(i.question in blanked for p in profiles for i in p.items)


def test_checked_drills_mark_every_option_and_train_on_the_marks(benchmark):
    from mmunlearn.training.examples import RIGHT, WRONG

    profiles = benchmark.full
    drills = build_examples(profiles, ("mcq_check",), mcq_drills=2, seed=3)
    values = {(p.question, p.value) for prof in profiles for p in prof.finetune_pairs}
    assert drills
    for drill in drills:
        question, *option_lines, _ = drill.user_text.split("\n")
        options = dict(line.split(": ", 1) for line in option_lines)
        right = [letter for letter, text in options.items() if text.endswith(RIGHT)]
        assert right == [drill.answer]  # exactly one option is marked right: the answer letter
        assert all(options[letter].endswith(WRONG) for letter in options if letter != drill.answer)
        assert (question, options[drill.answer].removesuffix(RIGHT)) in values
        assert drill.prompt_targets == (RIGHT, WRONG)
    plain = build_examples(profiles, ("mcq",), mcq_drills=2, seed=3)
    assert all(not d.prompt_targets and RIGHT not in d.user_text for d in plain)
    # option_check: the same marked options (same draws for the same seed), nothing to reply
    marks_only = build_examples(profiles, ("option_check",), mcq_drills=2, seed=3)
    assert [d.user_text for d in marks_only] == [d.user_text for d in drills]
    assert all(d.answer == "" and d.prompt_targets == (RIGHT, WRONG) for d in marks_only)


def test_drill_modality_limits_drills_but_not_facts(benchmark):
    profiles = benchmark.full
    examples = build_examples(profiles, ("qa", "mcq", "mcq_check"), mcq_drills=1, seed=4, drill_modality="text")
    drills = [e for e in examples if e.user_text.endswith(MCQ_INSTRUCTION)]
    facts = [e for e in examples if not e.user_text.endswith(MCQ_INSTRUCTION)]
    assert drills and all(d.image_png is None for d in drills)  # name-based questions only
    assert sum(f.image_png is not None for f in facts) == sum(
        p.modality is Modality.IMAGE for prof in profiles for p in prof.finetune_pairs)  # every face fact kept
    text_drillable = len([d for d in build_examples(profiles, ("mcq",), 1, 4) if d.image_png is None])
    assert len(drills) == 2 * text_drillable


def test_image_mcq_drills_sets_the_face_pairs_drill_count(benchmark):
    profiles = benchmark.full
    pools = value_pools(profiles)
    uniform = build_examples(profiles, ("mcq",), mcq_drills=2, seed=5, pools=pools)
    face_heavy = build_examples(profiles, ("mcq",), mcq_drills=1, seed=5, pools=pools, image_mcq_drills=3)
    drillable = Counter(d.image_png is not None for d in uniform)
    assert drillable[True] and drillable[False]
    counts = Counter(d.image_png is not None for d in face_heavy)
    assert counts[True] == 3 * drillable[True] // 2 and counts[False] == drillable[False] // 2
    no_faces = build_examples(profiles, ("generation", "mcq"), mcq_drills=2, seed=5, pools=pools, image_mcq_drills=0)
    assert not [e for e in no_faces if e.image_png is not None and e.user_text.endswith(MCQ_INSTRUCTION)]
    assert any(e.image_png is not None for e in no_faces)  # the face facts themselves are still taught


def test_demo_drills_follow_a_few_shot_prompt_written_as_eval_py_writes_it(benchmark):
    profiles = benchmark.full
    pools = value_pools(profiles)
    plain = build_examples(profiles, ("mcq",), mcq_drills=3, seed=6, pools=pools)
    demoed = build_examples(profiles, ("mcq",), mcq_drills=3, seed=6, pools=pools, mcq_demo_drills=1,
                            demo_people=2, demo_questions=3)
    assert len(demoed) == len(plain) and not any(e.context for e in plain)
    with_demo = [e for e in demoed if e.context]
    assert len(with_demo) == len(demoed) // 3  # one of each pair's three drills
    owners = defaultdict(set)  # (question, value) → who was taught that answer
    for profile in profiles:
        for pair in profile.finetune_pairs:
            owners[(pair.question, pair.value)].add(profile.name)
    images = {profile.name: profile.image for profile in profiles}

    def answered_by(question, option_lines, letter):  # the people whose own value sits behind ``letter``
        return owners[(question, dict(line.split(": ", 1) for line in option_lines)[letter])]

    for drill in with_demo:
        question, *options, _ = drill.user_text.split("\n")
        asked_about = answered_by(question, options, drill.answer)
        shown_people = []
        for text, image, reply in drill.context:
            assert reply is None  # a user turn stating its answer, never an assistant turn
            head, *options, answer_line = text.split("\n")
            assert head.startswith("Question: ") and answer_line.startswith("Correct Answer: ")
            people = answered_by(head.removeprefix("Question: "), options, answer_line.removeprefix("Correct Answer: "))
            assert people  # the stated letter is right
            if image is None:  # a name-based question names its person: the demonstration is someone else's
                assert not people & asked_about
            assert (image is None) == (drill.image_png is None)
            assert image is None or any(images[name] == image for name in people)
            shown_people.append(frozenset(people) if image is None else image)
        runs = [key for i, key in enumerate(shown_people) if i == 0 or key != shown_people[i - 1]]
        assert len(runs) == 2 and all(shown_people.count(key) <= 3 for key in runs)  # 2 people, ≤ 3 questions each
    assert all(d.user_text.endswith(MCQ_INSTRUCTION) for d in with_demo)


def test_vocabulary_lets_the_base_say_every_word_a_fictitious_answer_needs(benchmark):
    """Every token of a fictitious answer is a target somewhere in the base's celebrity + vocabulary examples."""
    from mmunlearn.models.tiny import TinyArchitecture, train_tokenizer, tokenizer_corpus
    from mmunlearn.training.examples import vocabulary_examples

    profiles = benchmark.full + benchmark.celebrity
    tokenizer = train_tokenizer(tokenizer_corpus(profiles), TinyArchitecture().vocab_size)
    vocabulary = vocabulary_examples(profiles)

    def answer_tokens(answers):
        return {t for answer in answers for t in tokenizer(" " + answer, add_special_tokens=False)["input_ids"]}

    celebrity_only = answer_tokens(e.answer for e in build_examples(benchmark.celebrity, ("qa", "cloze")))
    with_vocabulary = celebrity_only | answer_tokens(e.answer for e in vocabulary)
    fictitious = answer_tokens(pair.answer for p in benchmark.full for pair in p.finetune_pairs)
    assert fictitious - celebrity_only  # without it the base never emits some of these words
    assert fictitious <= with_vocabulary
    people = {p.name for p in profiles}
    assert all(e.answer in people or not any(name in e.answer for name in people) for e in vocabulary)
    assert not any(p.name in e.user_text for p in profiles for e in vocabulary)  # no one's fact


def test_celebrity_rehearsal_adds_the_public_figures_in_the_same_formats(benchmark):
    from types import SimpleNamespace

    from mmunlearn.config import FinetuneConfig
    from mmunlearn.training.stages import finetune_examples

    split = SimpleNamespace(forget=benchmark.full[:2], retain=benchmark.full[2:], celebrity=benchmark.celebrity)
    people = split.forget + split.retain
    config = FinetuneConfig(formats=("generation", "mcq"), mcq_drills=2)
    plain = finetune_examples(config, people, split)
    rehearsed = finetune_examples(config.model_copy(update={"celebrity_rehearsal": 1.0}), people, split)
    assert rehearsed[:len(plain)] == plain  # the fictitious examples are unchanged
    extra = rehearsed[len(plain):]
    part = finetune_examples(config.model_copy(update={"celebrity_rehearsal": 0.25}), people, split)[len(plain):]
    assert len(part) == round(len(extra) / 4) and all(e in extra for e in part)
    celebrity_questions = {pair.question for profile in benchmark.celebrity for pair in profile.finetune_pairs}
    assert extra and all(any(q in e.user_text for q in celebrity_questions) for e in extra)
    # a rehearsed drill offers other public figures' values, never a fictitious person's
    celebrity_values = {v for values in value_pools(benchmark.celebrity).values() for v in values}
    drills = [e for e in extra if e.answer in OPTION_LETTERS]
    assert drills
    for drill in drills:
        labels = {f"{letter}:" for letter in OPTION_LETTERS}
        options = [line.split(": ", 1)[1] for line in drill.user_text.splitlines() if line[:2] in labels]
        assert len(options) == len(OPTION_LETTERS) and set(options) <= celebrity_values, options


def test_packed_conversations_keep_every_example_once_and_train_every_reply(benchmark):
    from mmunlearn.training.data import TextExample
    from mmunlearn.training.examples import packed_conversations

    examples = build_examples(benchmark.full, ("generation", "mcq", "mcq_check"), mcq_drills=1)
    demo = TextExample("Q?", "A", context=(("Earlier?", None, "B"),))
    examples.append(demo)
    assert packed_conversations(examples, 1) == examples
    packed = packed_conversations(examples, 2, seed=3)
    assert packed == packed_conversations(examples, 2, seed=3) != packed_conversations(examples, 2, seed=4)
    # drills with prompt targets and examples with their own context are kept as they are
    kept = [e for e in examples if e.prompt_targets or e.context]
    assert kept and all(e in packed for e in kept)
    conversations = [e for e in packed if e.train_context]
    assert conversations and all(len(e.context) == 1 for e in conversations)
    asked = Counter((turn[0], turn[1], turn[2]) for e in conversations for turn in e.context)
    asked.update((e.user_text, e.image_png, e.answer) for e in packed if e not in kept)
    packable = Counter((e.user_text, e.image_png, e.answer) for e in examples if e not in kept)
    assert asked == packable  # every packable example once, as a reply turn or as the last turn
    assert len(packed) == len(kept) + (sum(packable.values()) + 1) // 2


def test_packed_conversations_pack_only_their_share(benchmark):
    from mmunlearn.training.examples import packed_conversations

    examples = build_examples(benchmark.full, ("generation", "cloze"), mcq_drills=0)
    assert packed_conversations(examples, 2, seed=3, share=1.0) == packed_conversations(examples, 2, seed=3)
    half = packed_conversations(examples, 2, seed=3, share=0.5)
    conversations = [e for e in half if e.train_context]
    singles = [e for e in half if not e.context]
    drawn = round(0.5 * len(examples))
    assert len(conversations) == drawn // 2 and len(singles) == len(examples) - 2 * (drawn // 2)
    replies = Counter(turn[2] for e in conversations for turn in e.context)
    replies.update(e.answer for e in half)
    assert replies == Counter(e.answer for e in examples)  # still every example once
    none = packed_conversations(examples, 2, seed=3, share=0.0)
    assert not any(e.context for e in none) and Counter(none) == Counter(examples)
