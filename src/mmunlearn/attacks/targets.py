"""What the attacks try to extract: each forget profile's trained facts, with their rephrasings and poses.

A target is one fact of a forget profile (an attribute asked with the face or by name), taken from its
first fine-tuning pair (a fact taught in several wordings is attacked once): the question the model was
trained on, the trained answer sentence ("This person was born in Turku, Finland.") and the fact inside
it (``value``, "Turku, Finland"). Black-box attacks ask the question again, reworded and with other
pictures of the face; white-box attacks read the model's hidden states where the fact would be said next.

Rephrasings come from the data, not from a template list of ours: every Test-set question about the
same attribute in the same modality is a paraphrase (the person's name replaced, so another profile's
wording serves too), minus the training wording itself. Poses are the Test set's re-posed faces of
the person, by difficulty rung (easy → hard).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from mmunlearn.data.schema import Modality, Profile, Task
from mmunlearn.data.splits import Split

NAME_SLOT = "{name}"


@dataclass(frozen=True)
class AttackTarget:
    profile_id: str
    attribute: str
    modality: Modality
    question: str  # the training question
    answer: str  # the trained answer sentence, which states the fact
    value: str  # the fact the attack tries to extract
    image_png: bytes | None  # the training face, when the question shows it
    rephrasings: tuple[str, ...] = ()  # other wordings of the question, best first
    poses: dict[str, bytes] = field(default_factory=dict)  # re-posed faces by difficulty rung


def _templated(question: str, name: str) -> str:
    return question.replace(name, NAME_SLOT) if name else question


def _paraphrase_templates(test_profiles: tuple[Profile, ...]) -> dict[tuple[str, Modality], list[str]]:
    """Every Test-set question wording per (attribute, modality), the asked person's name as ``{name}``.

    Fill-in-the-blank statements are left out: an attack asks questions. Sorted, so the choice of
    the first ``n`` is deterministic and independent of profile order.
    """
    wordings: dict[tuple[str, Modality], set[str]] = defaultdict(set)
    for profile in test_profiles:
        for item in profile.items:
            if item.task is Task.CLOZE or not item.attribute:
                continue
            wordings[(item.attribute, item.modality)].add(_templated(item.question, profile.name))
    return {key: sorted(texts) for key, texts in wordings.items()}


def forget_targets(split: Split, rephrasings: int) -> list[AttackTarget]:
    """A target per forget-profile fact stated in a trained answer, asked in its first training wording."""
    templates = _paraphrase_templates(split.test)
    test_rows = {profile.id: profile for profile in split.test}
    targets = []
    for profile in split.forget:
        row = test_rows.get(profile.id)
        poses = {pose.difficulty: pose.png for pose in row.poses} if row else {}
        facts = set()
        for pair in profile.finetune_pairs:
            if not pair.value or pair.value not in pair.answer or (pair.attribute, pair.modality) in facts:
                continue  # nothing to extract, no place in the answer where it is said, or already a target
            facts.add((pair.attribute, pair.modality))
            trained = _templated(pair.question, profile.name)
            others = [t for t in templates.get((pair.attribute, pair.modality), []) if t != trained]
            targets.append(AttackTarget(
                profile_id=profile.id, attribute=pair.attribute, modality=pair.modality,
                question=pair.question, answer=pair.answer,
                value=pair.value, image_png=profile.image if pair.modality is Modality.IMAGE else None,
                rephrasings=tuple(t.replace(NAME_SLOT, profile.name) for t in others[:rephrasings]),
                poses=poses if pair.modality is Modality.IMAGE else {},
            ))
    return targets
