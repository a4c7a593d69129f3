"""Why do the `fast` and `official` protocols disagree? The official protocol with and without its demo.

    python benchmarks/protocol_demo_probe.py --params params.yaml --model vanilla

On every multiple-choice question of the study, per modality: `fast`'s accuracy, the official
protocol's accuracy as it runs (one few-shot demonstration from the retain set before the question),
and the same greedy generation with the demonstration left out. It also counts how often the official
reply repeats the demonstration's own letter, against how often that letter is simply right.

Measured on the 8-drill vanilla (2 cores, 1,120 questions): without the demonstration the official
reply's letter is `fast`'s on every question, by face and by name; with it, the official protocol agrees
with `fast` on 0.36 / 0.53 (face / name) and is right 0.36 / 0.54 against 0.78 / 0.86. It repeats the
demonstration's letter 0.32 / 0.26 of the time, where that letter is right 0.23 / 0.26: a little
copying, mostly noise. The tiny model never saw a two-turn prompt; the demonstration, not the letter
reading, is what the protocols disagree on.
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from mmunlearn.config import load_params
from mmunlearn.data.schema import Task
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.official import (demonstrations_for, draw_demonstrations, first_letter,
                                           official_replies)
from mmunlearn.evaluation.run import fast_outputs, questions_of
from mmunlearn.evaluation.stage import load_for_evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="vanilla")
    args = parser.parse_args()
    params = load_params(args.params)
    model, processor, settings = load_for_evaluation(params, args.model)
    split = load_split(params.paths.splits)
    questions = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    demos = draw_demonstrations(list(split.retain), settings.demo_seed)
    fast = [predicted_letter(o) for o in fast_outputs(model, processor, questions, settings)]
    with_demo = [first_letter(r) for r in official_replies(model, processor, questions, demos, settings.system_prompt)]
    without = [first_letter(r) for r in official_replies(model, processor, questions, {}, settings.system_prompt)]
    counts: dict[str, Counter] = defaultdict(Counter)
    for index, (question, fast_letter, official, bare) in enumerate(zip(questions, fast, with_demo, without)):
        (_, demo), = demonstrations_for(question.item, demos, index)  # the one official_replies showed
        demo_letter = demo.correct
        right = question.item.correct
        cell = counts[str(question.item.modality)]
        cell.update({"questions": 1, "fast right": fast_letter == right, "official right": official == right,
                     "without demo right": bare == right, "official = fast": official == fast_letter,
                     "without demo = fast": bare == fast_letter, "official = demo's letter": official == demo_letter,
                     "demo's letter right": demo_letter == right})
    for modality, cell in sorted(counts.items()):
        n = cell.pop("questions")
        print(f"{modality} ({n} questions): " + ", ".join(f"{key} {value / n:.3f}" for key, value in cell.items()))


if __name__ == "__main__":
    main()
