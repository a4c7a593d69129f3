"""Where does a study model's letter multiple choice break? Three readings on retain profiles.

    python benchmarks/letter_diagnostics.py --params params.yaml --model vanilla

Per modality, on fresh drills of the retain people's fine-tuning pairs (training phrasing, fresh
distractors, never the evaluation items):

- ``letter``: plain four-option question, the highest-scoring letter is the right one (chance 0.25).
- ``check``: can the model tell the right option from the wrong ones? Each option in turn is put first
  and marked, and the log-odds of "(right)" over "(wrong)" at its mark are compared across the four.
  The option is first so that no earlier mark can give the answer away (with every option marked, the
  last marks follow from the earlier ones). Chance 0.25.
- ``marked``: every option marked right/wrong in the prompt; does the model answer the marked letter?
  (Reading marks, no knowledge needed.)

A model that checks well but answers letters at chance knows its facts and can compare them, but does
not route the comparison to a letter.
"""
from __future__ import annotations

import argparse
import random

import torch

from mmunlearn.config import load_params
from mmunlearn.data.schema import OPTION_LETTERS, Modality
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.engine import Request, score_options
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.models.prompts import mcq_text
from mmunlearn.models.study import load_study_model
from mmunlearn.training.data import TextExample, collate, encode_example, model_inputs, on_device
from mmunlearn.training.examples import RIGHT, WRONG, build_examples, value_pools


def mark_token_ids(tokenizer) -> tuple[int, int]:
    """The first token where " (right)" and " (wrong)" differ, for each."""
    right = tokenizer(RIGHT, add_special_tokens=False)["input_ids"]
    wrong = tokenizer(WRONG, add_special_tokens=False)["input_ids"]
    k = next(i for i, (a, b) in enumerate(zip(right, wrong)) if a != b)
    return right[k], wrong[k]


@torch.no_grad()
def first_option_log_odds(model, processor, question: str, values: list[str], image: bytes | None,
                          right_value: str) -> list[float]:
    """For each value, put first and marked: log p(right) - log p(wrong) at its mark."""
    right_id, wrong_id = mark_token_ids(processor.tokenizer)
    rows = []
    for value in values:
        order = [value] + [v for v in values if v != value]
        mark = RIGHT if value == right_value else WRONG
        options = dict(zip(OPTION_LETTERS, [value + mark] + order[1:]))
        rows.append(encode_example(processor, TextExample(mcq_text(question, options), "", image, (mark,))))
    batch = collate(rows, processor.tokenizer.pad_token_id)
    labels = batch.pop("labels")[:, 1:]
    inputs = on_device(model_inputs(model, batch), next(model.parameters()).device)  # the study's device rule
    logprobs = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1).cpu()
    at_mark = (labels == right_id) | (labels == wrong_id)
    odds = []
    for row in range(len(values)):
        position = at_mark[row].nonzero()[0, 0]
        odds.append((logprobs[row, position, right_id] - logprobs[row, position, wrong_id]).item())
    return odds


def split_drill(drill: TextExample) -> tuple[str, list[str]]:
    question, *lines, _instruction = drill.user_text.split("\n")
    return question, [line.split(": ", 1)[1].removesuffix(RIGHT).removesuffix(WRONG) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="vanilla", help="vanilla, retain or an unlearned <method>-<modality>")
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--questions", type=int, default=60, help="per modality")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    params = load_params(args.params)
    split = load_split(params.paths.splits)
    loaded = load_study_model(params, args.model)
    model, processor = loaded.model, loaded.processor
    model.eval()
    people = split.retain[:args.people]
    drills = build_examples(people, ("mcq_check",), 1, args.seed, value_pools(split.forget + split.retain))
    random.Random(args.seed).shuffle(drills)
    for modality in Modality:
        chosen = [d for d in drills if (d.image_png is not None) == (modality is Modality.IMAGE)][:args.questions]
        plain = []
        checked = 0
        for drill in chosen:
            question, values = split_drill(drill)
            right_value = values[OPTION_LETTERS.index(drill.answer)]
            plain.append(Request(mcq_text(question, dict(zip(OPTION_LETTERS, values))), drill.image_png))
            odds = first_option_log_odds(model, processor, question, values, drill.image_png, right_value)
            checked += values[max(range(len(values)), key=odds.__getitem__)] == right_value
        letters = score_options(model, processor, plain)
        marked = score_options(model, processor, [Request(d.user_text, d.image_png) for d in chosen])
        n = len(chosen)
        print(f"{modality.value}: letter {sum(predicted_letter(s) == d.answer for s, d in zip(letters, chosen)) / n:.3f}"
              f"  check {checked / n:.3f}"
              f"  marked {sum(predicted_letter(s) == d.answer for s, d in zip(marked, chosen)) / n:.3f}  (n={n})")


if __name__ == "__main__":
    main()
