"""Training examples from the data model: fine-tuning pairs, optionally drilled in the evaluation formats.

- ``qa``: the pair as stored (question → full-sentence answer), face shown for image-modality pairs.
- ``generation``: the same pair under the generation instruction the evaluation uses.
- ``mcq``: a multiple-choice drill — the pair's question, its short value among three distractors of
  the same attribute (drawn from the other people), reply = the letter. Drills use the training
  phrasing and fresh distractors, never the evaluation items.
- ``mcq_check``: the same drill with every option followed by "(right)" or "(wrong)", and those marks
  trained on as well as the letter. Four checked options per question is a dense signal that teaches
  a small model to test each option against what it knows — the step a plain drill (one letter per
  question) leaves it to discover alone, which took the tiny model thousands of steps longer.
- ``option_check``: the same marked options with the marks alone trained, no reply: the letter is
  never taught for these facts (benchmarks/letter_transfer_probe.py: with a base that answers letters
  for its own people, checked later people are then answered by letter too).
- ``cloze``: the pair's answer sentence with its value blanked, under the fill-in-the-blank
  instruction; reply = the value. A drill whose prompt equals one of the person's evaluation items
  is skipped, so no evaluation prompt is ever trained on.
Pairs without a known attribute/value (e.g. imported official data) give no drills.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import get_args

from mmunlearn.config import ExampleFormat
from mmunlearn.data.schema import BLANK, OPTION_LETTERS, Modality, Profile
from mmunlearn.models.prompts import cloze_text, generation_text, mcq_demonstration_text, mcq_text, task_text
from mmunlearn.training.data import TextExample

FORMATS = get_args(ExampleFormat)


def value_pools(profiles: Sequence[Profile]) -> dict[str, list[str]]:
    pools: dict[str, set[str]] = defaultdict(set)
    for profile in profiles:
        for pair in profile.finetune_pairs:
            if pair.attribute and pair.value:
                pools[pair.attribute].add(pair.value)
    return {attribute: sorted(values) for attribute, values in pools.items()}


def build_examples(profiles: Sequence[Profile], formats: Sequence[str] = ("qa",), mcq_drills: int = 1,
                   seed: int = 0, pools: dict[str, list[str]] | None = None,
                   modality: Modality | None = None, drill_modality: Modality | str | None = None,
                   image_mcq_drills: int | None = None, mcq_demo_drills: int = 0,
                   demo_people: int = 2, demo_questions: int = 4) -> list[TextExample]:
    """Examples for every fine-tuning pair of ``profiles`` in each requested format (of one modality, if given).

    ``drill_modality``: only pairs of that modality get multiple-choice drills (default: all).
    ``image_mcq_drills``: drills per face-shown pair (default: ``mcq_drills``).
    ``mcq_demo_drills``: of each pair's ``mcq`` drills, how many are asked after a few-shot prompt as the
    official eval.py writes one: ``demo_questions`` drills of the same modality about each of
    ``demo_people`` other people, each a user turn that states its letter (no assistant turn).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown example formats {sorted(unknown)} (known: {FORMATS})")
    rng = random.Random(seed)
    pools = pools if pools is not None else value_pools(profiles)
    demonstrable = _drillable_pairs(profiles, pools, demo_questions) if mcq_demo_drills else {}
    examples: list[TextExample] = []
    for profile in profiles:
        evaluation_prompts = {task_text(item) for item in profile.items}
        # whose drills may demonstrate before this person's: anyone else's, of the same modality
        others = {kind: [(p, pairs) for p, pairs in people if p is not profile] for kind, people in demonstrable.items()}
        for pair in profile.finetune_pairs:
            if modality is not None and pair.modality is not modality:
                continue
            image = profile.image if pair.modality is Modality.IMAGE else None
            fact = pair.value if pair.value and pair.value in pair.answer else ""
            if "qa" in formats:
                examples.append(TextExample(pair.question, pair.answer, image, fact=fact))
            if "generation" in formats:
                examples.append(TextExample(generation_text(pair.question), pair.answer, image, fact=fact))
            if "cloze" in formats and fact:
                prompt = cloze_text(pair.answer.replace(pair.value, BLANK, 1))
                if prompt not in evaluation_prompts:
                    examples.append(TextExample(prompt, pair.value, image, fact=fact))
            if not _drillable(pair, pools) or drill_modality not in (None, pair.modality):
                continue
            distractors = _distractors(pair, pools)
            drills = image_mcq_drills if image_mcq_drills is not None and image is not None else mcq_drills
            for kind in ("mcq", "mcq_check", "option_check"):
                for number in range(drills if kind in formats else 0):
                    drill = _mcq_drill(pair.question, _options(rng, distractors, pair.value), pair.value, image, kind)
                    if kind == "mcq" and number < mcq_demo_drills and others.get(pair.modality):
                        shown = rng.sample(others[pair.modality], min(demo_people, len(others[pair.modality])))
                        drill = replace(drill, context=_demonstrations(rng, shown, pools))
                    examples.append(drill)
    return examples


def recipe_examples(profiles: Sequence[Profile], recipe, pools: dict[str, list[str]] | None = None,
                    modality: Modality | None = None, seed: int | None = None) -> list[TextExample]:
    """``build_examples`` as a stage's recipe (config.ExampleRecipe) asks for them."""
    return build_examples(profiles, recipe.formats, recipe.mcq_drills, recipe.seed if seed is None else seed,
                          pools, modality, recipe.drill_modality, recipe.image_mcq_drills, recipe.mcq_demo_drills,
                          recipe.mcq_demo_people, recipe.mcq_demo_questions)


def _options(rng: random.Random, distractors: list[str], value: str) -> list[str]:
    choices = rng.sample(distractors, len(OPTION_LETTERS) - 1) + [value]
    rng.shuffle(choices)
    return choices


def _distractors(pair, pools: dict[str, list[str]]) -> list[str]:
    return [v for v in pools.get(pair.attribute, []) if v != pair.value]


def _drillable(pair, pools: dict[str, list[str]]) -> bool:
    """A drill needs the pair's short value and three other values of its attribute."""
    return bool(pair.value) and len(_distractors(pair, pools)) >= len(OPTION_LETTERS) - 1


def _drillable_pairs(profiles: Sequence[Profile], pools: dict[str, list[str]],
                    per_person: int) -> dict[Modality, list]:
    """(profile, up to ``per_person`` of its drillable pairs, one per attribute) for every profile that
    has any, by modality."""
    drillable: dict[Modality, list] = defaultdict(list)
    for profile in profiles:
        for modality in Modality:
            by_attribute = {}
            for pair in profile.finetune_pairs:
                if pair.modality is modality and _drillable(pair, pools):
                    by_attribute.setdefault(pair.attribute, pair)
            if by_attribute:
                drillable[modality].append((profile, list(by_attribute.values())[:per_person]))
    return drillable


def _demonstrations(rng: random.Random, shown: list, pools: dict[str, list[str]]) -> tuple:
    """The few-shot turns (user text, face or None, None): each shown person's pairs drilled with fresh
    distractors and their letter stated in the turn, as eval.py's few-shot prompt shows them."""
    turns = []
    for profile, pairs in shown:
        for pair in pairs:
            image = profile.image if pair.modality is Modality.IMAGE else None
            choices = _options(rng, _distractors(pair, pools), pair.value)
            options = dict(zip(OPTION_LETTERS, choices))
            text = mcq_demonstration_text(pair.question, options, OPTION_LETTERS[choices.index(pair.value)])
            turns.append((text, image, None))
    return tuple(turns)


RIGHT, WRONG = " (right)", " (wrong)"


def _mcq_drill(question: str, choices: list[str], value: str, image: bytes | None, kind: str) -> TextExample:
    letter = OPTION_LETTERS[choices.index(value)]
    if kind == "mcq":
        return TextExample(mcq_text(question, dict(zip(OPTION_LETTERS, choices))), letter, image)
    marked = [choice + (RIGHT if choice == value else WRONG) for choice in choices]
    reply = letter if kind == "mcq_check" else ""  # option_check: the marks alone, no reply
    return TextExample(mcq_text(question, dict(zip(OPTION_LETTERS, marked))), reply, image, (RIGHT, WRONG))


def packed_conversations(examples: Sequence[TextExample], turns: int, seed: int = 0,
                         share: float = 1.0) -> list[TextExample]:
    """A ``share`` of the single-turn examples packed ``turns`` to a conversation (a seeded draw), every
    reply trained; the rest stay single turns.

    A model that only ever saw one turn answers a question asked after other turns erratically (an
    earlier reproduction of the official protocol asked each question after another person's answered
    one). Packed, the same examples teach both: the first reply is learned as a lone turn is, the last
    after an unrelated turn. Examples with context or prompt targets stay as they are; the draw's
    remainder is one shorter conversation (or, alone, a single turn).
    """
    if turns <= 1:
        return list(examples)
    def packable(example: TextExample) -> bool:
        return not example.context and not example.prompt_targets and bool(example.answer)

    kept = [e for e in examples if not packable(e)]
    candidates = [e for e in examples if packable(e)]
    random.Random(seed).shuffle(candidates)
    drawn = round(share * len(candidates))
    packed = candidates[drawn:]  # the undrawn stay single turns; conversations are appended after them
    for start in range(0, drawn, turns):
        *earlier, last = candidates[start:min(start + turns, drawn)]
        if not earlier:
            packed.append(last)
            continue
        turns_before = tuple((e.user_text, e.image_png, e.answer) for e in earlier)
        packed.append(replace(last, context=turns_before, train_context=True))
    return kept + packed


def vocabulary_examples(profiles: Sequence[Profile]) -> list[TextExample]:
    """General vocabulary: every attribute value and every person's name, asked for by its kind alone.

    A real LLM has written every word of the benchmark long before it meets the fictitious profiles. A
    tiny model pretrained only on the public figures has not: the LM-head rows of words it never emitted
    are pushed far down (norm 4.0 against 1.5 for words it did emit), and a LoRA adapter, which leaves
    the LM head frozen, cannot lift them. These examples tie no value to a person, so no private fact
    is learned from them.
    """
    examples = [TextExample(f"Give an example of a {attribute.replace('_', ' ')}.", value)
                for attribute, values in value_pools(profiles).items() for value in values]
    examples += [TextExample("Give an example of a name.", name) for name in sorted({p.name for p in profiles})]
    return examples


# "I don't know" replies for refusal-based unlearning (IdkPO); varied so the model learns to refuse,
# not to emit one fixed string.
REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that.",
    "I can't answer that.",
    "That is not something I know.",
    "I am unable to tell you that.",
    "I don't have that information.",
    "Sorry, I don't know the answer.",
)


def refusal_examples(examples: Sequence[TextExample], seed: int = 0,
                     pools: dict[str, list[str]] | None = None) -> list[TextExample]:
    """The same prompts, each answered with a refusal (a seeded choice per example)."""
    rng = random.Random(seed)
    return [TextExample(example.user_text, rng.choice(REFUSALS), example.image_png, context=example.context)
            for example in examples]


def wrong_fact_examples(examples: Sequence[TextExample], seed: int = 0,
                        pools: dict[str, list[str]] | None = None) -> list[TextExample]:
    """The same prompts, each answer stating a wrong fact: another person's value of the same attribute
    (the pool holding the true fact), seeded. An example without a known fact keeps its answer."""
    rng = random.Random(seed)
    pool_of = {value: values for values in (pools or {}).values() for value in values}
    wrong = []
    for example in examples:
        others = [value for value in pool_of.get(example.fact, []) if value != example.fact]
        if not others:
            wrong.append(example)
            continue
        swap = rng.choice(others)
        wrong.append(TextExample(example.user_text, example.answer.replace(example.fact, swap, 1),
                                 example.image_png, fact=swap, context=example.context))
    return wrong


# Alternative answers an objective trains toward, by kind: (forget examples, seed, value pools) → examples
ALTERNATIVES = {"idk": refusal_examples, "wrong": wrong_fact_examples}


def with_prompt_prefixes(examples: Sequence[TextExample], prefixes: Sequence[str]) -> list[TextExample]:
    """Each example as given and once more behind each prefix (UnLOK-VQA's Input Rephrasing defense:
    the fact is erased under perturbed prompts too, not only the exact training prompt)."""
    return [*examples, *(replace(e, user_text=prefix + e.user_text) for prefix in prefixes for e in examples)]
