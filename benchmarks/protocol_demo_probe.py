"""Why do the `fast` and `official` protocols disagree? The official protocol with and without its few-shot prompt.

    python benchmarks/protocol_demo_probe.py --params params.yaml --model vanilla

On every multiple-choice question of the study, per modality: `fast`'s accuracy, the official
protocol's accuracy as it runs (eval.py's few-shot prompt: every question of the same modality about
`evaluation.demo_people` retain-set people, each stating its answer), and the same greedy generation
with the few-shot prompt left out. It also counts how often the official reply repeats the letter of
the last demonstration shown, against how often that letter is simply right.

Measured under the earlier reproduction (one demonstration, written as an answered assistant turn), on
the 8-drill vanilla (2 cores, 1,120 questions): without the demonstration the official reply's letter
was `fast`'s on every question; with it, the protocols agreed on 0.36 / 0.53 (face / name), and the
reply repeated the demonstration's letter 0.32 / 0.26 of the time, where that letter was right 0.23 /
0.26: a little copying, mostly noise.
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from mmunlearn.config import load_params
from mmunlearn.data.schema import Task
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.official import Demonstrators, first_letter, official_replies
from mmunlearn.evaluation.run import demonstrators_of, fast_outputs, questions_of
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
    demonstrators = demonstrators_of(split, settings)
    fast = [predicted_letter(o) for o in fast_outputs(model, processor, questions, settings)]
    replies = official_replies(model, processor, questions, demonstrators, settings.system_prompt)
    with_demo = [first_letter(r) for r in replies]
    unshown = Demonstrators(demonstrators.order, shown=0)
    without = [first_letter(r) for r in official_replies(model, processor, questions, unshown, settings.system_prompt)]
    counts: dict[str, Counter] = defaultdict(Counter)
    for question, fast_letter, official, bare in zip(questions, fast, with_demo, without):
        shown = demonstrators.for_question(question.set_name, question.profile.id, question.item)
        if not shown:  # asked zero-shot, as eval.py asks the public figures
            continue
        demo_letter = shown[-1][1].correct
        right = question.item.correct
        cell = counts[str(question.item.modality)]
        cell.update({"questions": 1, "fast right": fast_letter == right, "official right": official == right,
                     "without demo right": bare == right, "official = fast": official == fast_letter,
                     "without demo = fast": bare == fast_letter,
                     "official = last demo's letter": official == demo_letter,
                     "last demo's letter right": demo_letter == right})
    for modality, cell in sorted(counts.items()):
        n = cell.pop("questions")
        print(f"{modality} ({n} questions): " + ", ".join(f"{key} {value / n:.3f}" for key, value in cell.items()))


if __name__ == "__main__":
    main()
