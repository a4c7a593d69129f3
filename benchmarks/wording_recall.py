"""Fact recall by question wording: does a model answer a fact asked in words it was not taught?

For each profile of a split and each attribute of the synthetic data, asks every wording the
vocabulary holds — the taught ones (fine-tuning), the evaluation one and the Test-set paraphrases —
by name and with the face, under the generation instruction, greedy. A reply recalls the fact when it
contains the true value (``cloze_match``, the fill-in-the-blank rule). Prints a row per modality ×
wording; the README's table of vanilla recipes was measured with it.

    .venv/bin/python benchmarks/wording_recall.py --model vanilla --split retain --profiles 30
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from mmunlearn.config import load_params
from mmunlearn.data import vocab
from mmunlearn.data.schema import Modality
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.engine import Request, generate_replies
from mmunlearn.evaluation.metrics import cloze_match
from mmunlearn.models.prompts import generation_text
from mmunlearn.models.study import load_study_model


def wordings(templates: vocab.AttributeTemplates) -> list[tuple[str, str]]:
    """(label, question template) for every wording of one attribute, taught ones first."""
    taught = [(f"taught {i + 1}", q) for i, q in enumerate(templates.finetune_questions(vocab.FINETUNE_PHRASINGS))]
    tests = [(f"test {i + 1}", q) for i, q in enumerate(templates.questions[2:])]
    return taught + [("evaluation", templates.questions[1])] + tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vanilla", help="base, vanilla, retain or an unlearned <method>-<modality>")
    parser.add_argument("--split", default="retain", choices=["forget", "retain", "celebrity"])
    parser.add_argument("--profiles", type=int, default=30, help="the split's first N profiles")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = load_params(args.params)
    profiles = getattr(load_split(params.paths.splits), args.split)[:args.profiles]
    loaded = load_study_model(params, None if args.model == "base" else args.model)
    requests, keys = [], []
    for profile in profiles:
        for attribute, templates in vocab.TEMPLATES.items():
            if attribute not in profile.biography:
                continue
            for label, template in wordings(templates):
                for modality in Modality:
                    shown = modality is Modality.IMAGE
                    question = template.format(subj=vocab.IMAGE_SUBJECT if shown else profile.name)
                    requests.append(Request(generation_text(question), profile.image if shown else None))
                    keys.append((modality.value, label, profile.biography[attribute]))
    replies = generate_replies(loaded.model, loaded.processor, requests, params.evaluation.batch_size)
    recalled: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for (modality, label, value), reply in zip(keys, replies):
        recalled[(modality, label)].append(cloze_match(value, reply))
    print(f"{args.model} on {len(profiles)} {args.split} profiles: share of facts recalled")
    labels = [label for label, _ in wordings(next(iter(vocab.TEMPLATES.values())))]
    for modality in Modality:
        for label in labels:
            hits = recalled.get((modality.value, label))
            if hits:
                print(f"  {modality.value:5s}  {label:10s}  {sum(hits) / len(hits):.3f}  ({len(hits)} questions)")


if __name__ == "__main__":
    main()
