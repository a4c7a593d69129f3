"""Deterministic synthetic MLLMU-Bench: fictitious profiles, public figures and Test-set material.

Same DataConfig (incl. seed) ⇒ the same profiles, images and bytes on disk. Every random draw comes
from one ``random.Random(seed)`` in a fixed order; nothing iterates over a set or a hash.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass

from tqdm import tqdm

from mmunlearn.config import DataConfig
from mmunlearn.data import vocab
from mmunlearn.data.faces import POSE_LADDER, FaceIdentity, distinct_identities, png_bytes, random_pose, render_face
from mmunlearn.data.schema import (
    OPTION_LETTERS,
    Benchmark,
    FinetunePair,
    Modality,
    PoseImage,
    Profile,
    QAItem,
    Task,
)
from mmunlearn.errors import ConfigError

log = logging.getLogger(__name__)
GENERATOR = "mmunlearn.data.synthetic"  # the manifest's mark of data this module wrote
GENERATOR_VERSION = 3


def settings_changed_since(manifest: dict, config: DataConfig) -> list[str]:
    """What ``config`` would generate otherwise than the data whose manifest this is, one "field: then →
    now" per difference; [] when nothing differs or the generator did not write that data (an import)."""
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return []
    changed = []
    if manifest.get("generator_version") != GENERATOR_VERSION:
        changed.append(f"the generator's version: {manifest.get('generator_version')} → {GENERATOR_VERSION}")
    then, now = manifest.get("params") or {}, config.generator_params()
    changed += [f"data.{key}: {then.get(key)!r} → {now.get(key)!r}" for key in sorted(set(then) | set(now))
                if then.get(key) != now.get(key)]
    return changed


@dataclass(frozen=True)
class _Person:
    id: str
    name: str
    kind: str
    identity: FaceIdentity
    biography: dict[str, str]


def _with_article(value: str) -> str:
    return ("an " if value[:1].lower() in "aeiou" else "a ") + value


def _fill(template: str, person: _Person, modality: Modality, value: str = "") -> str:
    subject = vocab.IMAGE_SUBJECT if modality is Modality.IMAGE else person.name
    return template.format(subj=subject, Subj=subject[:1].upper() + subject[1:], value=value,
                           a_value=_with_article(value) if value else "")


def _draw_names(count: int, rng: random.Random) -> list[str]:
    pool = [f"{first} {last}" for first, last in itertools.product(vocab.FIRST_NAMES, vocab.LAST_NAMES)]
    if count > len(pool):
        raise ValueError(f"cannot draw {count} unique names from a pool of {len(pool)}")
    return rng.sample(pool, count)


def _biography(kind: str, name: str, rng: random.Random) -> dict[str, str]:
    last = name.split()[-1]
    return {
        "birthplace": rng.choice(vocab.PLACES),
        "birth_year": rng.choice(vocab.BIRTH_YEARS),
        "residence": rng.choice(vocab.PLACES),
        "occupation": rng.choice(vocab.CELEBRITY_OCCUPATIONS if kind == "celebrity" else vocab.OCCUPATIONS),
        "employer": rng.choice(vocab.EMPLOYERS),
        "education": rng.choice(vocab.UNIVERSITIES),
        "medical_condition": rng.choice(vocab.MEDICAL_CONDITIONS),
        "father": f"{rng.choice(vocab.MASCULINE_NAMES)} {last}",
        "mother": f"{rng.choice(vocab.FEMININE_NAMES)} {rng.choice(vocab.LAST_NAMES)}",
        "hobby": rng.choice(vocab.HOBBIES),
    }


def _value_pool(attribute: str, people: list[_Person]) -> list[str]:
    """Distractor candidates: every value the attribute takes in the benchmark or its word list."""
    listed = {
        "birthplace": vocab.PLACES, "residence": vocab.PLACES, "birth_year": vocab.BIRTH_YEARS,
        "occupation": vocab.OCCUPATIONS + vocab.CELEBRITY_OCCUPATIONS, "employer": vocab.EMPLOYERS,
        "education": vocab.UNIVERSITIES, "medical_condition": vocab.MEDICAL_CONDITIONS, "hobby": vocab.HOBBIES,
    }.get(attribute, ())
    return sorted(set(listed) | {person.biography[attribute] for person in people})


def _multiple_choice(question: str, answer: str, pool: list[str], attribute: str, modality: Modality,
                     rng: random.Random) -> QAItem:
    distractors = rng.sample([value for value in pool if value != answer], len(OPTION_LETTERS) - 1)
    choices = distractors + [answer]
    rng.shuffle(choices)
    options = dict(zip(OPTION_LETTERS, choices))
    correct = OPTION_LETTERS[choices.index(answer)]
    return QAItem(Task.MCQ, modality, question, answer, options, correct, attribute)


def _items(person: _Person, config: DataConfig, pools: dict[str, list[str]], rng: random.Random,
           question_index: int | None) -> list[QAItem]:
    """The person's evaluation questions; ``question_index=None`` draws a paraphrase (Test set)."""
    counts = config.questions
    items: list[QAItem] = []
    for modality in Modality:
        attributes = rng.sample(vocab.QUESTION_ATTRIBUTES, counts.total)
        tasks = [Task.MCQ] * counts.mcq + [Task.GENERATION] * counts.generation + [Task.CLOZE] * counts.cloze
        for task, attribute in zip(tasks, attributes):
            templates = vocab.TEMPLATES[attribute]
            phrasing = templates.questions[question_index] if question_index is not None else rng.choice(templates.questions[2:])
            value = person.biography[attribute]
            question = _fill(phrasing, person, modality)
            if task is Task.MCQ:
                items.append(_multiple_choice(question, value, pools[attribute], attribute, modality, rng))
            elif task is Task.GENERATION:
                items.append(QAItem(task, modality, question, _fill(templates.statement, person, modality, value),
                                    attribute=attribute))
            else:
                items.append(QAItem(task, modality, _fill(templates.cloze, person, modality), value,
                                    attribute=attribute))
    # canonical order (task, then modality), the order the parquet layout stores them in
    return sorted(items, key=lambda item: (list(Task).index(item.task), list(Modality).index(item.modality)))


def _finetune_pairs(person: _Person, phrasings: int) -> list[FinetunePair]:
    """Every attribute asked in both modalities: the vanilla model learns each fact from face and name.

    Public figures are "known" in every wording, the benchmark's and the taught ones (their knowledge
    stands in for pretraining); fictitious people are taught in ``phrasings`` training wordings, none of
    which evaluation uses, so evaluation asks in words never trained on. With one wording the tiny
    default recalled a fact asked otherwise far less often than asked as taught (README).
    """
    def questions(templates: vocab.AttributeTemplates) -> tuple[str, ...]:
        if person.kind == "celebrity":
            return templates.questions + templates.taught
        return templates.finetune_questions(phrasings)

    return [
        FinetunePair(_fill(question, person, modality),
                     _fill(vocab.TEMPLATES[attribute].statement, person, modality, person.biography[attribute]),
                     modality, attribute, person.biography[attribute])
        for attribute in vocab.QUESTION_ATTRIBUTES
        for question in questions(vocab.TEMPLATES[attribute])
        for modality in Modality
    ]


def generate_benchmark(config: DataConfig) -> Benchmark:
    """Draw the whole benchmark from ``config``; deterministic in ``config.seed``."""
    unknown = [name for name in config.test_pose_difficulties if name not in POSE_LADDER]
    if unknown:
        raise ConfigError(f"data.test_pose_difficulties: {unknown} name an imported release's poses; "
                          f"the generator draws the rungs {list(POSE_LADDER)}")
    rng = random.Random(config.seed)
    total = config.num_profiles + config.num_celebrities
    names = _draw_names(total, rng)
    identities = distinct_identities(total, rng)
    people = []
    for index, (name, identity) in enumerate(zip(names, identities)):
        kind = "fictitious" if index < config.num_profiles else "celebrity"
        number = index + 1 if kind == "fictitious" else index - config.num_profiles + 1
        person_id = f"{'P' if kind == 'fictitious' else 'C'}{number:04d}"
        people.append(_Person(person_id, name, kind, identity, _biography(kind, name, rng)))
    pools = {attribute: _value_pool(attribute, people) for attribute in vocab.QUESTION_ATTRIBUTES}

    full, celebrity, test = [], [], []
    for person in tqdm(people, desc="profiles", unit="profile", leave=False):
        image = png_bytes(render_face(person.identity, config.image_size))
        profile = Profile(person.id, person.name, person.kind, image, dict(person.biography),
                          tuple(_items(person, config, pools, rng, question_index=1)),
                          tuple(_finetune_pairs(person, config.finetune_phrasings)))
        (full if person.kind == "fictitious" else celebrity).append(profile)
        if person.kind == "fictitious":
            poses = tuple(
                PoseImage(difficulty, png_bytes(render_face(person.identity, config.image_size,
                                                            random_pose(difficulty, rng), rng.randrange(2**31))))
                for difficulty in config.test_pose_difficulties
            )
            test.append(Profile(person.id, person.name, person.kind, image, dict(person.biography),
                                tuple(_items(person, config, pools, rng, question_index=None)), poses=poses))

    manifest = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "params": config.generator_params(),
        "image_size": config.image_size,
        "questions_per_modality": config.questions.model_dump(),
        "test_pose_difficulties": list(config.test_pose_difficulties),
        "counts": {"full": len(full), "celebrity": len(celebrity), "test": len(test)},
    }
    log.info("generated %d fictitious profiles, %d celebrities", len(full), len(celebrity))
    return Benchmark(tuple(full), tuple(celebrity), tuple(test), manifest)
